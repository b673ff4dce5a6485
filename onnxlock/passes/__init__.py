"""Protection methods, one per module; each is a Pass with an inverse ``restore``."""

from .base import PassResult
from .confusion import WidenChannelsPass, restore_channels

RESTORERS = {WidenChannelsPass.method: restore_channels}

__all__ = ["PassResult", "WidenChannelsPass", "restore_channels", "RESTORERS"]
