"""How far a model's outputs are from a reference's, for choosing where confusion hurts most."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ..graph.external import too_large

SYNTHETIC_DIM = 32
# the locked output's largest magnitude must stay within these multiples of the original's
PLAUSIBLE_RANGE = (0.25, 4.0)
MAX_DAMAGE = 1.0  # damage()'s upper bound: unrelated outputs


def cpu_session(model: onnx.ModelProto | bytes, threads: int = 0) -> ort.InferenceSession:
    """A quiet CPU session over a model held in memory; ``threads`` > 0 caps its thread pool and
    turns off spinning (spinning workers on a busy, small CPU slow every run several-fold). A
    model past protobuf's 2 GiB gets its large weights handed over in memory instead."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if isinstance(model, bytes) or not too_large(model):
        return ort.InferenceSession(model if isinstance(model, bytes) else model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])
    skeleton, weights = stubbed(model)
    values = [ort.OrtValue.ortvalue_from_numpy(w) for w in weights.values()]
    options.add_external_initializers(list(weights), values)
    session = ort.InferenceSession(skeleton.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.onnxlock_weights = values  # onnxruntime may read them in place: they live as long as the session
    return session


def stubbed(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``model`` with its initializers above INLINE_BYTES as stubs, and those weights as arrays."""
    from ..graph.normalize import is_small, shell
    from .subgraph import stub

    skeleton, weights = shell(model), {}
    for tensor in model.graph.initializer:
        if is_small(tensor):
            skeleton.graph.initializer.append(tensor)
        else:
            weights[tensor.name] = numpy_helper.to_array(tensor)
            skeleton.graph.initializer.append(stub(tensor.name, tensor.data_type, tensor.dims))
    return skeleton, weights


def run(model: onnx.ModelProto | bytes, feeds: dict[str, np.ndarray], threads: int = 0) -> list[np.ndarray]:
    return cpu_session(model, threads).run(None, feeds)


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
    """Correlation of two arrays flattened, over the positions where both are finite; 0 when either
    is constant there. Scaled first, so huge values cannot overflow."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    if a.size < 2:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    scale_a, scale_b = np.abs(a).max(), np.abs(b).max()
    if scale_a == 0 or scale_b == 0:
        return 0.0
    a, b = a / scale_a, b / scale_b
    denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.clip(np.dot(a, b) / denominator, -1.0, 1.0)) if denominator > 0 else 0.0


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose arg-max over the last axis agrees (a row holding NaN agrees with nothing)."""
    a, b = np.asarray(a), np.asarray(b)
    agree = np.argmax(a, axis=-1) == np.argmax(b, axis=-1)
    if np.issubdtype(b.dtype, np.floating):
        agree &= ~np.isnan(b).any(axis=-1)
    return float(np.mean(agree))


def plausible(ref: np.ndarray, out: np.ndarray) -> bool:
    """Finite wherever the original is, and the largest finite magnitude within PLAUSIBLE_RANGE of
    the original's (inf, NaN, wild or dead outputs would point a thief at the changed layer)."""
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape != out.shape:
        return False
    if not (np.issubdtype(ref.dtype, np.number) and np.issubdtype(out.dtype, np.number)):
        return True  # strings and booleans have no scale
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    finite = np.isfinite(ref)
    if not np.isfinite(out[finite]).all():
        return False
    if not finite.any():
        return True
    ref_peak, peak = float(np.abs(ref[finite]).max()), float(np.abs(out[finite]).max())
    low, high = PLAUSIBLE_RANGE
    return low * ref_peak <= peak <= high * ref_peak


def all_plausible(reference: list[np.ndarray], outputs: list[np.ndarray]) -> bool:
    """Whether every output is plausible next to the original's (what a lock may ship)."""
    return len(reference) == len(outputs) and all(plausible(r, o) for r, o in zip(reference, outputs))


def damage(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """How different ``outputs`` are from the original's, in [0, 1] whatever their values: 0 for
    identical, ~1 for unrelated (class scores: top-1 disagreement; else 1-|r|, non-finite values
    counting as changed). Whether a lock may ship them is ``all_plausible``'s question."""
    scores = []
    for ref, out in zip(reference, outputs):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            scores.append(1.0)
        elif ref.ndim in (2, 3) and ref.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating):
            scores.append(1.0 - top1_agreement(ref, out))  # class scores: what counts is the decision
        elif not np.issubdtype(ref.dtype, np.number) or not np.issubdtype(out.dtype, np.number):
            scores.append(0.0 if np.array_equal(ref, out) else 1.0)
        else:
            changed = float(np.mean(np.isfinite(ref) != np.isfinite(out))) if ref.size else 0.0
            scores.append(max(changed, 1.0 - abs(pearson(ref, out))))
    score = float(np.mean(scores)) if scores else 0.0
    return float(np.clip(score, 0.0, MAX_DAMAGE))


def drift(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Mean relative change of the numeric outputs (0 when identical): a tie-break where ``damage``
    saturates, e.g. class scores that moved without changing any decision."""
    changes = []
    for ref, out in zip(reference, outputs):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape == out.shape and ref.size and np.issubdtype(ref.dtype, np.number):
            ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                change = float(np.nanmean(np.abs(out64 - ref64)) / (np.nanmean(np.abs(ref64)) + 1e-12))
            changes.append(change if np.isfinite(change) else 0.0)
    return float(np.mean(changes)) if changes else 0.0
