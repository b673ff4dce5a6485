"""How far a model's outputs are from a reference's, for choosing where confusion hurts most."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

SYNTHETIC_DIM = 32
# the locked output's largest magnitude must stay within these multiples of the original's
PLAUSIBLE_RANGE = (0.25, 4.0)


def cpu_session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    """A quiet CPU session over a model held in memory."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto | bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return cpu_session(model).run(None, feeds)


def synthetic_feeds(model: onnx.ModelProto, batch: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching the model's input specs (dynamic dims: ``batch`` first, 32 elsewhere)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (batch if i == 0 else SYNTHETIC_DIM)
                for i, d in enumerate(tensor_type.shape.dim)]  # some exporters write -1 for dynamic
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
            feeds[value.name] = rng.random(dims).astype(dtype)
        elif tensor_type.elem_type == TensorProto.BOOL:
            feeds[value.name] = rng.random(dims) < 0.5
        else:
            feeds[value.name] = rng.integers(0, 2, dims).astype(dtype)
    return feeds


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two arrays flattened; 0 when either is constant or not finite."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose arg-max over the last axis agrees."""
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def plausible(ref: np.ndarray, out: np.ndarray) -> bool:
    """Finite, and the largest magnitude within PLAUSIBLE_RANGE of the original's."""
    if not np.isfinite(out).all():
        return False
    peak, ref_peak = float(np.abs(out).max()), float(np.abs(ref).max())
    low, high = PLAUSIBLE_RANGE
    return low * ref_peak <= peak <= high * ref_peak


def damage(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """0 for identical outputs, ~1 for unrelated ones (class scores: top-1 disagreement; else 1-|r|); implausible outputs count as none."""
    scores = []
    for ref, out in zip(reference, outputs):
        if not plausible(ref, out):
            scores.append(0.0)  # inf, NaN, wild or dead outputs would point a thief at the changed layer
            continue
        if ref.ndim in (2, 3) and ref.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating):
            scores.append(1.0 - top1_agreement(ref, out))  # class scores: what counts is the decision
        else:
            scores.append(1.0 - abs(pearson(ref, out)))
    return float(np.mean(scores)) if scores else 0.0
