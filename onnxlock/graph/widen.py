"""Apply a group's widening to a gs graph in place, and describe how to undo it.

The undo description ("patch") names initializers and nodes only, so it can be applied to a plain
ModelProto by ``graph.patch.narrow`` without re-running any analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import numpy as np
import onnx_graphsurgeon as gs

from .channels import AttrEdit, ParamEdit, ShapeEdit
from .groups import Group

# fill(edit, existing array moved so the widened axis is first, number of new rows) -> new rows
Fill = Callable[[ParamEdit, np.ndarray, int], np.ndarray]

_clone_ids = count()


def insert_along(array: np.ndarray, axis: int, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Insert ``rows`` (widened axis first) so they occupy ``indices`` of the grown ``axis``."""
    moved = np.moveaxis(array, axis, 0)
    grown = np.empty((moved.shape[0] + len(indices), *moved.shape[1:]), dtype=array.dtype)
    mask = np.zeros(grown.shape[0], dtype=bool)
    mask[indices] = True
    grown[~mask] = moved
    grown[mask] = rows
    return np.ascontiguousarray(np.moveaxis(grown, 0, axis))


def _own_constant(node: gs.Node, index: int) -> gs.Constant:
    """The node's constant input, cloned first if other nodes (or inputs) share it."""
    const = node.inputs[index]
    uses = sum(1 for consumer in const.outputs for t in consumer.inputs if t is const)
    if uses > 1:
        clone = gs.Constant(f"{const.name}__onnxlock{next(_clone_ids)}", np.array(const.values))
        node.inputs[index] = clone
        const = clone
    return const


def widen_group(group: Group, positions: np.ndarray, fill: Fill) -> list[list]:
    """Widen every edit and member of ``group`` at base ``positions``; returns the undo patch."""
    k = len(positions)
    patch: list[list] = []
    for edit in group.edits:
        if isinstance(edit, ParamEdit):
            const = _own_constant(edit.node, edit.index)
            values = np.asarray(const.values)
            axis = edit.axis % values.ndim
            indices = edit.imap.indices(positions)
            rows = fill(edit, np.moveaxis(values, axis, 0), len(indices))
            const.values = insert_along(values, axis, indices, rows.astype(values.dtype))
            patch.append(["p", const.name, axis, *edit.imap.to_list()])
        elif isinstance(edit, ShapeEdit):
            const = _own_constant(edit.node, edit.index)
            values = np.array(const.values)
            values[edit.dim] += k * edit.per_channel
            const.values = values
            if edit.node.op == "Reshape" and edit.node.outputs[0].name not in group.members:  # members grow below
                _grow_shape(edit.node.outputs[0], edit.dim, k * edit.per_channel)
            patch.append(["s", const.name, edit.dim, edit.per_channel])
        elif isinstance(edit, AttrEdit) and edit.item is None:
            edit.node.attrs[edit.attr] = int(edit.node.attrs.get(edit.attr, 1)) + k * edit.per_channel
            patch.append(["a", edit.node.name, edit.attr, edit.per_channel])
        elif isinstance(edit, AttrEdit):
            values = [int(v) for v in edit.node.attrs[edit.attr]]
            values[edit.item] += k * edit.per_channel
            edit.node.attrs[edit.attr] = values
            patch.append(["a", edit.node.name, edit.attr, edit.per_channel, edit.item])
    for member in group.members.values():
        _grow_shape(member.tensor, member.axis, member.imap.growth(k))
    return patch


def _grow_shape(tensor: gs.Variable, axis: int, by: int) -> None:
    """Keep a tensor's recorded shape true after widening (later groups are analysed on it)."""
    shape = tensor.shape
    if shape is not None and isinstance(shape[axis], (int, np.integer)):
        shape = list(shape)
        shape[axis] += by
        tensor.shape = shape
