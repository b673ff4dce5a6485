"""The inverse of every pass, by method name: all a loader needs, without the lock-time machinery
(graph surgery, calibration, progress bars) the passes themselves import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..graph.patch import narrow
from .flip_signs import FlipSignsPass, MaskPass, restore_mask, restore_signs
from .stack import restore_secret
from .weight_bits import METHOD as ADVPARAMS, restore_weights

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

CONFUSION = "confusion"


def restore_channels(model: onnx.ModelProto, secret: dict, *, in_place: bool = False) -> onnx.ModelProto:
    """The inverse of confusion channels: delete the channels named by ``secret``."""
    return narrow(model, secret.get("groups"), in_place=in_place)


RESTORERS = {CONFUSION: restore_channels, FlipSignsPass.method: restore_signs, MaskPass.method: restore_mask,
             ADVPARAMS: restore_weights}


def restore(model: onnx.ModelProto, secret: dict, *, in_place: bool = False) -> onnx.ModelProto:
    """Undo a plain or stacked secret on ``model`` with the registered restorers."""
    return restore_secret(model, secret, RESTORERS, in_place=in_place)
