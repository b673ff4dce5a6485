"""Restore a locked model inside its serialized bytes, when every layer of its key only changes
tensor values in place (mask, signflip, advparams; ``Touches.in_place``): the restored model's
bytes without parsing or re-serialising it. The lock records the restored model's hash and the
touched tensors' digests this way, holding the model twice instead of five times (a parsed
copy, restored inside protobuf's arena, then serialized)."""

from __future__ import annotations

import numpy as np

from ..passes import secret_layers
from . import wire
from .touches import TOUCHES, ArrayRestorer, touched_tensors


def restore_serialized(locked: bytes, secret: dict, data: bytes | None = None, *, in_place: bool = False
                       ) -> tuple[bytearray, bytearray | None, dict[str, np.ndarray]] | None:
    """Copies of ``locked`` (a serialized model) and of ``data`` (its external data file, if any)
    with every tensor ``secret`` touches restored in place, and those tensors' arrays (views into
    the copies); None when a layer is not ``in_place`` or a touched tensor's bytes cannot be
    found as plain raw data (the caller restores a parsed model instead), decided before any byte
    is changed. With ``in_place``, a bytearray given is restored itself, not a copy."""
    touched = touched_tensors(secret)
    if touched is None or not all(TOUCHES[layer["method"]].in_place for layer in secret_layers(secret)):
        return None
    try:
        layout = wire.scan(locked)
    except (wire.WireError, UnicodeDecodeError):
        return None
    spans = [span for span in layout.initializers if span.name in touched and span.data is not None]
    if {span.name for span in spans} != touched or len(spans) != len(touched) \
            or (data is None and any(span.location is not None for span in spans)):
        return None

    def writable(buffer):
        return buffer if in_place and isinstance(buffer, bytearray) else bytearray(buffer)

    model, weights = writable(locked), None if data is None else writable(data)
    try:  # every view first (each checks that its bytes lie in the buffer), then the restores
        views = {span.name: span.array(model if span.location is None else weights) for span in spans}
    except wire.WireError:
        return None
    restorer = ArrayRestorer(secret)
    for name, view in views.items():  # writable views: a bytearray's
        restored = restorer(name, view)
        if restored is None or restored.nbytes != view.nbytes or not np.shares_memory(restored, view):
            raise RuntimeError(f"the shortcut of an in-place method did not restore {name} in place")
    return model, weights, views
