"""What every protection pass returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx


@dataclass
class PassResult:
    """The locked model, the small secret that restores it, and a report of what was done."""

    model: onnx.ModelProto
    secret: dict
    report: dict = field(default_factory=dict)
