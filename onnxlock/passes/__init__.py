"""Protection methods, one per module; each is a Pass with an inverse ``restore``."""

from __future__ import annotations

import onnx

from .advparams import PerturbWeightsPass, restore_weights
from .base import PassResult
from .confusion import WidenChannelsPass, restore_channels
from .flip_signs import FlipSignsPass, MaskPass, restore_mask, restore_signs
from .stack import secret_layers, stack_secrets
from .stack import restore_secret as _restore_secret

RESTORERS = {WidenChannelsPass.method: restore_channels, FlipSignsPass.method: restore_signs,
             MaskPass.method: restore_mask,
             PerturbWeightsPass.method: restore_weights}


def restore(model: onnx.ModelProto, secret: dict, *, in_place: bool = False) -> onnx.ModelProto:
    """Undo a plain or stacked secret on ``model`` with the registered restorers."""
    return _restore_secret(model, secret, RESTORERS, in_place=in_place)


__all__ = ["PassResult", "WidenChannelsPass", "restore_channels", "FlipSignsPass", "restore_signs", "MaskPass", "restore_mask",
           "PerturbWeightsPass", "restore_weights", "RESTORERS", "restore",
           "secret_layers", "stack_secrets"]
