"""Undo channel widening on a ModelProto from a patch alone: delete the confusion entries.

A patch is a list of groups, each ``{"positions": [...], "edits": [...]}``, as written by
``widen.widen_group``; groups and edits are undone in reverse order of application.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelMismatchError
from .channels import IndexMap


def narrow(model: onnx.ModelProto, groups: list[dict], *, in_place: bool = False) -> onnx.ModelProto:
    """Return ``model`` with every widened group narrowed back to its original size: a copy, or
    ``model`` itself when ``in_place`` (the loader owns its freshly parsed model: no second copy)."""
    restored = model if in_place else onnx.ModelProto()
    if not in_place:
        restored.CopyFrom(model)
    inits = {t.name: t for t in restored.graph.initializer}
    nodes = {n.name: n for n in restored.graph.node}
    try:
        for group in reversed(groups):
            positions = np.asarray(group["positions"], dtype=np.int64)
            if positions.ndim != 1 or len(positions) == 0 or positions[0] < 0 or np.any(np.diff(positions) <= 0):
                raise ValueError("positions must be non-negative and strictly increasing")
            for edit in reversed(group["edits"]):
                _undo(edit, positions, inits, nodes)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ModelMismatchError(f"the key does not fit this model ({exc.__class__.__name__}: {exc})") from exc
    return restored


def _undo(edit: list, positions: np.ndarray, inits: dict, nodes: dict) -> None:
    kind, target = edit[0], edit[1]
    k = len(positions)
    if kind == "p":
        if len(edit) not in (5, 7):  # kind, tensor, axis, offset, block[, copies, period]
            raise ValueError(f"malformed edit {edit!r}")
        axis, imap = edit[2], IndexMap(*edit[3:])
        tensor = inits[target]
        values = np.delete(numpy_helper.to_array(tensor), imap.indices(positions), axis=axis)
        tensor.CopyFrom(numpy_helper.from_array(values, target))
    elif kind == "s":
        _, _, dim, per_channel = edit
        tensor = inits[target]
        values = numpy_helper.to_array(tensor).copy()
        values[dim] -= k * per_channel
        tensor.CopyFrom(numpy_helper.from_array(values, target))
    elif kind == "a":
        if len(edit) not in (4, 5):  # kind, node, attr, per_channel[, item of a list attribute]
            raise ValueError(f"malformed edit {edit!r}")
        attr, per_channel = edit[2], edit[3]
        for attribute in nodes[target].attribute:
            if attribute.name == attr and len(edit) == 5:
                attribute.ints[edit[4]] -= k * per_channel
                break
            if attribute.name == attr:
                attribute.i -= k * per_channel
                break
        else:
            raise KeyError(f"attribute {attr} of node {target}")
    else:
        raise ValueError(f"unknown edit kind {kind!r}")
