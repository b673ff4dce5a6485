"""Which single weights were changed (AdvParams): per-weight suspicion scores over the Conv, Gemm and
MatMul weight tensors of a locked file (passes.advparams.weight_names), from the file and
unlabelled inputs only. Higher is more suspicious.

- ``magnitude``: the rank of |value| within its tensor, scaled to [0, 1];
- ``filter_z``: |z-score| within its filter (row along axis 0);
- ``gradient``: |d loss / d weight| of the unlabelled health loss ``output`` (health_loss.py), on
  the thief's inputs: a changed weight is where the outputs are most sensitive, and moving it back
  is what would make the model look healthier;
- ``taylor``: |gradient x value|, the first-order estimate of the loss change if it were zeroed;
- ``gradient_batchnorm`` and ``taylor_batchnorm``: the same for the ``batchnorm`` loss, where the
  model has BatchNormalization (a changed filter moves its channel's batch statistics).

The gradient scores need torch (the ``[train]`` extra); without it, or for a graph onnx2torch
cannot convert, only the first two are computed. One float32 array per tensor, never one for all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ...errors import UnsupportedGraphError
from ...graph.normalize import initializer_arrays
from ...passes.advparams import weight_names
from .scoring import average_ranks, roc_auc_parts

Position = tuple[str, int]  # (tensor name, flat index)
TOP = 10  # suspects listed per score
THREADS = 1


@dataclass
class WeightScores:
    """Per score, one flat array per tensor of ``names`` (same order), higher more suspicious."""

    names: list[str]
    scores: dict[str, list[np.ndarray]]

    def indices(self, positions) -> list[np.ndarray]:
        """``positions`` as one index array per tensor (positions in other tensors are left out)."""
        by_name = {name: [] for name in self.names}
        for name, index in positions:
            if name in by_name:
                by_name[name].append(index)
        return [np.array(sorted(by_name[name]), dtype=np.int64) for name in self.names]

    def evaluate(self, changed: frozenset[Position]) -> dict:
        """ROC AUC of each score for the ``changed`` weights against every other scored weight."""
        positives = self.indices(changed)
        scored = sum(len(p) for p in positives)
        auc = {score: roc_auc_parts(parts, positives) for score, parts in self.scores.items()}
        known = {k: v for k, v in auc.items() if v is not None}
        best = max(known, key=known.get) if known else None
        return {"weights": sum(self.sizes()), "changed": len(changed),
                "changed_unscored": len(changed) - scored,
                "auc": {k: None if v is None else round(v, 4) for k, v in auc.items()},
                "best_single": best, "best_single_auc": None if best is None else round(known[best], 4)}

    def top(self, score: str, k: int) -> list[Position]:
        """The ``k`` most suspicious weights by ``score``, most suspicious first."""
        candidates = []
        for name, part in zip(self.names, self.scores[score]):
            keep = min(k, len(part))
            index = np.argpartition(-part, keep - 1)[:keep] if keep < len(part) else np.arange(len(part))
            candidates += [(float(part[i]), name, int(i)) for i in index]
        candidates.sort(key=lambda c: -c[0])
        return [(name, index) for _, name, index in candidates[:k]]


    def sizes(self) -> list[int]:
        return [len(part) for part in next(iter(self.scores.values()))]

    def random(self, k: int, seed: int = 0) -> list[Position]:
        """``k`` weights drawn uniformly: the control a score's picks are read against."""
        sizes = self.sizes()
        flat = np.random.default_rng(seed).choice(sum(sizes), size=min(k, sum(sizes)), replace=False)
        starts = np.cumsum([0] + sizes)
        tensor = np.searchsorted(starts, flat, "right") - 1
        return [(self.names[t], int(f - starts[t])) for t, f in zip(tensor, flat)]


def magnitude_rank(values: np.ndarray) -> np.ndarray:
    flat = np.abs(values.reshape(-1).astype(np.float64))
    return (average_ranks(flat) / max(len(flat) - 1, 1)).astype(np.float32)


def filter_z(values: np.ndarray) -> np.ndarray:
    rows = values.reshape(values.shape[0], -1).astype(np.float64)
    std = rows.std(axis=1, keepdims=True)
    return (np.abs(rows - rows.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1)).reshape(-1).astype(np.float32)


def gradient_scores(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str],
                    arrays: dict[str, np.ndarray]) -> tuple[list[str], dict[str, list[np.ndarray]]]:
    """The gradient scores (names they cover, scores) or ([], {}) without torch or a bridge."""
    try:
        from ...torchbridge import TorchBridge
        from .health_loss import available, expose_logits, health_loss

        bridge = TorchBridge(expose_logits(model), feeds, THREADS)
    except (ImportError, UnsupportedGraphError):
        return [], {}
    names = [n for n in names if n in bridge.bindings]
    found = {}
    for measure in available(bridge, feeds):
        with health_loss(bridge, measure) as loss:
            _, grads = bridge.gradients(loss, feeds, names)
        suffix = "" if measure == "output" else f"_{measure}"
        g = [np.nan_to_num(np.abs(grads[n]).reshape(-1)).astype(np.float32) for n in names]
        found[f"gradient{suffix}"] = g
        found[f"taylor{suffix}"] = [gi * np.abs(arrays[n].reshape(-1)).astype(np.float32) for gi, n in zip(g, names)]
        del grads
    return names, found


def score_weights(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> WeightScores:
    """Every score of every candidate weight of ``model`` on the unlabelled ``feeds``."""
    names = weight_names(model)
    if not names:
        raise UnsupportedGraphError("no Conv, Gemm or MatMul weight to score")
    arrays = {n: a for n, a in initializer_arrays(model).items() if n in names}
    bound, gradients = gradient_scores(model, feeds, names, arrays)
    names = bound or names  # the weights torch holds: every score covers the same ones
    scores = {"magnitude": [magnitude_rank(arrays[n]) for n in names],
              "filter_z": [filter_z(arrays[n]) for n in names]}
    return WeightScores(names, scores | gradients)


def top_suspects(scores: WeightScores) -> dict[str, list[list]]:
    return {score: [[name, index] for name, index in scores.top(score, TOP)] for score in scores.scores}
