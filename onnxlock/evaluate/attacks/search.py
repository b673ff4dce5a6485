"""The told-groups search: the adaptive search of a white-box thief with labelled data. The thief runs
onnxlock's own group analysis on the locked graph, and is told which groups were widened and by how
many channels (in practice odd widths give much of that away). Group by group, channel by channel,
they delete the candidate channel whose removal gives the best accuracy, greedily. Its cost is
the number of candidate models evaluated; its result is the accuracy recovered.
"""

from __future__ import annotations

import numpy as np
import onnx

from ...graph.groups import find_groups
from ...graph.normalize import import_graph
from ...graph.patch import narrow
from .channels import accuracy, removal_patch


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
