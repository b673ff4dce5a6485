"""torchbridge: onnx2torch conversion matches onnxruntime, every weight is mapped, gradients are right."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxlock.errors import UnsupportedGraphError
from onnxlock.evaluate.damage import run
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import normalize
from onnxlock.passes.advparams import weight_names
from onnxlock.torch_compat import prepare_torchvision

from conftest import MODELS

torch = pytest.importorskip("torch")
prepare_torchvision()  # before onnx2torch imports torchvision
pytest.importorskip("onnx2torch")
from onnxlock.torchbridge import TorchBridge  # noqa: E402


def _outputs(bridge, feeds):
    with torch.no_grad():
        return [o.numpy() for o in bridge.forward(feeds)]


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"])
def test_digits_models_match_onnxruntime_and_every_weight_is_mapped(name, digits):
    model = normalize(load_model(MODELS / f"{name}.onnx"))
    feeds = {"pixels": digits["pixels"][:32]}
    bridge = TorchBridge(model, feeds)
    for ours, theirs in zip(_outputs(bridge, feeds), run(model, feeds)):
        assert np.abs(ours - theirs).max() < 1e-4
    assert set(weight_names(model)) <= set(bridge.bindings)


def test_ocr_cls_converts(tmp_path):
    ocr = pytest.importorskip("onnxlock.evaluate.ocr")
    model = normalize(onnx.load(ocr.ocr_model_paths()["cls"]))
    feeds = {"x": ocr.cls_input([img for _, img in ocr.render_text_lines(4)])}
    bridge = TorchBridge(model, feeds)
    assert np.abs(_outputs(bridge, feeds)[0] - run(model, feeds)[0]).max() < 1e-4
    assert set(weight_names(model)) <= set(bridge.bindings)


def test_gradient_matches_finite_difference_and_set_value_edits(digits):
    model = normalize(load_model(MODELS / "digits_mlp.onnx"))
    feeds = {"pixels": digits["pixels"][:16]}
    bridge = TorchBridge(model, feeds)
    name = weight_names(model)[-1]
    loss = lambda outputs: outputs[0].pow(2).mean()  # noqa: E731
    value, grads = bridge.gradients(loss, feeds, [name])
    index = int(np.abs(grads[name]).argmax())
    original = float(bridge.arrays[name].reshape(-1)[index])
    step = 1e-2
    bridge.set_value(name, index, original + step)
    with torch.no_grad():
        moved = float(loss(bridge.forward(feeds)))
    bridge.set_value(name, index, original)
    assert grads[name].shape == bridge.arrays[name].shape
    assert abs((moved - value) / step - grads[name].reshape(-1)[index]) < 0.05 * abs(grads[name].reshape(-1)[index])
    assert abs(float(loss(bridge.forward(feeds)).detach()) - value) < 1e-6


def test_unconvertible_op_is_named():
    node = helper.make_node("Hardmax", ["x"], ["y"], name="pick")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedGraphError, match="Hardmax"):
        TorchBridge(model, {"x": np.ones((2, 3), np.float32)})


def test_a_stack_names_the_pass_that_cannot_lock_the_model():
    """confusion, which a stack may do without, is skipped; advparams, which it may not, fails
    the lock, and the error says it was advparams (found on ddddocr's LSTM OCR model)."""
    from onnx import numpy_helper

    from onnxlock import lock_model

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Hardmax", ["h"], ["y"], name="pick")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedGraphError, match=r"^advparams: onnx2torch cannot convert Hardmax \(pick\)$"):
        lock_model(model, passphrase="a long enough passphrase", method="confusion,advparams", seed=0)


def test_thread_cap_holds_while_computing_and_is_restored(digits):
    model = normalize(load_model(MODELS / "digits_cnn.onnx"))
    feeds = {"pixels": digits["pixels"][:8]}
    bridge = TorchBridge(model, feeds, threads=1)
    before, seen = torch.get_num_threads(), []

    def loss(outputs):
        seen.append(torch.get_num_threads())
        return outputs[0].sum()

    _, grads = bridge.gradients(loss, feeds, weight_names(model)[:1])
    assert seen == [1] and torch.get_num_threads() == before
    assert np.abs(grads[weight_names(model)[0]]).max() > 0
