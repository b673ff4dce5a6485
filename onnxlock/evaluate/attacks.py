"""Attacks on a locked model, run by the project itself to measure what the lock resists.

``search_attack``: the adaptive search of a white-box thief with labelled data. The thief runs
onnxlock's own group analysis on the locked graph, and is told which groups were widened and by how
many channels (in practice odd widths give much of that away). Group by group, channel by channel,
they delete the candidate channel whose removal gives the best accuracy, greedily. Its cost is
the number of candidate models evaluated; its result is the accuracy recovered.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..graph.channels import AttrEdit, ParamEdit, ShapeEdit
from ..graph.groups import Group, find_groups
from ..graph.normalize import import_graph
from ..graph.patch import narrow
from .damage import run


def removal_patch(group: Group, position: int) -> list[dict]:
    """A patch deleting one channel at ``position`` of a (widened) group, in narrow()'s format."""
    edits = []
    for edit in group.edits:
        if isinstance(edit, ParamEdit):
            imap = edit.imap
            if imap.copies > 1:  # heads of the current width: narrow() adds the one deleted channel back
                imap = type(imap)(imap.offset, imap.block, imap.copies, group.channels - 1)
            edits.append(["p", edit.constant.name, edit.axis % len(edit.constant.shape), *imap.to_list()])
        elif isinstance(edit, ShapeEdit):
            edits.append(["s", edit.node.inputs[edit.index].name, edit.dim, edit.per_channel])
        elif isinstance(edit, AttrEdit):
            item = [] if edit.item is None else [edit.item]
            edits.append(["a", edit.node.name, edit.attr, edit.per_channel, *item])
    return [{"positions": [position], "edits": edits}]


def accuracy(model: onnx.ModelProto, feeds: dict[str, np.ndarray], labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(run(model, feeds)[0], axis=-1) == labels))


def search_attack(locked: onnx.ModelProto, widened: dict[str, int], feeds: dict[str, np.ndarray],
                  labels: np.ndarray) -> dict:
    """Greedy channel deletion guided by accuracy on (feeds, labels); ``widened``: group -> channels added."""
    model, trials = locked, 0
    for name, added in widened.items():
        for _ in range(added):
            group = {g.name: g for g in find_groups(import_graph(model))}[name]
            scored = []
            for position in range(group.channels):
                candidate = narrow(model, removal_patch(group, position))
                scored.append((accuracy(candidate, feeds, labels), position, candidate))
                trials += 1
            model = max(scored, key=lambda s: s[0])[2]
    return {"trials": trials, "accuracy": accuracy(model, feeds, labels), "model": model}
