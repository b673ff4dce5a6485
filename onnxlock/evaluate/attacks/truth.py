"""The truth an attack is scored against: which channels are counterfeit, which weights AdvParams
changed, and the original model.

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
from ...passes.advparams import PerturbWeightsPass
from ...passes.confusion import WidenChannelsPass
from .channels import Channel, widenable_groups


@dataclass(frozen=True)
class Truth:
    """The counterfeit channels and the changed weights (tensor, flat index), both named as in the
    locked file (empty for a lock without them), and the original model."""

    counterfeits: frozenset[Channel]
    original: onnx.ModelProto
    changed_weights: frozenset[tuple[str, int]] = frozenset()

    def widened(self) -> dict[str, int]:
        """Group -> channels added: what the told-groups search is told."""
        return dict(Counter(c.group for c in sorted(self.counterfeits)))


def truth_from_secret(locked: onnx.ModelProto, secret: dict) -> Truth:
    """The truth from a plain or stacked secret (at most one layer of confusion channels and one
    of changed weights; a lock of sign flips alone has neither, only the original)."""
    layers = secret_layers(secret)
    confusion = [layer for layer in layers if layer.get("method") == WidenChannelsPass.method]
    advparams = [layer for layer in layers if layer.get("method") == PerturbWeightsPass.method]
    if len(confusion) > 1 or len(advparams) > 1:
        raise OnnxlockError("scoring needs at most one layer of confusion channels and one of changed weights in "
                            f"the key, found {len(confusion)} and {len(advparams)}")
    counterfeits = counterfeit_channels(locked, confusion[0]) if confusion else set()
    # the weights' flat indices are into the locked file (a stacked lock rebases them)
    changed = {(name, int(index)) for name, index, _ in advparams[0]["weights"]} if advparams else set()
    return Truth(frozenset(counterfeits), restore(locked, secret), frozenset(changed))


def counterfeit_channels(locked: onnx.ModelProto, layer: dict) -> set[Channel]:
    """The channels a confusion layer of the key added, named as in ``locked``."""
    groups = widenable_groups(locked)
    counterfeits = set()
    for widened in layer["groups"]:
        edits = {(edit[1], edit[2]) for edit in widened["edits"] if edit[0] == "p"}
        group = next((g for g in groups if edits == param_edits(g)), None)
        if group is None:
            raise OnnxlockError("the key names a group the locked model does not have")
        counterfeits.update(Channel(group.name, int(p)) for p in widened["positions"])
    return counterfeits


def param_edits(group) -> set[tuple[str, int]]:
    """(tensor, axis) of every parameter the group widens: what a key's group names."""
    return {(e.constant.name, e.axis % len(e.constant.shape)) for e in group.edits if isinstance(e, ParamEdit)}


def truth_from_key(locked: bytes, key: bytes, passphrase: str) -> Truth:
    """The truth from the locked file's key, opened in memory."""
    secret = open_key(key, passphrase=passphrase, model_sha256=sha256_bytes(locked))
    return truth_from_secret(parse_model(locked, source="locked model"), secret)
