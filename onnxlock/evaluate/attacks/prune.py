"""Blind pruning: delete the least important channels of every widenable group at a given rate.

Importance, per channel (no labels):
- ``weight_norm``: the L2 norm of its filters;
- ``activation``: its mean absolute activation on the inputs;
- ``taylor``: |dL/ds| for a scale s on the channel (first-order Taylor, Molchanov et al. 2017),
  L the cross-entropy against the model's own decisions, by central differences on a copy of
  the model whose group tensors are multiplied by a per-channel scale input.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ...graph.channels import Role
from ...graph.groups import Group
from ..damage import cpu_session
from .activity import read_tensors, tensor_values
from .channels import Channel, Peeling
from .health import probabilities
from .weights import channel_rows, edits_of

PRUNERS = ("weight_norm", "activation", "taylor")
RATES = (0.1, 0.25, 0.5)
STEP = 1e-2  # relative scale step of the Taylor finite difference


def weight_norm(peeling: Peeling, groups: list[Group], feeds) -> list[np.ndarray]:
    return [np.mean([np.linalg.norm(channel_rows(g, e), axis=1) for e in edits_of(g, Role.OUT)], axis=0)
            for g in groups]


def activation(peeling: Peeling, groups: list[Group], feeds) -> list[np.ndarray]:
    """Read where the group's channels last reach unchanged, unless that tensor holds other channels
    too (a Concat's output): then where they are made."""
    picks = [read_tensors(g) for g in groups]
    values = tensor_values(peeling.model, feeds, [name for pick in picks for name, _ in pick.values()])
    importance = []
    for group, pick in zip(groups, picks):
        name, axis = pick.get("post", pick["pre"])
        if values[name].shape[axis] != group.channels:
            name, axis = pick["pre"]
        importance.append(np.abs(np.moveaxis(values[name], axis, 0).reshape(group.channels, -1)).mean(axis=1))
    return importance


def scale_probe(model: onnx.ModelProto, picks: list[tuple[str, int, int]]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose tensors (name, axis, channels) are multiplied by new per-channel inputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    names = []
    for index, (tensor, axis, channels) in enumerate(picks):
        scale, shape, scaled = f"onnxlock_scale_{index}", f"onnxlock_scale_shape_{index}", f"{tensor}__scaled"
        for node in probe.graph.node:
            node.input[:] = [scaled if name == tensor else name for name in node.input]
        probe.graph.input.append(helper.make_tensor_value_info(scale, onnx.TensorProto.FLOAT, [channels]))
        probe.graph.initializer.append(helper.make_tensor(shape, onnx.TensorProto.INT64, [ranks[tensor] - axis],
                                                          [channels] + [1] * (ranks[tensor] - axis - 1)))
        probe.graph.node.extend([helper.make_node("Reshape", [scale, shape], [f"{scale}__r"]),
                                 helper.make_node("Mul", [tensor, f"{scale}__r"], [scaled])])
        names.append(scale)
    del probe.graph.value_info[:]
    return probe, names


def cross_entropy(scores: np.ndarray, labels: np.ndarray) -> float:
    p = probabilities(scores).reshape(-1, scores.shape[-1])
    return float(-np.mean(np.log(p[np.arange(len(p)), labels.reshape(-1)] + 1e-12)))


def taylor(peeling: Peeling, groups: list[Group], feeds) -> list[np.ndarray]:
    picks = [(*read_tensors(g)["pre"], g.channels) for g in groups]
    probe, names = scale_probe(peeling.model, picks)
    probe = _topological(probe)
    session = cpu_session(probe)
    ones = {name: np.ones(c, dtype=np.float32) for name, (_, _, c) in zip(names, picks)}
    labels = np.argmax(session.run(None, feeds | ones)[0], axis=-1)
    importance = []
    for name, (_, _, channels) in zip(names, picks):
        grads = np.empty(channels)
        for c in range(channels):
            losses = []
            for sign in (1, -1):
                scale = np.ones(channels, dtype=np.float32)
                scale[c] += sign * STEP
                losses.append(cross_entropy(session.run(None, feeds | ones | {name: scale})[0], labels))
            grads[c] = (losses[0] - losses[1]) / (2 * STEP)
        importance.append(np.abs(grads))
    return importance


def _topological(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes in an order where each input is produced first (the probe's nodes were appended last)."""
    available = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("the probe graph has a cycle")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if not any(n is r for r in ready)]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


IMPORTANCE = {"weight_norm": weight_norm, "activation": activation, "taylor": taylor}


def prune(locked: onnx.ModelProto, feeds: dict[str, np.ndarray], pruner: str, rate: float) -> Peeling:
    """Delete ``rate`` of every widenable group's channels, the least important by ``pruner``."""
    return prune_at(locked, feeds, pruner, [rate])[0]


def prune_at(locked: onnx.ModelProto, feeds: dict[str, np.ndarray], pruner: str,
             rates: list[float]) -> list[Peeling]:
    """``prune`` at each of ``rates``, the channels' importance measured once."""
    start = Peeling.start(locked)
    groups = [start.groups[name] for name in start.alive]
    importance = IMPORTANCE[pruner](start, groups, feeds)
    pruned = []
    for rate in rates:
        doomed = []
        for group, values in zip(groups, importance):
            count = min(int(rate * group.channels), group.channels - 1)
            doomed += [Channel(group.name, int(p)) for p in np.argsort(values, kind="stable")[:count]]
        pruned.append(start.without(doomed))
    return pruned
