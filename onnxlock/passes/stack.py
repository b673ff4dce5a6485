"""Stacked locks: several passes applied in turn under one key, restored in reverse order.

A stacked secret is ``{"method": "stack", "version": 1, "layers": [secret, ...]}`` where each
layer is one pass's own secret (with its ``method``), in the order the passes were applied.
A single-pass secret (the format before stacking) is a stack of one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import KeyFormatError

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

STACK = "stack"
STACK_VERSION = 1
MAX_LAYERS = 8


def stack_secrets(secrets: list[dict]) -> dict:
    """One secret holding ``secrets`` in the order their passes were applied."""
    return {"method": STACK, "version": STACK_VERSION, "layers": list(secrets)}


def secret_layers(secret: dict) -> list[dict]:
    """The per-pass secrets of ``secret``, in application order (a plain secret is one layer)."""
    if not isinstance(secret, dict):
        raise KeyFormatError("key secret is not an object")
    if secret.get("method") != STACK:
        return [secret]
    layers = secret.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise KeyFormatError(f"key secret must hold 1 to {MAX_LAYERS} stacked layers")
    if not all(isinstance(layer, dict) and layer.get("method") != STACK for layer in layers):
        raise KeyFormatError("stacked key layers must be plain pass secrets")
    return layers


def restore_secret(model: onnx.ModelProto, secret: dict, restorers: dict, *,
                   in_place: bool = False) -> onnx.ModelProto:
    """Undo every layer of ``secret`` on ``model``, last applied first."""
    for layer in reversed(secret_layers(secret)):
        method = layer.get("method")
        restorer = restorers.get(method) if isinstance(method, str) else None
        if restorer is None:
            raise KeyFormatError(f"key holds an unknown method {layer.get('method')!r}")
        model = restorer(model, layer, in_place=in_place)
        in_place = True  # after the first layer the model is our own copy
    return model
