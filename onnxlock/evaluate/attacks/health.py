"""How healthy a model looks on unlabelled inputs, each measure in [0, 1], higher is healthier.

- ``diversity``: entropy of the predicted classes over the batch (a broken classifier often
  answers one class for everything), divided by log(classes).
- ``confidence``: mean top-1 probability.
- ``stability``: agreement of the decisions under small input noise.
- ``batchnorm``: how well each BatchNormalization's running statistics fit the batch statistics
  of its input, exp(-mean squared mismatch).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..damage import run
from .activity import tensor_values

MEASURES = ("diversity", "confidence", "stability", "batchnorm")
NOISE = 0.05  # input noise for ``stability``, as a share of each input's standard deviation


def probabilities(scores: np.ndarray) -> np.ndarray:
    """The class probabilities of scores over the last axis (softmax unless they already sum to 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.min() >= 0 and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def diversity(scores: np.ndarray) -> float:
    classes = scores.shape[-1]
    counts = np.bincount(np.argmax(scores, axis=-1).reshape(-1), minlength=classes) + 1e-12
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(classes))


def noisy(feeds: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (a + NOISE * a.std() * rng.standard_normal(a.shape)).astype(a.dtype)
            if np.issubdtype(a.dtype, np.floating) else a for name, a in feeds.items()}


def batchnorm_fit(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float | None:
    nodes = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not nodes:
        return None
    inits = {t.name: t for t in model.graph.initializer}
    values = tensor_values(model, feeds, [n.input[0] for n in nodes])
    mismatch = []
    for node in nodes:
        if node.input[0] not in values or node.input[3] not in inits or node.input[4] not in inits:
            continue
        data = np.moveaxis(np.asarray(values[node.input[0]], dtype=np.float64), 1, 0)
        data = data.reshape(data.shape[0], -1)
        mean = numpy_helper.to_array(inits[node.input[3]]).astype(np.float64)
        var = numpy_helper.to_array(inits[node.input[4]]).astype(np.float64) + 1e-5
        mismatch.append(np.mean((data.mean(axis=1) - mean) ** 2 / var + np.log((data.var(axis=1) + 1e-5) / var) ** 2))
    return float(np.exp(-np.mean(mismatch))) if mismatch else None


def health(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Every measure that applies to ``model`` (the class measures need class scores as first output)."""
    found = {}
    scores = run(model, feeds)[0]
    if scores.ndim >= 2 and scores.shape[-1] > 1 and np.issubdtype(scores.dtype, np.floating):
        found["diversity"] = diversity(scores)
        found["confidence"] = float(probabilities(scores).max(axis=-1).mean())
        moved = run(model, noisy(feeds))[0]
        found["stability"] = float(np.mean(np.argmax(scores, axis=-1) == np.argmax(moved, axis=-1)))
    fit = batchnorm_fit(model, feeds)
    if fit is not None:
        found["batchnorm"] = fit
    return found


def health_score(model: onnx.ModelProto, feeds: dict[str, np.ndarray], measure: str = "auto") -> float:
    """One measure, or ``auto``: the mean of every measure that applies; 0 (no health) where a
    model's outputs are not finite (NaN would compare as neither better nor worse)."""
    found = health(model, feeds)
    if measure == "auto":
        score = float(np.mean(list(found.values()))) if found else 0.0
    elif measure not in found:
        raise ValueError(f"health measure {measure!r} does not apply to this model (has: {', '.join(found)})")
    else:
        score = found[measure]
    return score if np.isfinite(score) else 0.0
