"""The CUDA path: skipped unless onnxruntime-gpu sees a GPU (CI has none)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import load_session

from conftest import MODELS, PASSPHRASE

pytestmark = pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                reason="no CUDAExecutionProvider (needs onnxruntime-gpu and a GPU)")


def test_auto_picks_cuda_and_matches_the_original_on_cuda(locked_mlp, digits):
    session = load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE)
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    original = ort.InferenceSession(str(MODELS / "digits_mlp.onnx"),
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    feeds = {"pixels": digits["pixels"]}
    got, want = session.run(None, feeds)[0], original.run(None, feeds)[0]
    assert np.array_equal(got, want)
