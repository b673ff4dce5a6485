"""Nothing written, nothing leaked: load_session leaves the file system as it was, and every
option that would write the restored model, a compiled engine, a profile or shapes is refused."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import UnsafeOptionError, load_session

from conftest import PASSPHRASE


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folders``."""
    files = {}
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                files[path] = (info.st_size, info.st_mtime_ns)
    return files


ORT_CACHE = Path.home() / ".cache" / "Microsoft"  # onnxruntime's telemetry store (made when it is imported)


def _external_pair(folder: Path):
    """digits_mlp locked with its weights in an external data file, in ``folder``."""
    from onnxlock import lock_model, write_locked

    from conftest import CHEAP_KDF, MODELS, Locked

    locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=PASSPHRASE, seed=0, kdf_params=CHEAP_KDF,
                        external_data="locked.onnx.data")
    folder.mkdir()
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    return Locked(MODELS / "digits_mlp.onnx", folder / "locked.onnx", folder / "model.key")


@pytest.mark.parametrize("how", ["path", "bytes", "full", "external", "external full"])
def test_load_session_writes_nothing(how, locked_mlp, tmp_path, monkeypatch):
    if how.startswith("external"):
        locked_mlp = _external_pair(tmp_path / "external")
    home, work, temp = tmp_path / "home", tmp_path / "work", tmp_path / "tmp"
    for folder in (home / ".cache", work, temp):
        folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.chdir(work)
    watched = (home, work, temp, ORT_CACHE, locked_mlp.model.parent)
    before = snapshot(*watched)
    model = locked_mlp.model if how != "bytes" else locked_mlp.model.read_bytes()
    session = load_session(model, locked_mlp.key, passphrase=PASSPHRASE, providers="cpu",
                           verify="full" if how.endswith("full") else "fast")
    session.run(None, {"pixels": np.zeros((1, 1, 8, 8), np.float32)})
    del session
    assert snapshot(*watched) == before
    assert snapshot(work, temp, home) == {}


def unsafe_cases(tmp_path):
    def options(**attributes):
        result = ort.SessionOptions()
        for name, value in attributes.items():
            setattr(result, name, value)
        return result

    def entry(key, value="1"):
        result = ort.SessionOptions()
        result.add_session_config_entry(key, value)
        return result

    with_provider = ort.SessionOptions()
    with_provider.add_provider("CPUExecutionProvider", {})
    trt, openvino = "TensorrtExecutionProvider", "OpenVINOExecutionProvider"
    return {
        "optimized_model_filepath": (options(optimized_model_filepath=str(tmp_path / "m.onnx")), "cpu"),
        "enable_profiling": (options(enable_profiling=True), "cpu"),
        "ep.context_enable": (entry("ep.context_enable"), "cpu"),
        "ep.context_file_path": (entry("ep.context_file_path", str(tmp_path / "ctx.onnx")), "cpu"),
        "session.optimized_model_external_initializers_file_name":
            (entry("session.optimized_model_external_initializers_file_name", "w.bin"), "cpu"),
        "cannot be checked": (with_provider, "cpu"),
        "trt_engine_cache_enable": (None, [(trt, {"trt_engine_cache_enable": "True"})]),
        "trt_dump_ep_context_model": (None, [(trt, {"trt_dump_ep_context_model": "1"})]),
        "trt_timing_cache_enable": (None, [(trt, {"trt_timing_cache_enable": "true"})]),
        "cache_dir": (None, [(openvino, {"cache_dir": str(tmp_path)})]),
        "qnn_context_cache_enable": (None, [("QNNExecutionProvider", {"qnn_context_cache_enable": "1"})]),
        "migraphx_save_compiled_model": (None, [("MIGraphXExecutionProvider", {"migraphx_save_compiled_model": "1"})]),
        "ModelCacheDirectory": (None, [("CoreMLExecutionProvider", {"ModelCacheDirectory": str(tmp_path)})]),
    }


CASES = list(unsafe_cases(Path("/nonexistent")))


@pytest.mark.parametrize("option", CASES)
def test_every_writing_option_is_refused(option, locked_mlp, tmp_path):
    options, providers = unsafe_cases(tmp_path)[option]
    with pytest.raises(UnsafeOptionError, match=option):
        load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers=providers,
                     sess_options=options)
    assert list(tmp_path.iterdir()) == []


def test_options_switched_off_are_accepted(locked_mlp):
    options = ort.SessionOptions()
    options.add_session_config_entry("ep.context_enable", "0")
    options.enable_profiling = False
    session = load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers="cpu",
                           sess_options=options)
    assert session.get_providers() == ["CPUExecutionProvider"]
