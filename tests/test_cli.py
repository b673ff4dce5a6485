"""The onnxlock command, driven in-process: lock, run, unlock, inspect and the README's demo."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

MODELS = Path(__file__).resolve().parent.parent / "models"
MLP = MODELS / "digits_mlp.onnx"
TEST_SET = MODELS / "digits_test.npz"


def original_outputs(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(MLP), providers=["CPUExecutionProvider"])
    return dict(zip((o.name for o in session.get_outputs()), session.run(None, feeds)))


@pytest.fixture
def cli_locked(cli, passphrase_env, tmp_path):
    """digits_mlp locked through the CLI, with the default scrypt cost."""
    model, key = tmp_path / "mlp.locked.onnx", tmp_path / "mlp.key"
    result = cli("lock", MLP, "-o", model, "--key", key, "--seed", "0")
    assert result.code == 0, result.err
    assert "masked by the key" in result.out
    return model, key


def test_lock_then_run_equals_the_original(cli, cli_locked, tmp_path, digits):
    model, key = cli_locked
    out = tmp_path / "out.npz"
    result = cli("run", model, "--key", key, "--input", TEST_SET, "-o", out, "--provider", "cpu")
    assert result.code == 0, result.err
    assert "ignoring arrays" in result.err and "labels" in result.err
    expected = original_outputs({"pixels": digits["pixels"]})
    with np.load(out) as written:
        assert sorted(written.files) == sorted(expected)
        for name, array in expected.items():
            assert np.array_equal(written[name], array)
    assert (out.stat().st_mode & 0o777) == 0o644


def test_locked_file_alone_gives_other_outputs(cli_locked, digits):
    session = ort.InferenceSession(str(cli_locked[0]), providers=["CPUExecutionProvider"])
    locked = session.run(None, {"pixels": digits["pixels"]})[0]
    assert not np.array_equal(locked, original_outputs({"pixels": digits["pixels"]})["logits"])


def test_lock_json_report(cli, passphrase_env, tmp_path, digits):
    calib = tmp_path / "calib.npz"
    np.savez(calib, pixels=digits["pixels"][:64])
    result = cli("lock", MLP, "-o", tmp_path / "l.onnx", "--key", tmp_path / "k.key", "--json",
                 "--calib", calib, "--strategy", "samp", "--ratio", "0.03", "--method", "confusion,signflip")
    assert result.code == 0, result.err
    layers = json.loads(result.out)["layers"]  # a stack: confusion channels, then signflip
    assert [layer["method"] for layer in layers] == ["confusion", "signflip"]
    report = layers[0]
    assert report["strategy"] == "samp" and report["groups_widened"] >= 1
    assert 0 < report["params_added"] <= 0.03 * report["params_original"]


def test_lock_force_overwrites(cli, cli_locked):
    model, key = cli_locked
    old_key = key.read_bytes()
    assert cli("lock", MLP, "-o", model, "--key", key, "--force").code == 0
    assert key.read_bytes() != old_key
    assert (key.stat().st_mode & 0o777) == 0o600


def test_unlock_restores_every_initializer(cli, passphrase_env, tmp_path, locked_mlp):
    restored = tmp_path / "restored.onnx"
    result = cli("unlock", locked_mlp.model, "--key", locked_mlp.key, "-o", restored)
    assert result.code == 0, result.err
    original = {t.name: t for t in onnx.load(MLP).graph.initializer}
    by_name = {t.name: t for t in onnx.load(restored).graph.initializer}
    for name, tensor in original.items():
        assert by_name[name].SerializeToString() == tensor.SerializeToString(), name
        assert numpy_helper.to_array(by_name[name]).tobytes() == numpy_helper.to_array(tensor).tobytes()


def test_inspect_key(cli, locked_mlp):
    text = cli("inspect", locked_mlp.key)
    assert text.code == 0 and "scrypt" in text.out
    result = cli("inspect", locked_mlp.key, "--json")
    assert result.code == 0
    info = json.loads(result.out)
    payload = locked_mlp.key.read_bytes().splitlines()[2].decode()
    header = json.loads(locked_mlp.key.read_bytes().splitlines()[1])
    assert info["kind"] == "key" and info["method"] == "mask"
    assert info["recipients"][0]["type"] == "scrypt" and info["recipients"][0]["n"] == 2**12
    for output in (text.out, result.out):
        assert payload not in output and header["recipients"][0]["wrapped"] not in output
        assert "payload" not in output and "wrapped" not in output


def test_inspect_model_matches_the_key(cli, locked_mlp):
    result = cli("inspect", locked_mlp.model, "--json")
    assert result.code == 0
    info = json.loads(result.out)
    key = json.loads(cli("inspect", locked_mlp.key, "--json").out)
    assert info["kind"] == "model" and info["sha256"] == key["model_sha256"]
    assert info["inputs"] == [{"name": "pixels", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert info["outputs"][0]["name"] == "logits" and info["ops"]["Gemm"] == 3
    assert info["parameters"] == 17_226 and info["opset"] == 17  # the default mask keeps the architecture
    text = cli("inspect", MLP)
    assert text.code == 0 and "pixels: float32 [batch, 1, 8, 8]" in text.out


def test_demo_quick_start(cli, monkeypatch):
    monkeypatch.delenv("ONNXLOCK_PASSPHRASE", raising=False)
    result = cli("demo")
    assert result.code == 0, result.err
    for row in ("original", "locked, no key", "locked + key", "max |restored - original|: 0.0", "lock time"):
        assert row in result.out


def test_demo_keeps_files_in_workdir_that_open(cli, tmp_path, monkeypatch, digits):
    """The kept pair opens with the command the demo prints (under the demo passphrase it says)."""
    monkeypatch.delenv("ONNXLOCK_PASSPHRASE", raising=False)
    result = cli("demo", "--model", "digits_mlp", "--workdir", tmp_path / "demo")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["digits_mlp.key", "digits_mlp.locked.onnx"]
    shown = [line.strip() for line in result.out.splitlines() if line.strip().startswith("ONNXLOCK_PASSPHRASE=")]
    assert len(shown) == 1 and "'onnxlock demo'" in result.out
    assignment, program, *args = shlex.split(shown[0])
    assert program == "onnxlock" and args[0] == "run"
    monkeypatch.setenv(*assignment.split("=", 1))
    opened = cli(*args)
    assert opened.code == 0, opened.err
    with np.load(tmp_path / "demo" / "outputs.npz") as written:
        assert np.array_equal(written["logits"], original_outputs({"pixels": digits["pixels"]})["logits"])


def test_run_refuses_to_overwrite_without_force(cli, cli_locked, tmp_path):
    model, key = cli_locked
    out = tmp_path / "out.npz"
    out.write_bytes(b"keep me")
    command = ("run", model, "--key", key, "--input", TEST_SET, "-o", out, "--provider", "cpu")
    refused = cli(*command)
    assert refused.code == 1 and f"onnxlock: error: {out} exists (use --force to overwrite)" in refused.err
    assert out.read_bytes() == b"keep me"
    assert cli(*command, "--force").code == 0
    with np.load(out) as written:
        assert written["logits"].shape == (360, 10)


def test_version_and_help(cli):
    assert cli("--version").code == 0
    assert cli("lock", "--help").code == 0
    usage = cli()
    assert usage.code == 1 and "usage: onnxlock" in usage.err  # bad input is 1; 2 means a bug


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "onnxlock", "--version"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0 and "onnxlock" in result.stdout


def test_interrupt_exits_130_quietly(cli, monkeypatch, locked_mlp):
    def interrupted(path):
        raise KeyboardInterrupt
    monkeypatch.setattr("onnxlock.cli.inspect.describe", interrupted)
    result = cli("inspect", locked_mlp.key)
    assert result.code == 130 and result.err == ""


def test_a_closed_output_pipe_ends_the_command_quietly():
    """`onnxlock inspect MODEL | head -1`: the reader goes away before the command writes; it stops
    without a traceback or an 'internal error' (it reported one before)."""
    model = Path(__file__).resolve().parent.parent / "models" / "digits_cnn.onnx"
    child = subprocess.Popen([sys.executable, "-m", "onnxlock", "inspect", str(model)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()  # before the interpreter has started: every write fails with EPIPE
    errors = child.stderr.read().decode()
    assert child.wait(timeout=60) == 1
    assert errors == ""
