"""The public API checks its own arguments, naming the one at fault, before onnxruntime sees any of them."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from onnxlock import (
    InputDataError, InvalidArgumentError, LockedModel, OnnxlockError, load_session, lock_model, restore_model,
    write_locked,
)

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

MLP = MODELS / "digits_mlp.onnx"
GOOD = np.zeros((4, 1, 8, 8), np.float32)


@pytest.fixture(autouse=True)
def onnxruntime_must_not_run(monkeypatch):
    """Every case here must be refused before a session exists (one would surface as an InternalError)."""
    def refuse(*args, **kwargs):
        raise AssertionError("onnxruntime was reached")
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


@pytest.mark.parametrize("option, values", [
    ("ratio", [0, -0.1, 1.5, float("nan"), float("inf"), "0.02", True]),
    ("tries", [0, -3, 1.5, 10**6, True, "4"]),
    ("seed", [-1, 2**64, 1.5, "7", False]),
    ("strategy", ["nope", None]),
    ("passphrase", ["", None, b"secret", 42]),
    ("kdf_params", [{"n": 3}, {"q": 1}, {"n": 2**30}, [("n", 4096)]]),
])
def test_lock_options_out_of_range(option, values):
    for value in values:
        with pytest.raises(InvalidArgumentError, match=rf"^{option}\b") as caught:
            lock_model(MLP, **{"passphrase": PASSPHRASE, "kdf_params": CHEAP_KDF, option: value})
        assert isinstance(caught.value, ValueError)  # still what a Python caller may catch


def test_model_argument_type():
    with pytest.raises(InvalidArgumentError, match="model must be an onnx.ModelProto or a path, got int"):
        lock_model(42, passphrase=PASSPHRASE)


@pytest.mark.parametrize("calibration, expected", [
    ([GOOD], "calibration must be a dict of numpy arrays"),
    ({"pixels": GOOD.tolist()}, "calibration array 'pixels' must be a numpy array, got list"),
    ({"images": GOOD}, "calibration has no array for input 'pixels' (it has: images)"),
    ({"pixels": GOOD, "extra": GOOD}, "calibration has arrays that are not model inputs: extra (inputs: pixels)"),
    ({"pixels": GOOD.astype(np.float64)}, "input 'pixels' expects float32 [batch, 1, 8, 8], got float64"),
    ({"pixels": np.zeros((4, 64), np.float32)}, "input 'pixels' expects float32 [batch, 1, 8, 8], got float32 [4, 64]"),
    ({"pixels": np.zeros((0, 1, 8, 8), np.float32)}, "calibration array 'pixels' is empty (shape [0, 1, 8, 8])"),
    ({"pixels": np.where(np.eye(8, dtype=bool), np.nan, 0).astype(np.float32)[None, None].repeat(2, 0)},
     "calibration array 'pixels' holds NaN or infinite values"),
    ({"pixels": np.full((2, 1, 8, 8), np.inf, np.float32)}, "calibration array 'pixels' holds NaN or infinite values"),
])
def test_calibration_arrays(calibration, expected):
    with pytest.raises(InputDataError) as caught:
        lock_model(MLP, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, calibration=calibration)
    assert str(caught.value).startswith(expected)


@pytest.mark.parametrize("kwargs, expected", [
    ({"providers": ["FooExecutionProvider"]}, "unknown execution provider 'FooExecutionProvider'"),
    ({"providers": [("CPUExecutionProvider", 5)]}, "a provider with options is a (name, dict) pair"),
    ({"providers": "gpu"}, "unknown execution provider 'gpu'"),
    ({"sess_options": {"threads": 2}}, "sess_options must be an onnxruntime.SessionOptions, got dict"),
    ({"passphrase": ""}, "passphrase must be a non-empty string"),
])
def test_load_session_arguments(locked_mlp, kwargs, expected):
    with pytest.raises(InvalidArgumentError) as caught:
        load_session(locked_mlp.model, locked_mlp.key, **{"passphrase": PASSPHRASE, **kwargs})
    assert str(caught.value).startswith(expected)


def test_restore_model_wants_bytes(locked_mlp):
    with pytest.raises(InvalidArgumentError, match=r"locked must be bytes \(the file's content\), got PosixPath"):
        restore_model(locked_mlp.model, locked_mlp.key.read_bytes(), PASSPHRASE)


def test_write_locked_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match="locked must be the LockedModel lock_model returned, got bytes"):
        write_locked(b"model", tmp_path / "m.onnx", tmp_path / "m.key")
    with pytest.raises(InvalidArgumentError, match="key_path must be a path, got None"):
        write_locked(LockedModel(b"m", b"k", {}), tmp_path / "m.onnx", None)
    with pytest.raises(OnnxlockError, match="must be different files"):
        write_locked(LockedModel(b"m", b"k", {}), tmp_path / "m", tmp_path / "m")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("option, value", [("--tries", "0"), ("--seed", "-1"), ("--ratio", "nan")])
def test_cli_names_the_option(cli, passphrase_env, outdir, option, value):
    result = cli("lock", MLP, "-o", outdir / "l.onnx", "--key", outdir / "k.key", option, value)
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err.startswith(f"onnxlock: error: {option[2:]} must be ") and len(result.err.splitlines()) == 1
    assert not list(outdir.iterdir())
