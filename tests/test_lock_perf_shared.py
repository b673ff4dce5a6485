"""One copy of the weights during a lock: shapes inferred without them, decoded once, shared by trials.

Correctness checks only; the memory and time they save are measured by tools/bench_lock.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxlock.graph.normalize import import_graph, normalize
from onnxlock.passes.confusion import fallback_tries, share_weights

from conftest import MODELS


def full_inference_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True))
    return {name: tuple(t.shape) for name, t in graph.tensors().items() if isinstance(t, gs.Variable) and t.shape}


def test_import_graph_infers_the_shapes_full_inference_does_and_leaves_the_model_alone():
    model = normalize(onnx.load(MODELS / "digits_resnet.onnx"))
    before = model.SerializeToString()
    graph = import_graph(model)
    assert model.SerializeToString() == before  # the shapes were only lent for the import
    got = {name: tuple(t.shape) for name, t in graph.tensors().items() if isinstance(t, gs.Variable) and t.shape}
    expected = full_inference_shapes(model)
    assert len(expected) >= 10 and got == expected


def test_trial_copies_share_the_decoded_weights():
    model = normalize(onnx.load(MODELS / "digits_cnn.onnx"))
    graph = import_graph(model)
    share_weights(graph)
    copy = graph.copy()
    constants = {n: t for n, t in graph.tensors().items() if isinstance(t, gs.Constant) and t.values.size > 1000}
    assert len(constants) >= 3
    for name, tensor in constants.items():
        assert copy.tensors()[name].values is tensor.values  # no second copy of any weight
    np.testing.assert_array_equal(constants[next(iter(constants))].values,
                                  onnx.numpy_helper.to_array(
                                      next(t for t in model.graph.initializer if t.name == next(iter(constants)))))


def test_fallback_counts_get_half_the_draws_and_at_least_one():
    assert [fallback_tries(32, attempt) for attempt in range(3)] == [32, 16, 16]
    assert [fallback_tries(4, attempt) for attempt in range(3)] == [4, 2, 2]
    assert [fallback_tries(1, attempt) for attempt in range(3)] == [1, 1, 1]
