"""Protection methods, one per module; each is a Pass with an inverse ``restore``. The passes
are imported on first use; ``restore`` and the secret helpers are light (see ``restorers``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .base import PassResult
from .restorers import RESTORERS, restore, restore_channels, restore_weights
from .flip_signs import FlipSignsPass, MaskPass, restore_mask, restore_signs
from .stack import secret_layers, stack_secrets

if TYPE_CHECKING:  # the lazy names, for type checkers and editors
    from .advparams import PerturbWeightsPass
    from .confusion import WidenChannelsPass

__getattr__, __dir__ = lazy_exports(__name__, {"WidenChannelsPass": ".confusion", "PerturbWeightsPass": ".advparams"})

__all__ = ["PassResult", "WidenChannelsPass", "restore_channels", "FlipSignsPass", "restore_signs", "MaskPass", "restore_mask",
           "PerturbWeightsPass", "restore_weights", "RESTORERS", "restore",
           "secret_layers", "stack_secrets"]
