"""Locked models with ONNX external data (what a model past protobuf's 2 GiB needs), on a small
model: written as three files, loaded on the fast path bit-identically, bound to the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import load_session, lock_model, restore_model, write_locked
from onnxlock.errors import InvalidArgumentError, ModelFormatError, ModelMismatchError, OnnxlockError
from onnxlock.graph import external
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

ORIGINAL = MODELS / "digits_cnn.onnx"


def _lock(folder: Path, method: str = "confusion,signflip") -> tuple[Path, Path]:
    locked = lock_model(ORIGINAL, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, seed=0, method=method,
                        external_data="locked.onnx.data")
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    return folder / "locked.onnx", folder / "model.key"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return _lock(tmp_path_factory.mktemp("external"))


def _reference(x) -> bytes:
    session = ort.InferenceSession(str(ORIGINAL), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": x})[0].tobytes()


@pytest.mark.parametrize("method", ["confusion,signflip", "confusion"])
@pytest.mark.parametrize("verify", ["fast", "full"])
def test_loads_bit_identical_from_three_files(tmp_path, digits, fast_calls, method, verify):
    model, key = _lock(tmp_path, method)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked.onnx", "locked.onnx.data", "model.key"]
    assert model.stat().st_size < 20_000 < (tmp_path / "locked.onnx.data").stat().st_size  # weights moved out
    session = load_session(model, key, passphrase=PASSPHRASE, verify=verify)
    x = digits["pixels"][:64]
    assert session.run(None, {"pixels": x})[0].tobytes() == _reference(x)
    assert bool(fast_calls and fast_calls[-1] is not None) == (verify == "fast")


def test_no_original_weight_in_the_clear(pair):
    data = (pair[0].parent / "locked.onnx.data").read_bytes()
    weights = [w for w in initializer_arrays(load_model(ORIGINAL)).values() if w.nbytes >= 1024]
    assert weights and not any(w.tobytes() in data for w in weights)


def test_restore_model_takes_the_data(pair):
    model, key = pair
    data = (model.parent / "locked.onnx.data").read_bytes()
    restored = initializer_arrays(restore_model(model.read_bytes(), key.read_bytes(), PASSPHRASE, data=data))
    original = initializer_arrays(normalize(load_model(ORIGINAL)))
    assert restored.keys() == original.keys() and all(restored[n].tobytes() == original[n].tobytes() for n in original)
    with pytest.raises(ModelFormatError, match="keeps its weights in locked.onnx.data"):
        restore_model(model.read_bytes(), key.read_bytes(), PASSPHRASE)


@pytest.mark.parametrize("verify", ["fast", "full"])
@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_altered_or_missing_data_is_refused(tmp_path, verify, damage):
    model, key = _lock(tmp_path, "confusion")  # tensors few: most are read by onnxruntime unchecked
    data = tmp_path / "locked.onnx.data"
    content = bytearray(data.read_bytes())
    if damage == "flip":
        content[len(content) // 2] ^= 1
        data.write_bytes(bytes(content))
    elif damage == "truncate":
        data.write_bytes(bytes(content[: len(content) // 2]))
    else:
        data.unlink()
    expected = ModelFormatError if damage == "remove" else ModelMismatchError
    with pytest.raises(expected) as caught:
        load_session(model, key, passphrase=PASSPHRASE, verify=verify)
    assert "\n" not in str(caught.value)


def test_a_wrong_tag_for_the_data_file_is_refused(pair, tmp_path):
    """The data file is the key's (its SHA-256 matches), but the key's secret records another tag."""
    from onnxlock import binding
    from onnxlock.key import open_key, read_header, seal
    from onnxlock.key.fields import b64encode

    model, key = pair
    secret = open_key(key.read_bytes(), passphrase=PASSPHRASE)
    assert set(secret[binding.MAC]) == {"model", "data"}
    load_session(model, key, passphrase=PASSPHRASE)
    secret[binding.MAC]["data"]["tag"] = b64encode(bytes(16))
    header = read_header(key.read_bytes())
    resealed = seal(secret, model_sha256=header["model_sha256"], method=header["method"], passphrase=PASSPHRASE,
                    kdf_params=CHEAP_KDF)
    with pytest.raises(ModelMismatchError, match="external data file matches its key's SHA-256 but not the tag"):
        load_session(model, resealed, passphrase=PASSPHRASE)


def test_bytes_of_an_external_model_are_refused(pair):
    model, key = pair
    with pytest.raises(ModelFormatError, match="must be loaded from its path"):
        load_session(model.read_bytes(), key, passphrase=PASSPHRASE)


def test_a_model_past_the_limit_needs_external_data(monkeypatch, tmp_path, digits):
    monkeypatch.setattr(external, "INLINE_LIMIT", 10_000)  # digits_cnn stands in for a 2 GiB model
    with pytest.raises(InvalidArgumentError, match="2 GiB limit: give external_data"):
        lock_model(ORIGINAL, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, seed=0)
    model, key = _lock(tmp_path)
    with pytest.raises(OnnxlockError, match="over 2 GiB"):
        load_session(model, key, passphrase=PASSPHRASE, verify="full")
    x = digits["pixels"][:8]
    assert load_session(model, key, passphrase=PASSPHRASE).run(None, {"pixels": x})[0].tobytes() == _reference(x)


@pytest.mark.parametrize("name", ["", "../x.data", "sub/x.data", ".", ".."])
def test_data_name_must_be_a_plain_file_name(name):
    with pytest.raises(InvalidArgumentError):
        lock_model(ORIGINAL, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, external_data=name)


def test_cli_lock_run_unlock(cli, outdir, passphrase_env, digits, monkeypatch):
    monkeypatch.setattr(external, "AUTO_BYTES", 1000)  # the CLI's automatic switch, lowered
    model, key, restored = outdir / "m.onnx", outdir / "m.key", outdir / "restored.onnx"
    assert cli("lock", ORIGINAL, "-o", model, "--key", key, "--seed", "0").code == 0
    assert (outdir / "m.onnx.data").exists()
    np.savez(outdir / "x.npz", pixels=digits["pixels"][:4])
    assert cli("run", model, "--key", key, "--input", outdir / "x.npz", "-o", outdir / "y.npz").code == 0
    assert cli("unlock", model, "--key", key, "-o", restored).code == 0
    assert (outdir / "restored.onnx.data").exists()
    back, original = initializer_arrays(load_model(restored)), initializer_arrays(normalize(load_model(ORIGINAL)))
    assert back.keys() == original.keys() and all(back[n].tobytes() == original[n].tobytes() for n in original)


def test_models_past_the_limit_run_in_memory_for_the_passes(monkeypatch, digits):
    """The passes run a model on calibration data; past 2 GiB it cannot be serialised whole."""
    from onnxlock.evaluate.damage import cpu_session, run

    model, x = load_model(ORIGINAL), {"pixels": digits["pixels"][:16]}
    expected = run(model, x)[0]
    monkeypatch.setattr(external, "INLINE_LIMIT", 10_000)
    session = cpu_session(model)
    assert session.onnxlock_weights  # the large weights went over as OrtValues
    assert session.run(None, x)[0].tobytes() == expected.tobytes()


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_the_size_bound_never_falls_below_what_protobuf_encodes(name):
    """too_large decides from a bound that does not encode the weights: it must never be below
    ByteSize (or a model near 2 GiB would be serialised past the limit), and stays close to it;
    also for typed values, external data entries and documentation strings."""
    from onnx import TensorProto, helper

    model = load_model(MODELS / f"{name}.onnx")
    model.graph.initializer.append(helper.make_tensor("typed", TensorProto.FLOAT, [3, 2], [0.5] * 6))
    tensor = model.graph.initializer[0]
    tensor.doc_string = "a weight"
    entry = tensor.external_data.add()
    entry.key, entry.value = "note", "x" * 40
    model.metadata_props.add(key="k", value="v" * 100)
    exact = model.ByteSize()
    assert exact <= external.serialized_bound(model) <= 1.1 * exact + 4096
