"""The crashes of issue 7, each on the smallest graph that reproduced it: now a lock or a one-line error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import CHEAP_KDF, PASSPHRASE
from onnxlock import OnnxlockError, lock_model
from onnxlock.evaluate.damage import run, synthetic_feeds
from onnxlock.graph.groups import find_groups
from onnxlock.graph.normalize import import_graph, normalize
from onnxlock.passes import restore
from onnxlock.passes.confusion import WidenChannelsPass

RNG = np.random.default_rng(7)


def weights(**shapes: tuple) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(RNG.standard_normal(s).astype(np.float32), n) for n, s in shapes.items()]


def model_of(nodes, inits, inputs, outputs, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "repro", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def widenable(model: onnx.ModelProto) -> list[str]:
    return [g.name for g in find_groups(import_graph(normalize(model))) if g.widenable]


def assert_locks_exactly(model: onnx.ModelProto, ratio: float = 0.5) -> None:
    """Lock, check the outputs moved, restore from the secret alone, check outputs bit-exact."""
    result = WidenChannelsPass(ratio=ratio, seed=0, tries=2)(model)
    feeds = synthetic_feeds(model)
    original = run(model, feeds)
    assert any(not np.array_equal(a, b) for a, b in zip(original, run(result.model, feeds)))
    for want, got in zip(original, run(restore(result.model, result.secret), feeds), strict=True):
        assert want.tobytes() == got.tobytes()


def dynamic_batch_flatten() -> onnx.ModelProto:
    """YOLOv8 export pattern: x.view(x.shape[0], C, -1) with a dynamic batch (Shape -> Gather scalar)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Shape", ["r1"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),  # 0-d output
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["r1", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2"], ["y"], transB=1),
    ]
    inits = weights(w1=(4, 3, 3, 3), w2=(5, 4 * 16)) + [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array(np.array([-1], np.int64), "rest"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    return model_of(nodes, inits, [x], [y])


def test_shape_gather_scalar_no_zero_division():
    """Was: ZeroDivisionError in groups.source_axis (a 0-d Gather taken for an embedding lookup)."""
    model = dynamic_batch_flatten()
    assert widenable(model) == ["c1"]  # the Shape reads only the batch size: the conv still widens
    assert_locks_exactly(model)


def identity_routed_biases() -> onnx.ModelProto:
    """TorchScript resnet18 pattern: one all-zero bias initializer fed to two Convs through Identity nodes."""
    nodes = [
        helper.make_node("Identity", ["zeros"], ["b1"]),
        helper.make_node("Identity", ["zeros"], ["b2"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["y"]),
    ]
    inits = weights(w1=(4, 3, 3, 3), w2=(4, 4, 3, 3), w3=(2, 4, 1, 1))
    inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "zeros"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])
    return model_of(nodes, inits, [x], [y])


def test_identity_routed_duplicate_biases():
    """Was: AttributeError 'Variable' object has no attribute 'values' in widen.py."""
    model = identity_routed_biases()
    normalized = normalize(model)
    assert "Identity" not in {n.op_type for n in normalized.graph.node}
    assert sorted(widenable(model)) == ["c1", "c2"]
    assert_locks_exactly(model)


def strided_slice_classifier() -> onnx.ModelProto:
    """jax2tf pattern: Dense, then a Slice named strided_slice over every axis taking token 0."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Slice", ["r", "begin", "end", "axes", "strides"], ["first"], name="strided_slice"),
        helper.make_node("Reshape", ["first", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w2"], ["y"]),
    ]
    inits = weights(w1=(6, 8), w2=(8, 3)) + [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in [
        ("begin", [0, 0, 0]), ("end", [1, 1, 8]), ("axes", [0, 1, 2]), ("strides", [1, 1, 1]), ("shape", [1, 8])]]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    return model_of(nodes, inits, [x], [y])


def test_strided_slice_passes_channels():
    """Was: 'Slice node strided_slice: no widening rule for this op', the whole model refused."""
    model = strided_slice_classifier()
    assert widenable(model) == ["h"]
    assert_locks_exactly(model)


def test_strided_slice_end_grows_and_is_restored():
    """The Slice's finite end on the feature axis grows with the widening, and is restored."""
    model = strided_slice_classifier()
    result = WidenChannelsPass(ratio=0.5, seed=0, tries=1)(model)
    ends = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}["end"]
    assert ends[2] > 8
    restored = {t.name: numpy_helper.to_array(t) for t in restore(result.model, result.secret).graph.initializer}
    assert restored["end"].tolist() == [1, 1, 8]


def corrupted(kind: str) -> onnx.ModelProto:
    model = strided_slice_classifier()
    weight = next(t for t in model.graph.initializer if t.name == "w2")
    if kind == "shape":  # a weight whose stored dims no longer fit the graph
        weight.CopyFrom(numpy_helper.from_array(RNG.standard_normal((7, 3)).astype(np.float32), "w2"))
    else:  # raw bytes cut short
        weight.raw_data = weight.raw_data[:10]
    return model


@pytest.mark.parametrize("kind", ["shape", "truncated"])
def test_corrupted_weights_one_line_error(kind):
    """Was: onnx InferenceError traceback out of normalize()."""
    with pytest.raises(OnnxlockError) as info:
        normalize(corrupted(kind))
    assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize("kind", ["shape", "truncated"])
def test_corrupted_weights_lock_refused(kind, tmp_path):
    with pytest.raises(OnnxlockError):
        lock_model(corrupted(kind), passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, tries=1)
