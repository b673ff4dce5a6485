"""Run a graph-surgeon graph, or a stretch of its node order, without copying its weights.

Trial locks change a few layers of a model; serialising the whole model and building a session
per trial costs more than the trial itself. Here onnxruntime gets a model holding only the nodes
to run, the weights as in-memory buffers (``add_external_initializers``: no copy), and the
activations entering the stretch (its *frontier*) as inputs. A ``Frontier`` walks the node order
once, keeping only the activations still needed further on.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from ..graph.normalize import INLINE_BYTES, weightless  # noqa: F401  (weightless: re-exported)

IN_MEMORY = "onnxlock-in-memory"  # location of weights handed over as buffers


class Schedule:
    """Where each tensor of a graph is produced and read in its node order (same for every copy,
    since widening adds no node)."""

    def __init__(self, graph: gs.Graph):
        self.size = len(graph.nodes)
        self.index = {node.name: i for i, node in enumerate(graph.nodes)}
        self.inputs = [t.name for t in graph.inputs]
        self.outputs = [t.name for t in graph.outputs]
        self.produced: dict[str, int] = {name: -1 for name in self.inputs}
        self.last_read: dict[str, int] = {}
        for i, node in enumerate(graph.nodes):
            for tensor in node.inputs:
                if isinstance(tensor, gs.Variable) and tensor.name:
                    self.last_read[tensor.name] = i
            for tensor in node.outputs:
                self.produced[tensor.name] = i
        # a node reading outer-scope tensors inside a subgraph hides its inputs: never cut
        self.cuttable = not any(isinstance(v, gs.Graph) for node in graph.nodes for v in node.attrs.values())

    def cut(self, nodes: list[gs.Node]) -> int:
        """The first position at which any of ``nodes`` runs (0 when the graph cannot be cut)."""
        if not self.cuttable:
            return 0
        return min((self.index[node.name] for node in nodes), default=self.size)

    def live(self, position: int) -> list[str]:
        """Tensors made before ``position`` and read at or after it, and graph outputs made before it."""
        outputs = {name for name in self.outputs if self.produced.get(name, self.size) < position}
        return [name for name, made in self.produced.items()
                if made < position and (self.last_read.get(name, -1) >= position or name in outputs)]


def stub(name: str, elem_type: int, dims) -> TensorProto:
    """An initializer's name, type and shape, its data left to be handed over in memory."""
    tensor = TensorProto(name=name, data_type=elem_type, dims=dims, data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="location", value=IN_MEMORY)
    return tensor


def _value_info(name: str, elem_type: int | None) -> onnx.ValueInfoProto:
    if elem_type is None:
        info = onnx.ValueInfoProto()
        info.name = name
        return info  # onnxruntime infers an output's type
    return helper.make_tensor_value_info(name, elem_type, None)


def stretch_model(graph: gs.Graph, start: int, stop: int, inputs: dict[str, np.ndarray], wanted: list[str],
                  like: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The model of nodes ``start:stop`` of ``graph`` computing ``wanted``, the subset of ``inputs``
    it reads, and its weights above INLINE_BYTES (stubs in the model, to be handed over in memory)."""
    nodes = graph.nodes[start:stop]
    constants: dict[str, gs.Constant] = {}
    read: list[str] = []
    made = {t.name for node in nodes for t in node.outputs}
    for node in nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Constant):
                constants.setdefault(tensor.name, tensor)
            elif tensor.name and tensor.name not in made and tensor.name not in read:
                read.append(tensor.name)
    feeds = {name: inputs[name] for name in read}
    initializers, weights = [], {}
    for name, constant in constants.items():
        values = np.asarray(constant.values)
        if values.nbytes <= INLINE_BYTES or values.dtype == object:
            initializers.append(numpy_helper.from_array(values, name))
        else:
            initializers.append(stub(name, helper.np_dtype_to_tensor_dtype(values.dtype), values.shape))
            weights[name] = np.ascontiguousarray(values)
    declared = {o.name: o.type.tensor_type.elem_type for o in like.graph.output if o.type.HasField("tensor_type")}
    proto = helper.make_graph(
        [OnnxExporter.export_node(node) for node in nodes], "stretch",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds.items()],
        [_value_info(name, declared.get(name)) for name in wanted], initializers)
    return helper.make_model(proto, opset_imports=like.opset_import, ir_version=like.ir_version), feeds, weights


def session(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> ort.InferenceSession:
    """A quiet CPU session over ``model`` reading ``weights`` in place (they must outlive it)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_prepacking", "1")  # prepacking copies weights
    options.enable_cpu_mem_arena = False  # one session per trial: give activations back after each
    if weights:
        options.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(w) for w in weights.values()])
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_stretch(graph: gs.Graph, start: int, stop: int, inputs: dict[str, np.ndarray], wanted: list[str],
                like: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values of ``wanted`` computed by nodes ``start:stop`` from ``inputs`` (those given pass through)."""
    result = {name: inputs[name] for name in wanted if name in inputs}
    missing = [name for name in wanted if name not in result]
    if missing:
        model, feeds, weights = stretch_model(graph, start, stop, inputs, missing, like)
        result.update(zip(missing, session(model, weights).run(missing, feeds)))
    return result


class Frontier:
    """The activations of one graph at one position of its node order, moved forward in stretches.

    ``outputs(graph, position)`` runs the rest of a (widened copy of the) graph from there: a trial
    that changed no node before ``position`` costs only the part after it.
    """

    def __init__(self, graph: gs.Graph, feeds: dict[str, np.ndarray], like: onnx.ModelProto):
        self.schedule = Schedule(graph)
        self.like = like
        self.feeds = {name: feeds[name] for name in self.schedule.inputs if name in feeds}
        self.position, self.values = 0, dict(self.feeds)

    def advance(self, graph: gs.Graph, position: int) -> None:
        """Move to ``position``, computing its live tensors on ``graph`` (from the start if backwards)."""
        if position < self.position:
            self.position, self.values = 0, dict(self.feeds)
        if position > self.position:
            live = self.schedule.live(position)
            self.values = run_stretch(graph, self.position, position, self.values, live, self.like)
            self.position = position

    def tensors(self, graph: gs.Graph, names: list[str], stop: int) -> dict[str, np.ndarray]:
        """Values of ``names`` (made before ``stop``) on ``graph``, from the current position."""
        return run_stretch(graph, self.position, max(stop, self.position), self.values, names, self.like)

    def outputs(self, graph: gs.Graph, changed_from: int | None = None) -> list[np.ndarray]:
        """The graph outputs of ``graph``, whose nodes before ``changed_from`` (default: the position)
        must be those the frontier was computed on; a change before the position runs it all."""
        start, values = self.position, self.values
        if changed_from is not None and changed_from < start:
            start, values = 0, self.feeds
        outputs = self.schedule.outputs
        values = run_stretch(graph, start, self.schedule.size, values, outputs, self.like)
        return [values[name] for name in outputs]
