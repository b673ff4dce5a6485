"""An ONNX model as a torch module whose tensors are tied back to the ONNX initializers.

Gradients of a loss with respect to initializers, on a calibration batch, go through torch:
onnx2torch converts the (normalised) graph, the module runs in eval mode (batch-norm statistics
are never updated), and every torch parameter or buffer is mapped to the initializer it was made
from, so a gradient or an edit names the ONNX tensor and its flat index. Needs the ``[train]``
extra (torch, onnx2torch, torchvision); torch is imported when a bridge is built.

    bridge = TorchBridge(model, feeds, threads=1)  # feeds: calibration inputs by input name
    outputs = bridge.forward(feeds)             # list of torch tensors, one per graph output
    grads = bridge.gradients(loss, feeds, names)  # {initializer name: ndarray of its shape}
    bridge.set_value(name, flat_index, value)   # edit a weight in every torch tensor holding it
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import UnsupportedGraphError
from .graph.normalize import normalize
from .torch_compat import prepare_torchvision


@dataclass(frozen=True)
class Binding:
    """One torch tensor holding an initializer: its module path and attribute, and whether it is
    the initializer transposed (onnx2torch turns a Gemm without transB into a Linear)."""

    module: str
    attribute: str
    transposed: bool


def convert(model: onnx.ModelProto):
    """The model as a torch module (onnx2torch, with its ONNX mapping): the one place it is converted."""
    prepare_torchvision()
    import onnx2torch

    return onnx2torch.convert(model, attach_onnx_mapping=True)


def _failed_node(exc: BaseException) -> str:
    """'Op (node name)' of the node onnx2torch was converting when ``exc`` was raised."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        node = tb.tb_frame.f_locals.get("onnx_node")
        if node is not None and hasattr(node, "operation_type"):
            found = f"{node.operation_type} ({node.unique_name})"
        tb = tb.tb_next
    return found or "unknown op"


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op thread count set to ``count`` (> 0) inside the block, restored after.

    On a small CPU shared with other work, OpenMP workers wait on each other at every op: on
    2 busy cores a step of the tiny transformer took 1.1 s with 2 threads and 0.02 s with one."""
    import torch

    previous = torch.get_num_threads()
    if count > 0 and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def pin_shapes(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs and intermediate values carry the static shapes they take
    on ``feeds``, measured with onnxruntime (onnx2torch needs the rank of some values, e.g. before
    a BatchNormalization fed by a Reshape whose shape is computed at run time); ``threads`` as
    for cpu_session."""
    from onnx import helper

    from .evaluate.damage import run

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {v.name for v in probe.graph.output}
    names = [o for n in probe.graph.node for o in n.output if o and o not in known]
    del probe.graph.value_info[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    values = dict(zip([v.name for v in probe.graph.output], run(probe, feeds, threads)))
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    del pinned.graph.value_info[:]
    for value in [*pinned.graph.input, *pinned.graph.output]:
        if value.name in feeds or value.name in values:
            _set_shape(value, (feeds.get(value.name) if value.name in feeds else values[value.name]).shape)
    for name in names:
        array = np.asarray(values[name])
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        pinned.graph.value_info.append(helper.make_tensor_value_info(name, elem, array.shape))
    return pinned


def _set_shape(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    dims = value.type.tensor_type.shape.dim
    del dims[:]
    for size in shape:
        dims.add().dim_value = int(size)


class TorchBridge:
    """``model`` converted to torch (eval mode, gradients off) with its initializers mapped.

    ``feeds`` (a calibration batch) is used only if the plain conversion fails: the inputs are
    then given the static shapes they take on the feeds and conversion retried. A model onnx2torch cannot convert
    raises UnsupportedGraphError naming the op. ``threads`` > 0 caps the torch and onnxruntime
    threads the bridge computes with (0: their defaults).
    """

    def __init__(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None, threads: int = 0):
        import torch

        self.threads = threads
        self.model = model if _is_normalized(model) else normalize(model)
        self.input_names = [v.name for v in self.model.graph.input
                            if v.name not in {t.name for t in self.model.graph.initializer}]
        try:
            module = convert(self.model)
        except Exception as first:  # onnx2torch raises many kinds (KeyError, its unsupported-op errors...)
            problem = f"onnx2torch cannot convert {_failed_node(first)}"
            if not feeds:
                raise UnsupportedGraphError(problem) from first
            try:
                module = convert(pin_shapes(self.model, feeds, threads))
            except Exception as exc:
                raise UnsupportedGraphError(problem) from exc
        self.module = module.eval()
        for tensor in [*self.module.parameters(), *self.module.buffers()]:
            tensor.requires_grad_(False)
        self.arrays = {t.name: numpy_helper.to_array(t) for t in self.model.graph.initializer}
        self.bindings = _bind(self.module, self.model, self.arrays)
        self._torch = torch

    # --- running ------------------------------------------------------------------------

    def forward(self, feeds: dict[str, np.ndarray]) -> list:
        """The graph outputs for ``feeds`` as torch tensors (in graph output order)."""
        args = [self._torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in self.input_names]
        with torch_threads(self.threads):
            out = self.module(*args)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def gradients(self, loss: Callable[[list], object], feeds: dict[str, np.ndarray],
                  names: list[str]) -> tuple[float, dict[str, np.ndarray]]:
        """``loss(forward(feeds))`` and its gradient w.r.t. each initializer in ``names`` (same
        shape as the initializer; summed over every torch tensor that holds it)."""
        tensors = {name: [self._tensor(b) for b in self.bindings.get(name, ())] for name in names}
        missing = [name for name, held in tensors.items() if not held]
        if missing:
            raise UnsupportedGraphError(f"initializer {missing[0]} has no torch tensor to differentiate")
        for held in tensors.values():
            for tensor in held:
                tensor.requires_grad_(True)
                tensor.grad = None
        try:
            with self._torch.enable_grad(), torch_threads(self.threads):
                value = loss(self.forward(feeds))
                value.backward()
            grads = {}
            for name in names:
                total = np.zeros(self.arrays[name].shape, np.float64)
                for binding, tensor in zip(self.bindings[name], tensors[name]):
                    grad = np.zeros(tensor.shape) if tensor.grad is None else tensor.grad.detach().numpy()
                    total += grad.T if binding.transposed else grad.reshape(total.shape)
                grads[name] = total
            return float(value.detach()), grads
        finally:
            for held in tensors.values():
                for tensor in held:
                    tensor.requires_grad_(False)
                    tensor.grad = None

    # --- editing ------------------------------------------------------------------------

    def set_value(self, name: str, index: int, value: float) -> None:
        """Set element ``index`` (flat, in ONNX layout) of initializer ``name`` everywhere it is held."""
        shape = self.arrays[name].shape
        position = np.unravel_index(index, shape)
        for binding in self.bindings[name]:
            tensor = self._tensor(binding)
            with self._torch.no_grad():
                if binding.transposed:
                    tensor[position[::-1]] = value
                else:
                    tensor.view(-1)[index] = value

    def set_values(self, name: str, indices: np.ndarray, values: np.ndarray) -> None:
        """``set_value`` for many elements of one initializer at once."""
        indices = np.asarray(indices, dtype=np.int64)
        position = tuple(self._torch.from_numpy(p) for p in np.unravel_index(indices, self.arrays[name].shape))
        for binding in self.bindings[name]:
            tensor = self._tensor(binding)
            update = self._torch.as_tensor(np.asarray(values), dtype=tensor.dtype)
            with self._torch.no_grad():
                if binding.transposed:
                    tensor[position[::-1]] = update
                else:
                    tensor.view(-1)[self._torch.from_numpy(indices)] = update

    def _tensor(self, binding: Binding):
        return getattr(self.module.get_submodule(binding.module), binding.attribute)


def _is_normalized(model: onnx.ModelProto) -> bool:
    return all(n.name for n in model.graph.node) and not any(n.op_type == "Constant" for n in model.graph.node)


def _same(tensor: np.ndarray, array: np.ndarray) -> bool | None:
    """True if ``tensor`` holds ``array`` as is, False if transposed (2-D), None if neither."""
    if tensor.size != array.size:
        return None
    if tensor.shape == array.shape and np.array_equal(tensor, array):
        return True
    if array.ndim == 2 and tensor.shape == array.shape[::-1] and np.array_equal(tensor, array.T):
        return False
    if np.array_equal(tensor.reshape(-1), array.reshape(-1)):
        return True
    return None


def _bind(module, model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> dict[str, list[Binding]]:
    """Initializer name -> the torch tensors made from it.

    A converted node is a submodule named after the node; its parameters and buffers are matched,
    in order, to the node's initializer inputs by value. Initializers onnx2torch feeds as graph
    constants live in ``initializers`` as ``onnx_initializer_<k>``, numbered in node order.
    """
    from onnx2torch.onnx_graph import OnnxGraph

    graph = OnnxGraph(model.graph)
    bindings: dict[str, list[Binding]] = {}
    submodules = dict(module.named_children())
    constant = 0
    for name, node in graph.nodes.items():
        child = submodules.get(name)
        if child is None:
            continue
        inputs = [v for v in node.input_values if v in arrays]
        used: set[str] = set()
        for path, tensor in [*child.named_parameters(), *child.named_buffers()]:
            if path.endswith("num_batches_tracked") or not tensor.is_floating_point():
                continue
            held = tensor.detach().numpy()
            for value in inputs:
                if value in used:
                    continue
                same = _same(held, arrays[value])
                if same is not None:
                    used.add(value)
                    owner, _, attribute = f"{name}.{path}".rpartition(".")
                    bindings.setdefault(value, []).append(Binding(owner, attribute, not same))
                    break
        mapping = getattr(child, "onnx_mapping", None)
        for value in (mapping.inputs if mapping is not None else ()):
            if value in arrays:
                attribute = f"onnx_initializer_{constant}"
                constant += 1
                held = getattr(submodules["initializers"], attribute).detach().numpy()
                if _same(held, arrays[value]) is True:
                    bindings.setdefault(value, []).append(Binding("initializers", attribute, False))
    return bindings
