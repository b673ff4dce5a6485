"""The truth an attack is scored against: which channels are counterfeit, and the original model.

It comes from the key (``--key`` and its passphrase) or a PassResult's secret, only to score;
the attacks themselves never see it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx

from ...errors import OnnxlockError
from ...fileio import sha256_bytes
from ...graph.channels import ParamEdit
from ...graph.io import parse_model
from ...key import open_key
from ...passes import restore, secret_layers
from ...passes.confusion import WidenChannelsPass
from .channels import Channel, widenable_groups


@dataclass(frozen=True)
class Truth:
    """The counterfeit channels (named as in the locked file) and the original model."""

    counterfeits: frozenset[Channel]
    original: onnx.ModelProto

    def widened(self) -> dict[str, int]:
        """Group -> channels added: what the told-groups search is told."""
        return dict(Counter(c.group for c in sorted(self.counterfeits)))


def truth_from_secret(locked: onnx.ModelProto, secret: dict) -> Truth:
    """The truth from a plain or stacked secret (one layer of confusion channels)."""
    layers = [layer for layer in secret_layers(secret) if layer.get("method") == WidenChannelsPass.method]
    if len(layers) != 1:
        raise OnnxlockError(f"scoring needs exactly one layer of confusion channels in the key, found {len(layers)}")
    groups = widenable_groups(locked)
    counterfeits = set()
    for widened in layers[0]["groups"]:
        edits = {(edit[1], edit[2]) for edit in widened["edits"] if edit[0] == "p"}
        group = next((g for g in groups if edits == param_edits(g)), None)
        if group is None:
            raise OnnxlockError("the key names a group the locked model does not have")
        counterfeits.update(Channel(group.name, int(p)) for p in widened["positions"])
    return Truth(frozenset(counterfeits), restore(locked, secret))


def param_edits(group) -> set[tuple[str, int]]:
    """(tensor, axis) of every parameter the group widens: what a key's group names."""
    return {(e.constant.name, e.axis % len(e.constant.shape)) for e in group.edits if isinstance(e, ParamEdit)}


def truth_from_key(locked: bytes, key: bytes, passphrase: str) -> Truth:
    """The truth from the locked file's key, opened in memory."""
    secret = open_key(key, passphrase=passphrase, model_sha256=sha256_bytes(locked))
    return truth_from_secret(parse_model(locked, source="locked model"), secret)
