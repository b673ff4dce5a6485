"""MaskPass (``mask``): every bit of each layer weight but the exponent's top one XORed with a keyed
stream. Restore is bit-exact (through the loader too); nothing becomes Inf or NaN and no value
crosses 2 in magnitude; the keystream is the mask's own (not the sign flip's); against the base
model the value mask leaves the thief nothing beyond that base."""

from __future__ import annotations

import base64

import numpy as np
import onnx
import pytest

from onnxlock import load_session, lock_model, write_locked
from onnxlock.errors import KeyFormatError
from onnxlock.evaluate.attacks.base_model import base_attack
from onnxlock.evaluate.damage import run
from onnxlock.graph.io import load_model, parse_model
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnx import TensorProto, helper, numpy_helper
from onnxlock.passes import MaskPass, restore
from onnxlock.passes.flip_signs import (FLIP_CHUNK, MASK_FIELDS, flip_signs, mask_values, parameter_tensors,
                                        weight_tensors)

from conftest import CHEAP_KDF, MODELS, PASSPHRASE, reference_keystream

CHANCE = 0.1
SEED = bytes(range(32))


@pytest.fixture(scope="module")
def held_out() -> tuple[dict, np.ndarray]:
    with np.load(MODELS / "digits_test.npz") as data:
        return {"pixels": data["pixels"]}, data["labels"]


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_locked_is_at_chance_and_restore_is_bit_exact(name, held_out):
    feeds, labels = held_out
    original = normalize(load_model(MODELS / f"{name}.onnx"))
    result = MaskPass()(original)
    assert float(np.mean(run(result.model, feeds)[0].argmax(-1) == labels)) <= CHANCE + 0.1
    before, after = initializer_arrays(original), initializer_arrays(restore(result.model, result.secret))
    assert all(before[n].tobytes() == after[n].tobytes() for n in before)
    locked = initializer_arrays(result.model)
    assert set(weight_tensors(original)) < set(parameter_tensors(original))  # biases and norms too
    for n in parameter_tensors(original):  # every value changed bits, none past the bound, all finite
        assert np.isfinite(locked[n]).all() and np.abs(locked[n]).max() < 2
        assert np.mean(locked[n] != before[n]) > 0.99


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_mask_is_its_own_inverse_and_keeps_the_exponent_top_bit(dtype):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(3 * FLIP_CHUNK + 5) * 0.1, [0.0, -0.0, 3.5, -1e4]]).astype(dtype)
    masked = np.empty_like(values)
    mask_values(values, SEED, "w", out=masked)
    again = np.empty_like(values)
    mask_values(masked, SEED, "w", out=again)
    assert again.tobytes() == values.tobytes()
    words = f"u{values.itemsize}"
    top = (MASK_FIELDS[values.itemsize] ^ ((1 << 8 * values.itemsize) - 1))  # the one bit kept
    assert np.array_equal(values.view(words) & top, masked.view(words) & top)
    assert np.isfinite(masked).all()
    changed = (values.view(words) ^ masked.view(words)) & MASK_FIELDS[values.itemsize]
    bits = np.unpackbits(changed.view(np.uint8)).mean() * 8 * values.itemsize / (8 * values.itemsize - 1)
    assert 0.48 < bits < 0.52  # each masked bit flips about half the time


@pytest.mark.parametrize("version, want", [
    (1, [668881843, 2261184837, 2650144045, 3090830311, 2994595846, 2702756883, 2787863222, 3185767050]),
    (2, [506017723, 2597598161, 398085375, 754224064, 711325780, 2219141394, 702501394, 367697147])])
def test_mask_known_answer(version, want):
    """Pins each keystream version (one keystream word a value, every bit but the exponent's top
    one): keys written before must open. Version 2 is what a lock writes."""
    values = np.arange(8, dtype=np.float32) / 4
    masked = np.empty_like(values)
    mask_values(values, bytes(range(32)), "conv1.weight", out=masked, version=version)
    assert masked.view(np.uint32).tolist() == want
    stream = np.frombuffer(reference_keystream(version, bytes(range(32)), "conv1.weight", 32), np.uint32)
    assert np.array_equal(masked.view(np.uint32), values.view(np.uint32) ^ (stream & MASK_FIELDS[4]))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f2", "<f8"])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("size", [1000, 40])  # several chunks (a streamed cipher), one chunk (one call)
