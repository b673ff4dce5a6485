"""Nothing written, nothing leaked: load_session leaves the file system as it was, and every
option that would write the restored model, a compiled engine, a profile or shapes is refused."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import UnsafeOptionError, load_session

from conftest import MODELS, PASSPHRASE


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
        "session.collect_node_memory_stats_to_file":
            (entry("session.collect_node_memory_stats_to_file", str(tmp_path / "stats.csv")), "cpu"),
        "session.debug_layout_transformation": (entry("session.debug_layout_transformation"), "cpu"),
        "session.moe.offload.derived_cache_dir": (entry("session.moe.offload.derived_cache_dir", str(tmp_path)), "cpu"),
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


def test_config_entries_are_read_beside_the_kdf_and_refused_before_creation(locked_mlp, tmp_path, monkeypatch):
    """The entries' reads (0.14 ms each unset: onnxruntime raises) run in another thread while
    scrypt derives, and an unsafe one still stops the load before a session is built."""
    from onnxlock.key import recipients
    from onnxlock.runtime import session

    if recipients._STDLIB_SCRYPT is None:
        pytest.skip("this Python's OpenSSL has no scrypt: cryptography's holds the GIL, nothing to overlap")
    deriving, seen, real, real_check = threading.Event(), {}, recipients.scrypt, session.check_entries

    def scrypt(*args):
        deriving.set()
        return real(*args)

    def check_entries(options):
        seen["during_kdf"], seen["thread"] = deriving.wait(10), threading.get_ident()
        return real_check(options)

    monkeypatch.setattr(recipients, "scrypt", scrypt)
    monkeypatch.setattr(session, "check_entries", check_entries)
    options, providers = unsafe_cases(tmp_path)["ep.context_enable"]
    with pytest.raises(UnsafeOptionError, match="ep.context_enable"):
        load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers=providers,
                     sess_options=options)
    assert seen["during_kdf"] and seen["thread"] != threading.get_ident()
    assert list(tmp_path.iterdir()) == []


def test_options_switched_off_are_accepted(locked_mlp):
    options = ort.SessionOptions()
    options.add_session_config_entry("ep.context_enable", "0")
    options.enable_profiling = False
    session = load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers="cpu",
                           sess_options=options)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_node_memory_stats_would_write_restored_sizes(tmp_path):
    """Why that entry is refused: a plain session given it writes every node's name and sizes."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.collect_node_memory_stats_to_file", str(tmp_path / "stats.csv"))
    options.enable_mem_pattern = False
    session = ort.InferenceSession(str(MODELS / "digits_cnn.onnx"), options, providers=["CPUExecutionProvider"])
    session.run(None, {"pixels": np.zeros((1, 1, 8, 8), np.float32)})
    del session
    assert "initializers_sizes" in (tmp_path / "stats.csv").read_text()


# entries that only shape what a refused option writes: accepted, and nothing is written
INERT = {"ep.context_file_path": "ctx.onnx", "ep.context_model_external_initializers_file_name": "ctx.bin",
         "session.save_model_format": "ORT", "session.optimized_model_external_initializers_file_name": "w.bin",
         "session.save_external_prepacked_constant_initializers": "1"}


@pytest.mark.parametrize("how", ["path", "bytes"])
def test_entries_inert_without_a_refused_option_write_nothing(how, locked_mlp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = ort.SessionOptions()
    for key, value in INERT.items():
        options.add_session_config_entry(key, str(tmp_path / value) if "." in value else value)
    model = locked_mlp.model if how == "path" else locked_mlp.model.read_bytes()
    session = load_session(model, locked_mlp.key, passphrase=PASSPHRASE, providers="cpu", sess_options=options)
    session.run(None, {"pixels": np.zeros((1, 1, 8, 8), np.float32)})
    del session
    assert list(tmp_path.iterdir()) == []


def _with_ort_config(path: Path, folder: Path) -> Path:
    import json

    import onnx

    model = onnx.load(path)
    entry = model.metadata_props.add()
    entry.key, entry.value = "ort_config", json.dumps({"session_options": {"enable_profiling": 1}})
    onnx.save(model, folder / "configured.onnx")
    return folder / "configured.onnx"


def test_config_from_model_is_refused(locked_mlp, tmp_path, monkeypatch):
    """With ORT_LOAD_CONFIG_FROM_MODEL=1 a model's metadata switches profiling on (a plain session
    writes a profile: shown first), so the loader refuses to build a session at all."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORT_LOAD_CONFIG_FROM_MODEL", "1")
    configured = _with_ort_config(MODELS / "digits_mlp.onnx", tmp_path)
    plain = ort.InferenceSession(str(configured), providers=["CPUExecutionProvider"])
    del plain  # the profile is written when the session ends
    assert [p.name for p in tmp_path.glob("onnxruntime_profile*.json")]
    with pytest.raises(UnsafeOptionError, match="ORT_LOAD_CONFIG_FROM_MODEL"):
        load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers="cpu")
