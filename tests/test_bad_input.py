"""Every bad input makes the CLI exit 1 with one 'onnxlock: error:' line, no traceback, and no output file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock.runtime.session import PASSPHRASE_ENV

MODELS = Path(__file__).resolve().parent.parent / "models"


def assert_error(result, *fragments: str) -> str:
    """Exit 1, exactly one stderr line 'onnxlock: error: ...' holding every fragment; return the message."""
    assert result.code == 1
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if not line.startswith("onnxlock: warning:")]
    assert len(lines) == 1 and lines[0].startswith("onnxlock: error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def bad_files(tmp_path, locked_mlp) -> dict[str, Path]:
    """Damaged copies of the locked model and key, outside the output folder."""
    model, key = locked_mlp.model.read_bytes(), locked_mlp.key.read_bytes()
    contents = {
        "garbage.onnx": np.random.default_rng(0).bytes(4096),
        "truncated.onnx": model[: len(model) // 2],
        "garbage.key": np.random.default_rng(1).bytes(700),
        "truncated.key": key[: len(key) // 2],
    }
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in contents}


def run_args(model, key, outdir):
    return ["run", model, "--key", key, "--input", MODELS / "digits_test.npz", "-o", outdir / "out.npz"]


def unlock_args(model, key, outdir):
    return ["unlock", model, "--key", key, "-o", outdir / "restored.onnx"]


@pytest.mark.parametrize("verb", [run_args, unlock_args], ids=["run", "unlock"])
@pytest.mark.parametrize("model, key, expected", [
    ("locked", "garbage.key", "not an onnxlock key"),
    ("locked", "truncated.key", "truncated"),
    ("locked", "other.key", "key belongs to another model"),
    ("garbage.onnx", "key", "key belongs to another model"),
    ("truncated.onnx", "key", "key belongs to another model"),
    ("missing.onnx", "key", "cannot read locked model"),
    ("locked", "missing.key", "cannot read key"),
])
def test_damaged_model_or_key(cli, passphrase_env, outdir, bad_files, locked_mlp, locked_mlp_again,
                              verb, model, key, expected):
    paths = {**bad_files, "locked": locked_mlp.model, "key": locked_mlp.key, "other.key": locked_mlp_again.key,
             "missing.onnx": outdir.parent / "missing.onnx", "missing.key": outdir.parent / "missing.key"}
    assert_error(cli(*verb(paths[model], paths[key], outdir)), expected)
    assert not list(outdir.iterdir())


@pytest.mark.parametrize("verb", [run_args, unlock_args], ids=["run", "unlock"])
def test_wrong_passphrase(cli, monkeypatch, outdir, locked_mlp, verb):
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    assert_error(cli(*verb(locked_mlp.model, locked_mlp.key, outdir)), "wrong passphrase or corrupted key")
    assert not list(outdir.iterdir())


def test_swapped_keys_of_two_locks_of_one_model(cli, passphrase_env, outdir, locked_mlp, locked_mlp_again):
    assert locked_mlp.model.read_bytes() != locked_mlp_again.model.read_bytes()
    assert_error(cli(*run_args(locked_mlp_again.model, locked_mlp.key, outdir)), "key belongs to another model")
    assert not list(outdir.iterdir())


@pytest.mark.parametrize("model, expected", [
    ("garbage.onnx", "not a valid ONNX file"),
    ("truncated.onnx", "not a valid ONNX file"),
])
def test_lock_damaged_model(cli, passphrase_env, outdir, bad_files, model, expected):
    assert_error(cli("lock", bad_files[model], "-o", outdir / "locked.onnx", "--key", outdir / "k.key"), expected)
    assert not list(outdir.iterdir())


def test_missing_passphrase_without_terminal(cli, monkeypatch, outdir, locked_mlp):
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    message = assert_error(cli(*run_args(locked_mlp.model, locked_mlp.key, outdir)))
    assert message == ("onnxlock: error: no passphrase: set ONNXLOCK_PASSPHRASE, use --passphrase-env NAME, "
                       "or run on a terminal")
    assert not list(outdir.iterdir())


def test_passphrase_env_names_another_variable(cli, monkeypatch, outdir, locked_mlp):
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.setenv("MY_SECRET", "not the passphrase")
    result = cli(*run_args(locked_mlp.model, locked_mlp.key, outdir), "--passphrase-env", "MY_SECRET")
    assert_error(result, "wrong passphrase")


def test_lock_prompts_twice_and_refuses_a_mismatch(cli, monkeypatch, outdir):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    answers = iter(["first", "second"])
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    result = cli("lock", MODELS / "digits_mlp.onnx", "-o", outdir / "l.onnx", "--key", outdir / "k.key")
    assert_error(result, "passphrases do not match")
    assert not list(outdir.iterdir())


def test_lock_refuses_to_overwrite_a_key(cli, passphrase_env, outdir):
    key = outdir / "model.key"
    key.write_bytes(b"the only copy")
    result = cli("lock", MODELS / "digits_mlp.onnx", "-o", outdir / "locked.onnx", "--key", key)
    assert_error(result, "exists", "--force")
    assert key.read_bytes() == b"the only copy"
    assert [p.name for p in outdir.iterdir()] == ["model.key"]


def test_unlock_refuses_to_overwrite(cli, passphrase_env, outdir, locked_mlp):
    target = outdir / "restored.onnx"
    target.write_bytes(b"keep me")
    assert_error(cli("unlock", locked_mlp.model, "--key", locked_mlp.key, "-o", target), "exists")
    assert target.read_bytes() == b"keep me"


def test_bad_option_value(cli, passphrase_env, outdir):
    result = cli("lock", MODELS / "digits_mlp.onnx", "-o", outdir / "l.onnx", "--key", outdir / "k.key",
                 "--ratio", "1.5")
    assert_error(result, "ratio")
    assert not list(outdir.iterdir())


def test_output_folder_missing(cli, passphrase_env, tmp_path, locked_mlp):
    result = cli("unlock", locked_mlp.model, "--key", locked_mlp.key, "-o", tmp_path / "nowhere" / "r.onnx")
    assert_error(result, "cannot write", "nowhere")


# --- input data -------------------------------------------------------------------------------

def write_npz(folder: Path, **arrays) -> Path:
    path = folder / "batch.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("arrays, expected", [
    ({"labels": np.zeros(3, np.int64)}, ["no array for input 'pixels'", "labels"]),
    ({"pixels": np.zeros((3, 64), np.float32)}, ["'pixels'", "[batch, 1, 8, 8]", "[3, 64]"]),
    ({"pixels": np.zeros((3, 1, 8, 9), np.float32)}, ["'pixels'", "[batch, 1, 8, 8]", "[3, 1, 8, 9]"]),
    ({"pixels": np.zeros((3, 1, 8, 8), np.float64)}, ["'pixels'", "float32", "float64"]),
])
def test_run_rejects_bad_arrays(cli, passphrase_env, tmp_path, outdir, locked_mlp, arrays, expected):
    batch = write_npz(tmp_path, **arrays)
    result = cli("run", locked_mlp.model, "--key", locked_mlp.key, "--input", batch, "-o", outdir / "out.npz")
    assert_error(result, *expected)
    assert not list(outdir.iterdir())


@pytest.mark.parametrize("content", [b"not an npz at all", b"PK\x03\x04" + bytes(40)], ids=["garbage", "bad-zip"])
def test_run_rejects_unreadable_npz(cli, passphrase_env, tmp_path, outdir, locked_mlp, content):
    batch = tmp_path / "batch.npz"
    batch.write_bytes(content)
    result = cli("run", locked_mlp.model, "--key", locked_mlp.key, "--input", batch, "-o", outdir / "out.npz")
    assert_error(result, str(batch))
    assert not list(outdir.iterdir())


def test_truncated_npz(cli, passphrase_env, tmp_path, outdir, locked_mlp):
    data = (MODELS / "digits_test.npz").read_bytes()
    batch = tmp_path / "batch.npz"
    batch.write_bytes(data[: len(data) // 2])
    result = cli("run", locked_mlp.model, "--key", locked_mlp.key, "--input", batch, "-o", outdir / "out.npz")
    assert_error(result, str(batch))
    assert not list(outdir.iterdir())


def test_lock_calibration_missing_input(cli, passphrase_env, tmp_path, outdir):
    calib = write_npz(tmp_path, images=np.zeros((3, 1, 8, 8), np.float32))
    result = cli("lock", MODELS / "digits_mlp.onnx", "-o", outdir / "l.onnx", "--key", outdir / "k.key",
                 "--calib", calib)
    assert_error(result, "no array for input 'pixels'")
    assert not list(outdir.iterdir())


# --- graphs no pass can lock -------------------------------------------------------------------

def single_gemm() -> onnx.ModelProto:
    """x @ W + b straight to the graph output: widening it would change the output's shape."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"])], "single_gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def matmul_of_inputs() -> onnx.ModelProto:
    """No constant weights at all."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul_of_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("build", [single_gemm, matmul_of_inputs])
def test_lock_unsupported_graph(cli, passphrase_env, tmp_path, outdir, build):
    model = tmp_path / "tiny.onnx"
    onnx.save(build(), model)
    result = cli("lock", model, "-o", outdir / "l.onnx", "--key", outdir / "k.key", "--method", "confusion")
    assert_error(result, "no layer can take confusion channels")
    assert not list(outdir.iterdir())


def test_a_stack_locks_what_confusion_cannot(cli, passphrase_env, tmp_path, outdir):
    """A Gemm that feeds the graph output directly takes no confusion channel; a stack with
    confusion says so and still locks it with sign flips, restored exactly."""
    model = tmp_path / "tiny.onnx"
    onnx.save(single_gemm(), model)
    result = cli("lock", model, "-o", outdir / "l.onnx", "--key", outdir / "k.key", "--method", "confusion,signflip")
    assert result.code == 0, result.err
    assert "confusion skipped: no layer can take confusion channels" in result.out
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.savez(tmp_path / "x.npz", **{onnx.load(model).graph.input[0].name: x})
    assert cli("run", outdir / "l.onnx", "--key", outdir / "k.key", "--input", tmp_path / "x.npz",
               "-o", tmp_path / "y.npz").code == 0
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {
        onnx.load(model).graph.input[0].name: x})[0]
    with np.load(tmp_path / "y.npz") as got:
        assert got[got.files[0]].tobytes() == want.tobytes()


def test_default_stack_refuses_a_graph_without_weights(cli, passphrase_env, tmp_path, outdir):
    model = tmp_path / "tiny.onnx"
    onnx.save(matmul_of_inputs(), model)
    result = cli("lock", model, "-o", outdir / "l.onnx", "--key", outdir / "k.key")
    assert_error(result, "no float or quantized Conv, Gemm, MatMul, Einsum, Gather or RNN weight to lock")
    assert not list(outdir.iterdir())


def test_a_quantized_model_is_locked_whole_or_refused_not_half_locked(cli, passphrase_env, tmp_path, outdir):
    """Integer weights read through DequantizeLinear: the default mask locks them (tests/test_quantized.py);
    signflip cannot, and a float bias beside them must not make it pass the model off as protected."""
    weight = numpy_helper.from_array(np.arange(12, dtype=np.int8).reshape(4, 3), "w_q")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "w_scale")
    bias = numpy_helper.from_array(np.ones(3, np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"]),
         helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "bias"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [weight, scale, bias])
    model = tmp_path / "quantized.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    result = cli("lock", model, "-o", outdir / "l.onnx", "--key", outdir / "k.key", "--method", "signflip")
    assert_error(result, "no float Conv, Gemm, MatMul, Einsum, Gather or RNN weight to lock")
    assert not list(outdir.iterdir())
    assert cli("lock", model, "-o", outdir / "l.onnx", "--key", outdir / "k.key").code == 0
    locked = {t.name: numpy_helper.to_array(t) for t in onnx.load(outdir / "l.onnx").graph.initializer}
    assert not np.array_equal(locked["w_q"], numpy_helper.to_array(weight))


# --- --debug ------------------------------------------------------------------------------------

def test_debug_shows_the_traceback(cli, monkeypatch, outdir, locked_mlp):
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    result = cli("--debug", *run_args(locked_mlp.model, locked_mlp.key, outdir))
    assert result.code == 1
    assert "Traceback" in result.err and "KeyAuthError" in result.err
    assert result.err.rstrip().splitlines()[-1] == "onnxlock: error: wrong passphrase or corrupted key"
    assert cli(*run_args(locked_mlp.model, locked_mlp.key, outdir), "--debug").err.count("Traceback") == 1


def test_output_that_is_an_input_is_refused_even_with_force(cli, passphrase_env, locked_mlp, tmp_path):
    """Writing over an input would destroy it: refused before any work, --force or not."""
    model = tmp_path / "model.onnx"
    model.write_bytes(locked_mlp.original.read_bytes())
    before = model.read_bytes()
    result = cli("lock", model, "-o", model, "--key", tmp_path / "k.key", "--force")
    assert result.code == 1 and "also an input" in result.err
    assert model.read_bytes() == before and not (tmp_path / "k.key").exists()
    result = cli("unlock", locked_mlp.model, "--key", locked_mlp.key, "-o", locked_mlp.key, "--force")
    assert result.code == 1 and "also an input" in result.err


def test_negative_dims_in_the_model_accept_any_size():
    """Paddle exports mark dynamic axes with dim_value -1; such an axis takes any size."""
    from onnxlock.errors import InputDataError
    from onnxlock.runtime.feeds import TensorSpec, check_array

    spec = TensorSpec("x", (-1, 3, "h", 48), np.dtype(np.float32))
    assert check_array(spec, np.zeros((5, 3, 20, 48), np.float32)).shape == (5, 3, 20, 48)
    with pytest.raises(InputDataError, match="expects float32"):
        check_array(spec, np.zeros((5, 4, 20, 48), np.float32))
