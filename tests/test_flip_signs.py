"""FlipSignsPass: half of every layer weight's signs flipped by a keyed stream; restore is bit-exact."""

from __future__ import annotations

import base64

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxlock.errors import KeyFormatError, ModelMismatchError, UnsupportedGraphError
from onnxlock.evaluate.damage import run
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnxlock.passes import restore, stack_secrets, WidenChannelsPass
from onnxlock.passes.flip_signs import FlipSignsPass, keystream_bits, weight_tensors

from conftest import MODELS

DIGITS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]


@pytest.fixture(scope="module")
def held_out() -> tuple[dict, np.ndarray]:
    with np.load(MODELS / "digits_test.npz") as data:
        return {"pixels": data["pixels"]}, data["labels"]


@pytest.mark.parametrize("name", DIGITS)
def test_locked_is_at_chance_and_restore_is_bit_exact(name, held_out):
    feeds, labels = held_out
    original = normalize(load_model(MODELS / f"{name}.onnx"))
    result = FlipSignsPass()(original)
    locked_accuracy = float(np.mean(run(result.model, feeds)[0].argmax(-1) == labels))
    assert locked_accuracy <= 0.10 + 0.10  # chance (10 classes) + 10 points
    before, after = initializer_arrays(original), initializer_arrays(restore(result.model, result.secret))
    assert before.keys() == after.keys()
    assert all(before[n].tobytes() == after[n].tobytes() for n in before)
    assert np.array_equal(run(original, feeds)[0], run(restore(result.model, result.secret), feeds)[0])


def test_half_the_signs_flip_and_magnitudes_stay(held_out):
    original = normalize(load_model(MODELS / "digits_cnn.onnx"))
    result = FlipSignsPass()(original)
    before, after = initializer_arrays(original), initializer_arrays(result.model)
    flips = []
    for name in weight_tensors(original):
        assert np.array_equal(np.abs(before[name]), np.abs(after[name]))
        flips.append((np.signbit(before[name]) != np.signbit(after[name])).reshape(-1))
    changed = np.mean(np.concatenate(flips))  # ~17k fair coins: 0.5 +- 0.004
    assert 0.48 < changed < 0.52, changed
    untouched = set(before) - set(weight_tensors(original))
    assert untouched and all(before[n].tobytes() == after[n].tobytes() for n in untouched)


def test_keystreams_differ_across_tensors_and_locks():
    seed = bytes(range(32))
    a = keystream_bits(seed, "w1", 4096)
    assert np.array_equal(a, keystream_bits(seed, "w1", 4096))
    assert np.mean(a != keystream_bits(seed, "w2", 4096)) > 0.4
    assert np.mean(a != keystream_bits(bytes(32), "w1", 4096)) > 0.4
    original = normalize(load_model(MODELS / "digits_mlp.onnx"))
    first, second = FlipSignsPass()(original), FlipSignsPass()(original)
    assert first.secret["seed"] != second.secret["seed"]


def test_stacks_over_confusion_channels(held_out):
    feeds, _ = held_out
    original = normalize(load_model(MODELS / "digits_cnn.onnx"))
    widened = WidenChannelsPass(ratio=0.05, seed=0, tries=1)(original)
    flipped = FlipSignsPass()(widened.model)
    secret = stack_secrets([widened.secret, flipped.secret])
    assert np.array_equal(run(original, feeds)[0], run(restore(flipped.model, secret), feeds)[0])


def test_half_precision_and_special_values_round_trip():
    values = np.array([[0.0, -0.0, np.inf, -np.inf], [np.nan, 1e-8, -65504.0, 3.5]], dtype=np.float16)
    weight = numpy_helper.from_array(values, "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [1, 2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = FlipSignsPass(seed=bytes(32))(model)
    restored = numpy_helper.to_array(restore(result.model, result.secret).graph.initializer[0])
    assert restored.tobytes() == values.tobytes()


@pytest.mark.parametrize("secret, error", [
    ({"method": "signflip", "seed": "eA==", "tensors": ["w"]}, KeyFormatError),
    ({"method": "signflip", "seed": base64.b64encode(bytes(32)).decode(), "tensors": "w"}, KeyFormatError),
    ({"method": "signflip", "seed": base64.b64encode(bytes(32)).decode(), "tensors": ["w", "w"]}, KeyFormatError),
    ({"method": "signflip", "seed": base64.b64encode(bytes(32)).decode(), "tensors": ["nonesuch"]}, ModelMismatchError),
])
def test_malformed_or_foreign_secrets_are_refused(secret, error):
    with pytest.raises(error):
        restore(normalize(load_model(MODELS / "digits_mlp.onnx")), secret)


def test_a_graph_without_weights_is_refused():
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])])
    with pytest.raises(UnsupportedGraphError):
        FlipSignsPass()(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_keystream_known_answer():
    """Pins the derivation (HKDF-SHA256 info 'onnxlock signflip v1\\0' + name, ChaCha20 zero nonce,
    bits little-endian within each byte) so a second implementation can check itself against it."""
    bits = keystream_bits(bytes(range(32)), "conv1.weight", 32)
    assert "".join(map(str, bits)) == "11111011011011000001001011100001"


@pytest.mark.parametrize("info_length", [0, 1, 31, 32, 33, 200])
def test_hkdf_is_rfc5869(info_length):
    """The standard-library HKDF gives cryptography's HKDF-SHA256 bytes (no salt, 32 bytes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from onnxlock.passes.flip_signs import hkdf_sha256

    rng = np.random.default_rng(info_length)
    secret, info = rng.bytes(32), rng.bytes(info_length)
    assert hkdf_sha256(secret, info) == HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(secret)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_flip_tensor_is_the_same_on_raw_bytes_and_on_typed_fields(dtype):
    """The raw-bytes shortcut flips exactly what the array path does (float_data holds no raw bytes)."""
    from onnxlock.passes.flip_signs import flip_tensor

    values = np.random.default_rng(0).standard_normal((7, 5)).astype(dtype)
    raw = numpy_helper.from_array(values, "w")
    typed = onnx.helper.make_tensor("w", raw.data_type, values.shape, values.ravel().tolist())
    assert raw.HasField("raw_data") and not typed.HasField("raw_data")
    transform = FlipSignsPass.transform_for({"seed": base64.b64encode(bytes(range(32))).decode(), "tensors": ["w"]})
    flip_tensor(raw, transform)
    flip_tensor(typed, transform)
    flipped = numpy_helper.to_array(raw)
    assert np.array_equal(flipped.view(np.uint8), numpy_helper.to_array(typed).view(np.uint8))
    assert (np.signbit(flipped) != np.signbit(values)).any() and np.array_equal(np.abs(flipped), np.abs(values))
