"""The CUDA path. Selection and fallback are tested everywhere; running on CUDA needs onnxruntime-gpu and a GPU."""

from __future__ import annotations

import warnings
from importlib import metadata

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import load_session
from onnxlock.runtime import ProviderFallbackWarning, select_providers
from onnxlock.runtime.providers import CPU, CUDA, warn_on_fallback

from conftest import MODELS, PASSPHRASE

HAS_CUDA = CUDA in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDAExecutionProvider (needs onnxruntime-gpu and a GPU)")


def test_auto_prefers_cuda_when_onnxruntime_offers_it(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    assert select_providers("auto") == select_providers(None) == select_providers("cuda") == [CUDA, CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert select_providers("auto") == [CPU]


class _Session:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


def test_fallback_to_cpu_is_one_warning_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_on_fallback([CUDA, CPU], _Session([CPU]))
        warn_on_fallback([CUDA, CPU], _Session([CUDA, CPU]))
        warn_on_fallback([CPU], _Session([CPU]))
    assert [w.category for w in caught] == [ProviderFallbackWarning]
    assert "\n" not in str(caught[0].message) and CUDA in str(caught[0].message)


def test_the_gpu_wheel_provides_the_onnxruntime_module():
    """With onnxlock[gpu] installed, `import onnxruntime` must be onnxruntime-gpu's."""
    try:
        gpu_version = metadata.version("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        pytest.skip("onnxruntime-gpu is not installed")
    assert ort.__version__ == gpu_version and CUDA in ort.get_available_providers()


@needs_cuda
def test_auto_picks_cuda_and_matches_the_original_on_cuda(locked_mlp, digits):
    session = load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE)
    assert session.get_providers()[0] == CUDA
    original = ort.InferenceSession(str(MODELS / "digits_mlp.onnx"), providers=[CUDA, CPU])
    feeds = {"pixels": digits["pixels"]}
    got, want = session.run(None, feeds)[0], original.run(None, feeds)[0]
    assert np.array_equal(got, want)
