"""Calibration statistics of intermediate tensors: mean activation per channel of layer inputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..graph.normalize import import_graph

from .subgraph import Frontier

# op -> the contracted axis of its data input (input 0), from the node's attributes and the input's rank
CONTRACTED = {
    "Conv": lambda attrs, rank: 1,
    "Gemm": lambda attrs, rank: 0 if attrs.get("transA", 0) else 1,
    "MatMul": lambda attrs, rank: rank - 1,
}


def input_means(frontier: Frontier, graph: gs.Graph, nodes: list[gs.Node]) -> dict[str, np.ndarray]:
    """Node name -> mean activation per input channel of the data input of each Conv/Gemm/MatMul
    of ``nodes`` with a constant weight, on ``graph`` from the frontier's calibration activations."""
    wanted = {node.name: node.inputs[0].name for node in nodes
              if node.op in CONTRACTED and len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant)}
    if not wanted:
        return {}
    stop = max(frontier.schedule.index[name] for name in wanted)
    values = frontier.tensors(graph, sorted(set(wanted.values())), stop)
    by_name = {node.name: node for node in nodes}
    means = {}
    for node_name, tensor in wanted.items():
        data = np.asarray(values[tensor], dtype=np.float64)
        axis = CONTRACTED[by_name[node_name].op](by_name[node_name].attrs, data.ndim)
        means[node_name] = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1).mean(axis=1)
    return means


def model_input_means(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``input_means`` for every layer of ``model`` (what a thief computes on the whole file)."""
    graph = import_graph(model)
    return input_means(Frontier(graph, feeds, model), graph, list(graph.nodes))
