"""What makes locks of large models cheap, checked for correctness (speed lives in tools/bench_lock.py).

Trials run only the graph from the widened group on, from cached frontier activations, with the
weights handed to onnxruntime in memory; lock_model restores the model once.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock import lock_model
from onnxlock.evaluate.damage import cpu_session, synthetic_feeds
from onnxlock.evaluate.subgraph import Frontier, Schedule, run_stretch, stretch_model, weightless
from onnxlock.graph.normalize import import_graph, normalize
from onnxlock.passes import confusion, restorers

from conftest import CHEAP_KDF, MODELS, PASSPHRASE


def two_branch_model(width: int = 512) -> onnx.ModelProto:
    """x -> Gemm -> Relu -> Gemm (+ skip from the first Relu) -> two outputs; 2 MiB of weights."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) * 0.05, name)
             for name in ("w1", "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["g"], name="mm2"),
             helper.make_node("Add", ["g", "r"], ["y"], name="add"),
             helper.make_node("ReduceMax", ["r"], ["peak"], name="peak", keepdims=0)]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, width]),
                               helper.make_tensor_value_info("peak", TensorProto.FLOAT, [])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("model", [two_branch_model(), onnx.load(MODELS / "digits_resnet.onnx")],
                         ids=["two_branch", "digits_resnet"])
def test_outputs_from_every_cut_equal_a_full_run(model):
    original = normalize(model)
    graph = import_graph(original)
    feeds = synthetic_feeds(original)
    expected = cpu_session(original).run(None, feeds)
    frontier = Frontier(graph, feeds, original)
    for position in range(len(graph.nodes) + 1):
        frontier.advance(graph, position)
        assert set(frontier.values) <= set(Schedule(graph).live(position)) | set(feeds)
        for want, got in zip(expected, frontier.outputs(graph), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_stretch_model_carries_no_large_weight():
    original = normalize(two_branch_model())
    graph = import_graph(original)
    weight_bytes = sum(np.prod(t.dims) * 4 for t in original.graph.initializer)
    model, feeds, weights = stretch_model(graph, 2, len(graph.nodes), {"r": np.ones((4, 512), np.float32)},
                                          ["y"], original)
    assert weight_bytes >= 2 << 20 and model.ByteSize() < 4096  # the model is the nodes; weights travel apart
    assert list(weights) == ["w2"] and list(feeds) == ["r"]
    y = run_stretch(graph, 2, len(graph.nodes), {"r": np.ones((4, 512), np.float32)}, ["y"], original)["y"]
    w2 = numpy_helper.to_array(original.graph.initializer[1])
    np.testing.assert_allclose(y, np.ones((4, 512)) @ w2 + 1, rtol=1e-5, atol=1e-5)


def test_weightless_copy_checks_like_the_model():
    model = normalize(two_branch_model())
    light = weightless(model)
    assert light.ByteSize() < model.ByteSize() / 100
    onnx.checker.check_model(light, full_check=True)
    broken = weightless(model)
    broken.graph.node[2].input[1] = "w1_missing"
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(broken, full_check=True)


def test_lock_model_restores_the_full_model_once(monkeypatch):
    model = onnx.load(MODELS / "digits_cnn.onnx")
    sizes = []
    real_narrow = confusion.narrow

    def counting(restored, groups, *, in_place=False):
        sizes.append(len(restored.graph.initializer))
        return real_narrow(restored, groups, in_place=in_place)

    monkeypatch.setattr(confusion, "narrow", counting)  # the pass's own check
    monkeypatch.setattr(restorers, "narrow", counting)  # the restore
    locked = lock_model(model, passphrase=PASSPHRASE, seed=0, kdf_params=CHEAP_KDF, tries=2, method="confusion,signflip")
    full = len(onnx.load_from_string(locked.model).graph.initializer)
    assert sizes.count(full) == 1  # the check inside the pass narrows only the tensors it widened
    assert len(sizes) == 2
