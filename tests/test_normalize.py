"""normalize(): constant folding, what it keeps, which opsets it refuses; shared and external weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock.errors import ModelFormatError
from onnxlock.evaluate.damage import run, synthetic_feeds
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnxlock.passes.confusion import WidenChannelsPass

from conftest import MODELS

RNG = np.random.default_rng(20)
W1 = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
B1 = RNG.standard_normal(4).astype(np.float32)
W2 = RNG.standard_normal((5, 4, 3, 3)).astype(np.float32)
PADS = {"pads": [1, 1, 1, 1]}


def model_of(nodes, initializers=(), opset: int = 17, x_channels: int = 3, y_channels: int = 5,
             extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", x_channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", y_channels, 8, 8])],
        [numpy_helper.from_array(value, name) for name, value in initializers])
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets,
                             ir_version=helper.find_min_ir_version_for(opsets[:1], ignore_unknown=True))


def conv_relu_conv(opset: int = 17) -> onnx.ModelProto:
    return model_of([
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], **PADS),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], **PADS),
    ], [("w1", W1), ("b1", B1), ("w2", W2)], opset)


def assert_same_outputs(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    feeds = synthetic_feeds(a)
    for want, got in zip(run(a, feeds), run(b, feeds), strict=True):
        assert np.array_equal(want, got)


def assert_lock_restore_exact(model: onnx.ModelProto) -> onnx.ModelProto:
    """Lock with the pass, check the outputs moved, restore, check outputs and weights exact; returns the lock."""
    result = WidenChannelsPass(ratio=0.5, seed=0, tries=1)(model)
    feeds = synthetic_feeds(model)
    original, locked = run(model, feeds), run(result.model, feeds)
    assert max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(original, locked)) > 1e-3
    restored = WidenChannelsPass.restore(result.model, result.secret)
    for want, got in zip(original, run(restored, feeds), strict=True):
        assert np.array_equal(want, got)
    after = initializer_arrays(restored)
    for name, value in initializer_arrays(normalize(model)).items():
        assert after[name].shape == value.shape and after[name].tobytes() == value.tobytes(), name
    return result.model


# --- constant folding ---------------------------------------------------------------------------

def test_constant_nodes_become_initializers():
    model = model_of([
        helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(W1)),
        helper.make_node("Constant", [], ["b1"], value_floats=B1.tolist()),
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], **PADS),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(W2)),
        helper.make_node("Conv", ["r", "w2"], ["y"], **PADS),
    ])
    normalized = normalize(model)
    assert [n.op_type for n in normalized.graph.node] == ["Conv", "Relu", "Conv"]
    inits = initializer_arrays(normalized)
    assert set(inits) == {"w1", "b1", "w2"}
    for name, value in (("w1", W1), ("b1", B1), ("w2", W2)):
        assert inits[name].dtype == value.dtype and inits[name].tobytes() == value.tobytes()
    assert_same_outputs(model, normalized)
    assert_lock_restore_exact(model)


@pytest.mark.parametrize("shape_from", ["initializer", "constant"])
def test_constant_of_shape_folds(shape_from):
    fill = numpy_helper.from_array(np.array([0.25], np.float32))
    shape_node = [helper.make_node("Constant", [], ["bshape"], value_ints=[4])] if shape_from == "constant" else []
    shape_init = [("bshape", np.array([4], np.int64))] if shape_from == "initializer" else []
    model = model_of([
        *shape_node,
        helper.make_node("ConstantOfShape", ["bshape"], ["b1"], value=fill),
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], **PADS),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], **PADS),
    ], [("w1", W1), ("w2", W2), *shape_init])
    normalized = normalize(model)
    assert [n.op_type for n in normalized.graph.node] == ["Conv", "Relu", "Conv"]
    b1 = initializer_arrays(normalized)["b1"]
    assert b1.dtype == np.float32 and np.array_equal(b1, np.full(4, 0.25, np.float32))
    assert_same_outputs(model, normalized)


def test_normalize_keeps_model_fields():
    model = conv_relu_conv()
    model.producer_name, model.producer_version = "unit-test", "1.2.3"
    model.doc_string, model.model_version, model.domain = "a doc", 7, "org.example"
    helper.set_model_props(model, {"licence": "proprietary", "author": "someone"})
    model.opset_import.append(helper.make_opsetid("com.example.unused", 3))
    normalized = normalize(model)
    assert (normalized.producer_name, normalized.producer_version) == ("unit-test", "1.2.3")
    assert (normalized.doc_string, normalized.model_version, normalized.domain) == ("a doc", 7, "org.example")
    assert normalized.ir_version == model.ir_version
    assert {(p.key, p.value) for p in normalized.metadata_props} == {("licence", "proprietary"), ("author", "someone")}
    assert {(o.domain, o.version) for o in normalized.opset_import} == {("", 17), ("com.example.unused", 3)}
    assert [t.name for t in normalized.graph.input] == ["x"] and [t.name for t in normalized.graph.output] == ["y"]
    assert all(n.name for n in normalized.graph.node)
    assert len({n.name for n in normalized.graph.node}) == len(normalized.graph.node)


def test_normalize_does_not_modify_its_input():
    model = model_of([
        helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(W1)),
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], **PADS),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], **PADS),
    ], [("b1", B1), ("w2", W2)])
    before = model.SerializeToString()
    normalize(model)
    assert model.SerializeToString() == before


def test_a_shapeless_value_info_entry_for_an_output_does_not_erase_its_shape():
    """Some exporters list graph outputs in value_info too, without a shape (ddddocr's
    common_old.onnx): the output keeps its declared shape, and the checker passes."""
    model = conv_relu_conv()
    model.graph.value_info.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    model.graph.value_info.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, None))
    before = model.SerializeToString()
    normalized = normalize(model)
    assert model.SerializeToString() == before  # the entries were lent aside, not dropped from the input
    assert normalized.graph.output[0].type == model.graph.output[0].type
    assert normalized.graph.input[0].type == model.graph.input[0].type
    assert_lock_restore_exact(model)


# --- shared weights ------------------------------------------------------------------------------

def test_shared_initializer_is_cloned_when_widened():
    """conv1 and conv2 read one weight: conv1 grows it on axis 0 (new filters), conv2 on axis 1."""
    shared = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)
    model = model_of([
        helper.make_node("Conv", ["x", "w"], ["h"], **PADS),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["h2"], **PADS),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w2"], ["y"], **PADS),
    ], [("w", shared), ("w2", W2)], x_channels=4)
    locked = assert_lock_restore_exact(model)
    convs = [n for n in locked.graph.node if n.op_type == "Conv"]
    assert convs[0].input[1] != convs[1].input[1]  # no longer one tensor: each conv has its own copy
    widths = {t.name: tuple(t.dims) for t in locked.graph.initializer}
    assert widths[convs[0].input[1]] != widths[convs[1].input[1]]


def test_shared_initializer_between_branches():
    """Two parallel convs share a weight; widening one branch must leave the other reading the original."""
    model = model_of([
        helper.make_node("Conv", ["x", "w1"], ["a"], **PADS),
        helper.make_node("Conv", ["x", "w1"], ["b"], **PADS),
        helper.make_node("Relu", ["a"], ["ra"]),
        helper.make_node("Sigmoid", ["b"], ["sb"]),
        helper.make_node("Conv", ["ra", "w2"], ["ya"], **PADS),
        helper.make_node("Conv", ["sb", "w2b"], ["yb"], **PADS),
        helper.make_node("Sub", ["ya", "yb"], ["y"]),
    ], [("w1", W1), ("w2", W2), ("w2b", W2[::-1].copy())])
    locked = assert_lock_restore_exact(model)
    first, second = [n.input[1] for n in locked.graph.node if n.op_type == "Conv"][:2]
    assert first != second


# --- opsets --------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [10, 23])
def test_unsupported_opsets_are_refused(opset):
    model = conv_relu_conv(opset)
    with pytest.raises(ModelFormatError, match=f"opset {opset} is not supported .*11 to 22"):
        normalize(model)
    with pytest.raises(ModelFormatError, match=f"opset {opset} is not supported"):
        WidenChannelsPass(ratio=0.5, seed=0, tries=1)(model)


@pytest.mark.parametrize("opset", [11, 22])
def test_supported_opset_bounds(opset):
    model = conv_relu_conv(opset)
    assert [o.version for o in normalize(model).opset_import if o.domain == ""] == [opset]
    assert_lock_restore_exact(model)


# --- external data ------------------------------------------------------------------------------

def test_external_data_model_locks_and_restores(tmp_path):
    model = conv_relu_conv()
    path = tmp_path / "net.onnx"
    onnx.save_model(conv_relu_conv(), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="net.weights", size_threshold=0)
    assert (tmp_path / "net.weights").stat().st_size >= (W1.size + B1.size + W2.size) * 4
    assert path.stat().st_size < W1.nbytes  # the weights really live outside the .onnx file
    loaded = load_model(path)
    assert all(t.data_location != TensorProto.EXTERNAL for t in loaded.graph.initializer)
    assert {k: v.tobytes() for k, v in initializer_arrays(loaded).items()} == {
        "w1": W1.tobytes(), "b1": B1.tobytes(), "w2": W2.tobytes()}
    assert_same_outputs(model, loaded)
    assert_lock_restore_exact(loaded)


def test_external_data_missing_file_is_a_format_error(tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save_model(conv_relu_conv(), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="net.weights", size_threshold=0)
    (tmp_path / "net.weights").unlink()
    with pytest.raises(ModelFormatError, match="external data"):
        load_model(path)


def test_exports_stand_in_for_large_weights_and_copy_each_once_exactly():
    """export_graph gives gs's own export, byte for byte, while gs never copies the large weights;
    a weightless export leaves stand-ins without data, and ``lend`` points them back at the weights."""
    import onnx_graphsurgeon as gs

    from onnxlock.graph.normalize import export_graph, import_graph, is_small, lend

    model = normalize(load_model(MODELS / "digits_cnn.onnx"))
    weights = {t.name: t for t in model.graph.initializer if not is_small(t)}
    assert weights  # the test needs large weights
    graph = gs.import_onnx(model)
    ours = export_graph(graph, model)
    plain = gs.export_onnx(graph, do_type_check=False)
    del plain.graph.value_info[:]
    assert [t.SerializeToString() for t in ours.graph.initializer] == \
        [t.SerializeToString() for t in plain.graph.initializer]
    light = export_graph(graph, model, weights=weights, weightless=True)
    stand_ins = [t for t in light.graph.initializer if t.name in weights]
    assert stand_ins and not any(t.raw_data or t.float_data for t in stand_ins)
    lent = lend(import_graph(light), weights)
    values = {name: t.values for name, t in lent.tensors().items() if name in weights}
    assert all(np.array_equal(values[name], numpy_helper.to_array(weights[name])) for name in weights)
    with pytest.raises(ValueError):
        export_graph(graph, model, weightless=True)
