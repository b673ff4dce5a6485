"""Calibration statistics of intermediate tensors, read by exposing them as extra graph outputs."""

from __future__ import annotations

import numpy as np
import onnx

from .damage import run

# op -> (index of the data input, its contracted axis as a function of the node's attributes)
CONTRACTED = {
    "Conv": (0, lambda attrs, rank: 1),
    "Gemm": (0, lambda attrs, rank: 0 if attrs.get("transA", 0) else 1),
    "MatMul": (0, lambda attrs, rank: rank - 1),
}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def input_means(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Node name -> mean activation per input channel of each Conv/Gemm/MatMul's data input."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.input]}
    initializers = {t.name for t in model.graph.initializer}
    wanted: dict[str, tuple[str, int]] = {}
    for node in model.graph.node:
        if node.op_type not in CONTRACTED or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        index, axis_of = CONTRACTED[node.op_type]
        info = infos.get(node.input[index])
        if info is None or not info.type.tensor_type.HasField("shape"):
            continue
        rank = len(info.type.tensor_type.shape.dim)
        wanted[node.name] = (node.input[index], axis_of(_attrs(node), rank))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    names = sorted({name for name, _ in wanted.values()} - outputs - set(feeds))
    probe.graph.output.extend(infos[name] for name in names)
    values = dict(zip([o.name for o in probe.graph.output], run(probe, feeds)))
    values.update(feeds)
    means = {}
    for node_name, (tensor, axis) in wanted.items():
        data = np.asarray(values[tensor], dtype=np.float64)
        means[node_name] = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1).mean(axis=1)
    return means
