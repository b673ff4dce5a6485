"""What every protection pass returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx


class PassResult:
    """The locked model, the small secret that restores it, and a report of what was done."""

    __slots__ = ("model", "secret", "report")

    def __init__(self, model: onnx.ModelProto, secret: dict, report: dict | None = None):
        self.model, self.secret, self.report = model, secret, {} if report is None else report
