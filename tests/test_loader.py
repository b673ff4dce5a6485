"""load_session: provider choice, refused options, and the restored session computing the original."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import OnnxlockError, UnsafeOptionError, load_session
from onnxlock.runtime import select_providers
from onnxlock.runtime.session import PASSPHRASE_ENV

from conftest import MODELS, PASSPHRASE

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_auto_provider_follows_what_onnxruntime_offers():
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if HAS_CUDA else ["CPUExecutionProvider"]
    assert select_providers(None) == expected == select_providers("auto")
    assert select_providers("cpu") == ["CPUExecutionProvider"]


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_without_onnxruntime_gpu_is_a_clear_error():
    with pytest.raises(OnnxlockError, match="onnxruntime-gpu"):
        select_providers("cuda")


def test_session_computes_the_original(locked_mlp, digits):
    session = load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers="cpu")
    original = ort.InferenceSession(str(MODELS / "digits_mlp.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"pixels": digits["pixels"]}
    assert np.array_equal(session.run(None, feeds)[0], original.run(None, feeds)[0])


def test_passphrase_from_environment(locked_mlp, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    assert load_session(locked_mlp.model, locked_mlp.key, providers="cpu").get_inputs()[0].name == "pixels"
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(OnnxlockError, match="no passphrase"):
        load_session(locked_mlp.model, locked_mlp.key, providers="cpu")


def options_writing_the_model(tmp_path):
    optimized = ort.SessionOptions()
    optimized.optimized_model_filepath = str(tmp_path / "restored.onnx")
    context = ort.SessionOptions()
    context.add_session_config_entry("ep.context_enable", "1")
    return {"optimized_model_filepath": (optimized, None), "ep.context_enable": (context, None),
            "trt_engine_cache_enable": (None, [("TensorrtExecutionProvider", {"trt_engine_cache_enable": "True"}),
                                               "CPUExecutionProvider"])}


@pytest.mark.parametrize("option", ["optimized_model_filepath", "ep.context_enable", "trt_engine_cache_enable"])
def test_options_that_would_write_the_restored_model_are_refused(option, locked_mlp, tmp_path):
    options, providers = options_writing_the_model(tmp_path)[option]
    with pytest.raises(UnsafeOptionError, match=option):
        load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers=providers,
                     sess_options=options)
    assert list(tmp_path.iterdir()) == []


def test_harmless_session_options_pass_through(locked_mlp):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers="cpu",
                           sess_options=options)
    assert session.get_session_options().intra_op_num_threads == 1
