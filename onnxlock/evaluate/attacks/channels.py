"""The thief's view of a locked model: every channel of every widenable group is a suspect.

A thief knows the method (it is public) and runs onnxlock's own group analysis on the locked
graph; each widenable group is a candidate and each of its channels a suspect. A ``Peeling`` is a
model with some channels deleted; it remembers each surviving channel's position in the locked
file, which is how the truth from the key names channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import functools
from dataclasses import dataclass

import numpy as np
import onnx

from ...graph.channels import AttrEdit, ParamEdit, ShapeEdit
from ...graph.groups import Group, find_groups
from ...graph.normalize import import_graph
from ...graph.patch import narrow
from ..damage import run


@dataclass(frozen=True, order=True)
class Channel:
    """Channel ``position`` of group ``group`` (its seed tensor's name), counted in the locked file."""

    group: str
    position: int


def widenable_groups(model: onnx.ModelProto) -> list[Group]:
    """The groups the thief would suspect: every group onnxlock itself could widen."""
    return [g for g in find_groups(import_graph(model)) if g.widenable]


def removal_patch(group: Group, positions: int | Sequence[int]) -> list[dict]:
    """A patch deleting channels at current ``positions`` of a (widened) group, in narrow()'s format."""
    positions = sorted([positions] if isinstance(positions, (int, np.integer)) else positions)
    edits = []
    for edit in group.edits:
        if isinstance(edit, ParamEdit):
            imap = edit.imap
            if imap.copies > 1:  # heads of the current width: narrow() adds the deleted channels back
                imap = type(imap)(imap.offset, imap.block, imap.copies, group.channels - len(positions))
            edits.append(["p", edit.constant.name, edit.axis % len(edit.constant.shape), *imap.to_list()])
        elif isinstance(edit, ShapeEdit):
            edits.append(["s", edit.node.inputs[edit.index].name, edit.dim, edit.per_channel])
        elif isinstance(edit, AttrEdit):
            item = [] if edit.item is None else [edit.item]
            edits.append(["a", edit.node.name, edit.attr, edit.per_channel, *item])
    return [{"positions": [int(p) for p in positions], "edits": edits}]


INTEGER_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def unshared_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every integer initializer that several node inputs read (a Split's sizes, a
    Reshape's target) copied once per further use: deleting one group's channels edits its own
    copy (the confusion pass does the same before widening), not another group's."""
    inits = {t.name: t for t in model.graph.initializer if t.data_type in INTEGER_TYPES}
    if not inits:
        return model
    copy, seen, names = onnx.ModelProto(), set(), {t.name for t in model.graph.initializer}
    copy.CopyFrom(model)
    for node in copy.graph.node:
        for index, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                clone, number = onnx.TensorProto(), len(names)
                clone.CopyFrom(inits[name])
                while f"{name}__use{number}" in names:
                    number += 1
                clone.name = node.input[index] = f"{name}__use{number}"
                names.add(clone.name)
                copy.graph.initializer.append(clone)
            seen.add(name)
    return copy


@dataclass(frozen=True)
class Peeling:
    """A model and, per widenable group, the locked-file position of each channel it still has."""

    model: onnx.ModelProto
    alive: dict[str, tuple[int, ...]]

    @classmethod
    def start(cls, locked: onnx.ModelProto) -> "Peeling":
        locked = unshared_shapes(locked)
        return cls(locked, {g.name: tuple(range(g.channels)) for g in widenable_groups(locked)})

    @functools.cached_property
    def groups(self) -> dict[str, Group]:
        """The widenable groups of this model, analysed once."""
        return {g.name: g for g in widenable_groups(self.model)}

    def channels(self) -> list[Channel]:
        return [Channel(name, p) for name, alive in self.alive.items() for p in alive]

    def without(self, channels: Iterable[Channel]) -> "Peeling":
        """This peeling with ``channels`` deleted (group by group: deleting moves other groups' offsets)."""
        by_group: dict[str, list[int]] = {}
        for channel in channels:
            by_group.setdefault(channel.group, []).append(channel.position)
        model, alive = self.model, dict(self.alive)
        for index, (name, positions) in enumerate(by_group.items()):
            current = [alive[name].index(p) for p in sorted(set(positions))]
            if len(current) >= len(alive[name]):
                raise ValueError(f"cannot delete every channel of group {name!r}")
            groups = self.groups if index == 0 else {g.name: g for g in widenable_groups(model)}
            model = narrow(model, removal_patch(groups[name], current))
            alive[name] = tuple(p for i, p in enumerate(alive[name]) if i not in set(current))
        return Peeling(model, alive)


def accuracy(model: onnx.ModelProto, feeds: dict[str, np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of the model's first output."""
    return float(np.mean(np.argmax(run(model, feeds)[0], axis=-1) == labels))
