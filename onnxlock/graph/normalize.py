"""Put a graph into the form the passes expect.

Constant and ConstantOfShape nodes that feed weights become initializers; so do Identity nodes over
constants (exporters route duplicated weights through them) and shape arithmetic that is known
before run time (``Shape`` of static dims, then Gather/Slice/Concat/Unsqueeze/... of constants), so
that reshape targets become constants. Only exact operations are folded: data movement of any
type, arithmetic on integers. Every node gets a unique name (keys refer to nodes by name), stale
value_info is dropped and shapes re-inferred. Opset imports, metadata_props and tensor names are kept.
"""

from __future__ import annotations

import gc

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..errors import UnsupportedGraphError
from .io import check_opset


INLINE_BYTES = 4096  # constants up to this size stay in weightless copies (shape values inference reads)


def shell(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without its initializers: the graph, opsets and functions, no weights copied."""
    light = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    light.graph.name = model.graph.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(light.graph, field).extend(getattr(model.graph, field))
    return light


def is_small(tensor: TensorProto) -> bool:
    """A string tensor or one of at most INLINE_BYTES: kept in weightless copies."""
    size = int(np.prod(tensor.dims, dtype=np.int64))
    return tensor.data_type == TensorProto.STRING or \
        size * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize <= INLINE_BYTES


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its initializers above INLINE_BYTES turned into typed graph inputs: the same
    graph for the checker and shape inference, at a fraction of the memory."""
    light = shell(model)
    declared = {value.name for value in model.graph.input}
    for tensor in model.graph.initializer:
        if is_small(tensor):
            light.graph.initializer.append(tensor)
        elif tensor.name not in declared:
            light.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return light


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """gs import with shapes inferred (strict: an inconsistent graph is an error). Shapes are
    inferred on a weightless copy and lent to ``model`` for the import (restored after), so the
    weights are never serialised; the graph's constants read ``model``'s tensors."""
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless(model), strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeError/ValidationError
        raise UnsupportedGraphError(f"shape inference failed: {str(exc).splitlines()[0]}") from exc
    return _import(model, inferred.graph.value_info, inferred.graph.output)


def _import(model: onnx.ModelProto, value_info=None, output=None) -> gs.Graph:
    """gs import of ``model`` with ``value_info`` and ``output`` lent to it for the import (its own
    by default, ``model`` as it was after). value_info entries that name a graph input or output
    are left out: some exporters write them shapeless, and gs's import would take one for the
    declaration itself, so that the output lost its shape."""
    graph = model.graph
    saved = [list(graph.value_info), list(graph.output)]
    output = saved[1] if output is None else list(output)
    ends = {value.name for value in (*graph.input, *output)}
    middle = [value for value in (saved[0] if value_info is None else value_info) if value.name not in ends]
    try:
        for field, values in (("value_info", middle), ("output", output)):
            del getattr(graph, field)[:]
            getattr(graph, field).extend(values)
        return gs.import_onnx(model)
    finally:
        for field, values in zip(("value_info", "output"), saved):
            del getattr(graph, field)[:]
            getattr(graph, field).extend(values)


def export_graph(graph: gs.Graph, like: onnx.ModelProto, *, weights: dict[str, TensorProto] | None = None,
                 weightless: bool = False) -> onnx.ModelProto:
    """gs export without value_info, carrying over what gs drops (metadata, model doc, ir version,
    initializers no node reads: those folding used up stay, so every original weight keeps its name).

    Large constants that still read a model's tensor are exported as stand-ins without data, and
    their tensors copied in once at the end (gs copies each into its graph, then the graph into
    the model: the weights twice); ``weightless`` leaves the stand-ins (an intermediate model,
    whose imported graph ``lend`` gives the tensors back). ``weights`` (by name): when given, only
    these are stood in for, and they fill the stand-ins carried over from a weightless ``like``."""
    if weightless and weights is None:
        raise ValueError("a weightless export needs the weights to lend back")
    lazy = {tensor.name: tensor for tensor in graph.tensors().values()
            if _reads_large_tensor(tensor) and (weights is None or tensor.name in weights)}
    sources = {name: tensor._values.tensor for name, tensor in lazy.items()}
    for name, tensor in lazy.items():
        tensor.values = LazyValues(TensorProto(name=name, data_type=sources[name].data_type, dims=sources[name].dims))
    try:
        model = gs.export_onnx(graph, do_type_check=False)
    finally:
        for name, tensor in lazy.items():
            tensor.values = LazyValues(sources[name])
    del model.graph.value_info[:]
    present = {t.name for t in model.graph.initializer}
    present.update(out for node in model.graph.node for out in node.output)
    present.update(t.name for t in model.graph.input)
    carried = [t for t in like.graph.initializer if t.name not in present]
    model.graph.initializer.extend(carried)
    if not weightless:
        sources.update((t.name, weights[t.name]) for t in carried if weights and t.name in weights)
        for tensor in model.graph.initializer:
            if tensor.name in sources:
                tensor.CopyFrom(sources[tensor.name])  # its name too: gs named the original after its tensor
    model.ir_version = like.ir_version
    model.doc_string = like.doc_string
    model.model_version = like.model_version
    model.domain = like.domain
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    return model


def _lazy(tensor: gs.Tensor) -> bool:
    """A constant whose values are still a model's dense tensor (not loaded, not sparse)."""
    return isinstance(tensor, gs.Constant) and type(tensor._values) is LazyValues


def _reads_large_tensor(tensor: gs.Tensor) -> bool:
    """A constant whose values are still a model's tensor of more than INLINE_BYTES."""
    return _lazy(tensor) and not is_small(tensor._values.tensor)


def lend(graph: gs.Graph, weights: dict[str, TensorProto]) -> gs.Graph:
    """``graph``, imported from a weightless export, with each stand-in reading its tensor in ``weights`` again."""
    for tensor in graph.tensors().values():
        if tensor.name in weights and _lazy(tensor):
            tensor.values = LazyValues(weights[tensor.name])
    return graph


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


# ops whose result is bit-exact whatever the dtype (they move, select or repeat values) ...
MOVES = set("Identity Reshape Unsqueeze Squeeze Flatten Transpose Concat Slice Gather Cast".split())
REPEATS = set("Expand Tile ConstantOfShape Where".split())
# ... and ops folded only when they compute integers or booleans (shape arithmetic)
INTEGER_OPS = set(("Add Sub Mul Div Mod Neg Abs Min Max Equal Less Greater LessOrEqual GreaterOrEqual Not And Or "
                   "Range ReduceProd ReduceSum ReduceMax ReduceMin Shape Size").split())
MAX_FOLDED = 1 << 22  # elements of a folded move
MAX_REPEATED = 1 << 16  # elements of a folded broadcast: never materialise a big one
FOLD_ROUNDS = 8  # folding makes shapes static, which lets more fold: rounds until nothing changes


def _static_shape(tensor: gs.Tensor) -> list[int | None] | None:
    if tensor.shape is None:
        return None
    return [int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None for d in tensor.shape]


def _shape_value(node: gs.Node) -> np.ndarray | None:
    """Shape of a tensor whose dims (in the node's start:end range) are all static."""
    dims = _static_shape(node.inputs[0])
    if dims is None:
        return None
    dims = dims[node.attrs.get("start", 0):node.attrs.get("end", len(dims))]
    return None if None in dims else np.array(dims, dtype=np.int64)


def _selected_dims(node: gs.Node, shape_node: gs.Node) -> np.ndarray | None:
    """Gather/Slice with constant indices over a Shape whose selected dims are static (``x.shape[1]``
    with a dynamic batch)."""
    dims = _static_shape(shape_node.inputs[0])
    if dims is None or shape_node.attrs.get("start", 0) != 0 or "end" in shape_node.attrs:
        return None
    values = np.array([-1 if d is None else d for d in dims], dtype=np.int64)
    inputs = [values] + [t.values if isinstance(t, gs.Constant) else None for t in node.inputs[1:] if t.name]
    if any(v is None for v in inputs):
        return None
    picked = _evaluate(node, inputs)
    static = _evaluate(node, [np.array([d is not None for d in dims])] + inputs[1:])
    return picked if static is not None and np.all(static) else None


def _evaluate(node: gs.Node, inputs: list[np.ndarray]) -> np.ndarray | None:
    """The node's first output on constant inputs (onnx's reference implementation), or None."""
    names = [f"i{i}" for i in range(len(inputs))]
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return None
    attrs = {k: numpy_helper.from_array(np.asarray(v.values)) if isinstance(v, gs.Constant) else v
             for k, v in node.attrs.items()}
    proto = helper.make_node(node.op, names, ["o"], **attrs)
    try:
        value = ReferenceEvaluator(proto).run(None, dict(zip(names, inputs)))[0]
    except Exception:  # an op or case the reference cannot evaluate simply stays in the graph
        return None
    return np.asarray(value)


def _fold_value(node: gs.Node) -> np.ndarray | None:
    """The value of a node computable before run time, exactly; None when it must stay."""
    if node.op == "Shape":
        return _shape_value(node)
    if node.op in ("Gather", "Slice") and node.inputs[0].inputs and node.inputs[0].inputs[0].op == "Shape":
        return _selected_dims(node, node.inputs[0].inputs[0])
    inputs = [t for t in node.inputs if t.name]
    if node.op not in MOVES | REPEATS | INTEGER_OPS or len(node.outputs) != 1 or not inputs:
        return None
    if len(inputs) != len(node.inputs) or not all(isinstance(t, gs.Constant) for t in inputs):
        return None
    if sum(t.values.size for t in inputs) > MAX_FOLDED:
        return None
    if not all(np.asarray(t.values).dtype.kind in "biuf" for t in inputs):
        return None
    value = _evaluate(node, [np.asarray(t.values) for t in inputs])
    if value is None or value.dtype.kind not in "biuf":
        return None
    if value.dtype.kind in "biu":
        return value if value.size <= MAX_FOLDED else None
    if node.op in MOVES and value.size <= MAX_FOLDED or node.op in REPEATS and value.size <= MAX_REPEATED:
        return value
    return None


def fold_known_values(graph: gs.Graph) -> int:
    """Replace every node whose output is known before run time by an initializer; returns how many.
    The graph must carry inferred shapes (for ``Shape``)."""
    outputs = {t.name for t in graph.outputs}
    folded = 0
    for node in graph.nodes:  # topological order: a folded node's consumers see constants next
        if node.domain not in (None, "", "ai.onnx") or any(t.name in outputs for t in node.outputs):
            continue
        value = _fold_value(node)
        if value is None:
            continue
        out = node.outputs[0]
        node.outputs.clear()
        out.to_constant(np.array(value, dtype=value.dtype))
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
    weights = {tensor.name: tensor for tensor in model.graph.initializer if not is_small(tensor)}
    graph = _import(model)
    fold_constant_nodes(graph)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    like = export_graph(graph, model, weights=weights, weightless=True)  # every weight an initializer: what
    # later exports keep; the weights that were Constant nodes are in it, in full, and lent from it
    weights.update((t.name, t) for t in like.graph.initializer if not is_small(t) and t.name not in weights)
    graph = lend(import_graph(like), weights)
    for _ in range(FOLD_ROUNDS):
        if not fold_known_values(graph):
            break
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        graph = lend(import_graph(export_graph(graph, like, weights=weights, weightless=True)), weights)
    name_nodes(graph)
    normalized = export_graph(graph, like, weights=weights)  # the one copy of the weights
    del graph, like
    gc.collect()  # graph-surgeon graphs are cycles: without this, ``like``'s weights outlive the call
    check(normalized)
    return normalized


def check(model: onnx.ModelProto) -> None:
    """The ONNX checker's full check, on the weightless copy and then each large tensor on its own:
    the same checks without serialising the whole model twice more (the checker's C++ side parses
    its own copy), which made a lock's peak five times the model."""
    try:
        onnx.checker.check_model(weightless(model), full_check=True)
        for tensor in model.graph.initializer:
            if not is_small(tensor):
                onnx.checker.check_tensor(tensor)
    except Exception as exc:  # ValidationError, or onnx's InferenceError from the full check
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedGraphError(f"model fails the ONNX checker: {message}") from exc


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Name -> numpy array of every initializer (for comparisons and parameter counts)."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
