"""Put a graph into the form the passes expect.

Constant and ConstantOfShape nodes that feed weights become initializers, every node gets a
unique name (keys refer to nodes by name), stale value_info is dropped and shapes re-inferred.
Opset imports, metadata_props and tensor names are kept.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..errors import UnsupportedGraphError
from .io import check_opset


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """gs import with shapes inferred (strict: an inconsistent graph is an error)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeError/ValidationError
        raise UnsupportedGraphError(f"shape inference failed: {str(exc).splitlines()[0]}") from exc
    return gs.import_onnx(inferred)


def export_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """gs export without value_info, carrying over what gs drops (metadata, model doc, ir version)."""
    model = gs.export_onnx(graph, do_type_check=False)
    del model.graph.value_info[:]
    model.ir_version = like.ir_version
    model.doc_string = like.doc_string
    model.model_version = like.model_version
    model.domain = like.domain
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    return model


def _constant_node_value(node: gs.Node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        value = attrs["value"]
        return value.values if isinstance(value, gs.Constant) else np.asarray(value)
    for name, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if name in attrs:
            return np.array(attrs[name], dtype=dtype)
    for name, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if name in attrs:
            return np.array(attrs[name], dtype=dtype)
    return None  # sparse or string constants stay nodes


def _constant_of_shape_value(node: gs.Node) -> np.ndarray | None:
    shape = node.inputs[0]
    if not isinstance(shape, gs.Constant):
        return None
    fill = node.attrs.get("value")
    fill = fill.values if isinstance(fill, gs.Constant) else np.zeros(1, dtype=np.float32)
    return np.full(tuple(int(d) for d in shape.values), fill.reshape(-1)[0], dtype=fill.dtype)


FOLDERS = {"Constant": _constant_node_value, "ConstantOfShape": _constant_of_shape_value}


def fold_constant_nodes(graph: gs.Graph) -> int:
    """Turn Constant/ConstantOfShape nodes into initializers; returns how many were folded."""
    outputs = {t.name for t in graph.outputs}
    folded = 0
    for node in graph.nodes:
        folder = FOLDERS.get(node.op)
        if folder is None or node.domain not in (None, "", "ai.onnx") or node.outputs[0].name in outputs:
            continue
        value = folder(node)
        if value is None:
            continue
        out = node.outputs[0]
        node.outputs.clear()
        out.to_constant(np.array(value))  # a copy; keeps 0-d scalars 0-d (ascontiguousarray would not)
        folded += 1
    return folded


def name_nodes(graph: gs.Graph) -> None:
    """Give every node a unique, stable name (by op type and topological index)."""
    seen: set[str] = set()
    for index, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            node.name = f"{node.op}_{index}"
            while node.name in seen:
                node.name += "_"
        seen.add(node.name)


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a normalised copy of ``model``; the input is not modified."""
    check_opset(model)
    graph = gs.import_onnx(model)
    fold_constant_nodes(graph)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    name_nodes(graph)
    normalized = export_graph(graph, model)
    try:
        onnx.checker.check_model(normalized, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise UnsupportedGraphError(f"model fails the ONNX checker: {str(exc).splitlines()[0]}") from exc
    return normalized


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Name -> numpy array of every initializer (for comparisons and parameter counts)."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
