"""Quantized models (int8 weights, as edge deployments ship them): the default mask XORs their
integer weights and biases whole, in every format onnxruntime's quantizer writes (QDQ,
QOperator, dynamic). The locked model answers at chance; restore and load_session are bit-exact."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from onnxlock import load_session, lock_model, write_locked
from onnxlock.graph.io import load_model
from onnxlock.key import open_key
from onnxlock.passes.flip_signs import mask_values, quantized_tensors
from onnxlock.runtime import fast

from conftest import CHEAP_KDF, MODELS, PASSPHRASE, reference_keystream

SEED = bytes(range(32))


class Calibration(CalibrationDataReader):
    def __init__(self, pixels: np.ndarray):
        self.batches = iter([{"pixels": pixels[i:i + 1]} for i in range(len(pixels))])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> dict:
    """The digits CNN quantized to int8 three ways by onnxruntime's own quantizer."""
    folder = tmp_path_factory.mktemp("quantized")
    source = str(MODELS / "digits_cnn.onnx")
    with np.load(MODELS / "digits_calib.npz") as data:
        pixels = data["pixels"][:32]
    paths = {name: folder / f"{name}.onnx" for name in ("qdq", "qoperator", "dynamic")}
    for name, fmt in (("qdq", QuantFormat.QDQ), ("qoperator", QuantFormat.QOperator)):
        quantize_static(source, str(paths[name]), Calibration(pixels), quant_format=fmt, weight_type=QuantType.QInt8)
    quantize_dynamic(source, str(paths["dynamic"]), weight_type=QuantType.QInt8)
    return paths


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    with np.load(MODELS / "digits_test.npz") as data:
        return data["pixels"], data["labels"]


@pytest.mark.parametrize("fmt", ["qdq", "qoperator", "dynamic"])
def test_quantized_model_is_locked_at_chance_and_loads_bit_exact(fmt, quantized, held_out, tmp_path, monkeypatch):
    pixels, labels = held_out
    plain = ort.InferenceSession(str(quantized[fmt]), providers=["CPUExecutionProvider"])
    expected = plain.run(None, {"pixels": pixels})[0]
    assert np.mean(expected.argmax(-1) == labels) > 0.95
    locked = lock_model(quantized[fmt], passphrase=PASSPHRASE, kdf_params=CHEAP_KDF)
    write_locked(locked, tmp_path / "locked.onnx", tmp_path / "model.key")
    integers = set(quantized_tensors(load_model(quantized[fmt])))
    assert integers and integers <= set(open_key(locked.key, passphrase=PASSPHRASE)["tensors"])
    thief = ort.InferenceSession(str(tmp_path / "locked.onnx"), providers=["CPUExecutionProvider"])
    assert np.mean(thief.run(None, {"pixels": pixels})[0].argmax(-1) == labels) <= 0.2
    for inline in (fast.INLINE_BYTES, 0):  # restored whole, and through the skeleton as a large model is
        monkeypatch.setattr(fast, "INLINE_BYTES", inline)
        session = load_session(tmp_path / "locked.onnx", tmp_path / "model.key", passphrase=PASSPHRASE,
                               providers="cpu")
        assert session.run(None, {"pixels": pixels})[0].tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32])
def test_an_integer_is_masked_whole(dtype):
    values = np.arange(-50, 50).astype(dtype)
    masked = values.copy()
    mask_values(values, SEED, "w", out=masked)
    stream = np.frombuffer(reference_keystream(2, SEED, "w", values.nbytes), dtype=dtype)
    assert masked.tobytes() == (values ^ stream).tobytes()
    mask_values(masked, SEED, "w")
    assert masked.tobytes() == values.tobytes()


def test_onnxruntimes_quantized_layers_are_masked_too():
    """A dynamically quantized LSTM (its int8 weights and float bias) and a 4-bit MatMulNBits weight
    packed in uint8, as onnxruntime's quantizers and LLM exporters write them."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxlock.passes import MaskPass

    def tensor(name, dtype, shape):
        return numpy_helper.from_array(np.ones(shape, dtype=dtype), name)

    inits = [tensor("w_q", np.int8, (1, 16, 8)), tensor("r_q", np.int8, (1, 16, 4)), tensor("b", np.float32, (1, 32)),
             tensor("w_scale", np.float32, (1,)), tensor("w_zp", np.int8, (1,)), tensor("r_scale", np.float32, (1,)),
             tensor("r_zp", np.int8, (1,)), tensor("packed", np.uint8, (6, 1, 16)), tensor("scales", np.float32, (6,))]
    nodes = [helper.make_node("DynamicQuantizeLSTM", ["x", "w_q", "r_q", "b", "", "", "", "", "w_scale", "w_zp",
                                                      "r_scale", "r_zp"], ["y"], domain="com.microsoft", hidden_size=4),
             helper.make_node("MatMulNBits", ["a", "packed", "scales"], ["z"], domain="com.microsoft", K=32, N=6,
                              bits=4, block_size=32)]
    graph = helper.make_graph(nodes, "contrib", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8]),
                                                 helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    secret, _ = MaskPass(SEED).plan(model)
    assert {"w_q", "r_q", "b", "packed"} <= set(secret["tensors"])
    assert not {"w_zp", "r_zp"} & set(secret["tensors"])  # single values: zero points stay
    restored = MaskPass.restore(MaskPass.restore(model, secret), secret)
    assert [t.SerializeToString() for t in restored.graph.initializer] == \
        [t.SerializeToString() for t in model.graph.initializer]