def test_mask_over_several_chunks_is_the_keystream_xor(version, dtype, in_place, size, monkeypatch):
    """Chunk by chunk (the cipher runs on, its buffer is reused), or in one call, in place or into
    out, in either byte order: values ^ (keystream & field), and its own inverse."""
    from onnxlock.passes import flip_signs as module

    monkeypatch.setattr(module, "FLIP_CHUNK", 64)
    values = np.random.default_rng(1).standard_normal(size).astype(dtype)
    words = np.dtype(f"u{values.itemsize}").newbyteorder(values.dtype.byteorder)
    stream = reference_keystream(version, SEED, "w", values.nbytes)
    want = (values.view(words) ^ (np.frombuffer(stream, dtype=words) & MASK_FIELDS[values.itemsize])).astype(words)
    masked = values.copy() if in_place else np.empty_like(values)
    mask_values(masked if in_place else values, SEED, "w", out=None if in_place else masked, version=version)
    assert masked.tobytes() == want.tobytes()
    mask_values(masked, SEED, "w", version=version)
    assert masked.tobytes() == values.tobytes()


def test_masking_small_tensors_together_is_masking_each_on_its_own(monkeypatch):
    """The restore's batch (raw tensors of one call each, a width at a time) gives each tensor what
    ``mask_values`` gives it alone, beside tensors it leaves to the per-tensor path (typed fields,
    more than one chunk)."""
    from onnxlock.passes import flip_signs as module

    monkeypatch.setattr(module, "FLIP_CHUNK", 64)
    rng = np.random.default_rng(2)
    arrays = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(64).astype(np.float16),
              "c": rng.integers(-128, 127, 50).astype(np.int8), "d": rng.standard_normal(7).astype(np.float32),
              "big": rng.standard_normal(300).astype(np.float32), "e": rng.standard_normal(9).astype(np.float64)}
    tensors = [numpy_helper.from_array(array, name) for name, array in arrays.items()]
    tensors.append(helper.make_tensor("typed", TensorProto.FLOAT, [4], [0.5, -1.0, 0.25, 3.0]))
    arrays["typed"] = numpy_helper.to_array(tensors[-1])
    model = helper.make_model(helper.make_graph([], "g", [], [], initializer=tensors))
    secret = {"method": "mask", "version": 2, "seed": base64.b64encode(SEED).decode(), "tensors": list(arrays)}
    masked = initializer_arrays(MaskPass.restore(model, secret))
    for name, array in arrays.items():
        alone = np.empty_like(array)
        mask_values(array, SEED, name, out=alone)
        assert masked[name].tobytes() == alone.tobytes() != array.tobytes(), name


def test_a_model_locked_before_keystream_version_2_still_loads():
    """tests/data/resnet_mask_v1.*: the digits ResNet locked by the release before version 2 (commit
    16b0f8b, its secret of version 1), loaded by both loader paths and unlocked, bit-identical."""
    data = MODELS.parent / "tests" / "data"
    locked, key = (data / "resnet_mask_v1.onnx").read_bytes(), (data / "resnet_mask_v1.key").read_bytes()
    from onnxlock.runtime.restore import restore_model
    from onnxlock.fileio import sha256_bytes
    from onnxlock.key import open_key

    assert open_key(key, passphrase=PASSPHRASE, model_sha256=sha256_bytes(locked))["version"] == 1
    original = load_model(MODELS / "digits_resnet.onnx")
    feeds = {"pixels": np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)}
    want = run(original, feeds)[0]
    for verify in ("fast", "full"):
        session = load_session(locked, key, passphrase=PASSPHRASE, verify=verify)
        assert session.run(None, feeds)[0].tobytes() == want.tobytes()
    restored = restore_model(locked, key, PASSPHRASE)
    assert restored.SerializeToString() == normalize(original).SerializeToString()  # what the lock started from


def test_a_mask_key_of_version_1_still_restores():
    """A secret written before version 2 restores with its own keystream; an unknown version is refused."""
    original = normalize(load_model(MODELS / "digits_cnn.onnx"))
    plan = MaskPass(SEED).plan(original)[0]
    old = {**plan, "version": 1}
    locked = MaskPass.restore(original, old)  # the XOR is its own inverse: applying it locks
    assert initializer_arrays(locked)[plan["tensors"][0]].tobytes() != initializer_arrays(original)[plan["tensors"][0]].tobytes()
    assert restore(locked, old).SerializeToString() == original.SerializeToString()
    assert restore(locked, plan).SerializeToString() != original.SerializeToString()
    for bad in (3, True, "2", None):
        with pytest.raises(KeyFormatError, match=f"version {bad!r}"):
            restore(locked, {**plan, "version": bad})


def test_the_mask_keystream_is_not_the_sign_flips():
    values = np.full(4096, 0.25, np.float32)
    masked, flipped = np.empty_like(values), np.empty_like(values)
    mask_values(values, SEED, "w", out=masked)
    flip_signs(values, SEED, "w", out=flipped)
    assert np.mean(np.signbit(masked) == np.signbit(flipped)) < 0.6
    other = np.empty_like(values)
    mask_values(values, SEED, "w2", out=other)
    assert np.mean(other == masked) < 0.01


def test_a_stacked_mask_lock_loads_bit_identical(tmp_path, held_out):
    feeds, _ = held_out
    locked = lock_model(MODELS / "digits_resnet.onnx", passphrase=PASSPHRASE, kdf_params=CHEAP_KDF,
                        method="confusion,mask", calibration={"pixels": feeds["pixels"][:64]})
    write_locked(locked, tmp_path / "m.onnx", tmp_path / "m.key")
    session = load_session(tmp_path / "m.onnx", tmp_path / "m.key", passphrase=PASSPHRASE, providers="cpu")
    expected = run(onnx.load(MODELS / "digits_resnet.onnx"), feeds)[0]
    assert np.array_equal(session.run(None, feeds)[0], expected)


def test_the_base_gives_nothing_back_from_masked_values(held_out):
    feeds, labels = held_out
    base = normalize(load_model(MODELS / "digits_cnn.onnx"))
    locked = lock_model(base, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, method="confusion,mask",
                        calibration={"pixels": feeds["pixels"][:64]})
    found = base_attack(parse_model(locked.model), base)  # the base is the model itself: the best case
    assert float(np.mean(run(found.model, feeds)[0].argmax(-1) == labels)) <= CHANCE + 0.1


def test_cli_locks_with_mask_and_runs_the_original(cli, passphrase_env, tmp_path, held_out):
    feeds, _ = held_out
    data = tmp_path / "x.npz"
    np.savez(data, pixels=feeds["pixels"][:32])
    model, key, out = tmp_path / "l.onnx", tmp_path / "k.key", tmp_path / "y.npz"
    locked = cli("lock", MODELS / "digits_mlp.onnx", "-o", model, "--key", key, "--method", "confusion,mask",
                 "--calib", data)
    assert locked.code == 0, locked.err
    assert "mask: " in locked.out and "tensors (weights, biases, normalisation parameters) masked" in locked.out
    ran = cli("run", model, "--key", key, "--input", data, "-o", out, "--provider", "cpu")
    assert ran.code == 0, ran.err
    expected = run(onnx.load(MODELS / "digits_mlp.onnx"), {"pixels": feeds["pixels"][:32]})[0]
    with np.load(out) as written:
        assert np.array_equal(next(iter(written.values())), expected)


def test_the_mask_takes_trained_parameters_not_statistics_or_shapes():
    """Weights, biases, BatchNorm's scale and shift and a MatMul's Add bias are masked; BatchNorm's
    running statistics, a constant also read as a Resize's scales and an Add of two constants are not."""
    floats = lambda name, *shape: numpy_helper.from_array(np.ones(shape, np.float32), name)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"]),
             helper.make_node("Flatten", ["n"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["p"]), helper.make_node("Add", ["p", "bias"], ["q"]),
             helper.make_node("Mul", ["q", "scales"], ["r"]), helper.make_node("Add", ["two", "three"], ["s"]),
             helper.make_node("Reshape", ["r", "shape"], ["t"]),
             helper.make_node("Resize", ["t", "", "scales"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [floats("w", 2, 1, 1, 1), floats("b", 2), floats("gamma", 2), floats("beta", 2), floats("mean", 2),
         floats("var", 2), floats("m", 8, 4), floats("bias", 4), floats("scales", 4), floats("two", 3),
         floats("three", 3), numpy_helper.from_array(np.array([1, 1, 2, 2], np.int64), "shape")])
    model = helper.make_model(graph)
    assert parameter_tensors(model) == ["w", "m", "b", "gamma", "beta", "bias"]


@pytest.mark.parametrize("method", ["mask", "signflip"])
def test_a_weight_normalisation_folded_is_not_left_in_the_clear(method):
    """A TF export reads its kernel through an Identity; normalisation folds it into a new weight and
    keeps the original under its own name for the restore: the keyed pass locks both."""
    kernel = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)  # half flipped is never 70%
    graph = helper.make_graph(
        [helper.make_node("Identity", ["kernel"], ["read"]), helper.make_node("MatMul", ["x", "read"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [numpy_helper.from_array(kernel, "kernel")])
    original = normalize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    locked = lock_model(original, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, method=method)
    values = initializer_arrays(parse_model(locked.model))
    assert "kernel" in values and len(values) == 2
    for name, array in values.items():
        assert np.mean(array == kernel) < 0.7, name  # masked: none kept; sign flips: about half
