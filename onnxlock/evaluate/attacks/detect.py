"""Detection: every per-channel statistic a thief computes first, on the locked file and
unlabelled inputs, and how well each separates counterfeit from genuine channels (ROC AUC).

Scores are higher for more suspicious channels. Group-level scores (width) give every channel of
a group the same value. ``ablation_*`` scores delete each channel alone and measure how much
healthier the model looks without it (costly: one model per channel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..activations import model_input_means
from .activity import activation_scores
from .channels import Channel, Peeling
from .health import health_score
from .scoring import logistic_cv, rank_average, roc_auc
from .weights import weight_scores

MAX_ABLATION = 4096  # channels: above this, ablation is left out


@dataclass
class Detection:
    """One value per channel for each score (NaN where a score does not apply to the channel's group)."""

    channels: list[Channel]
    scores: dict[str, np.ndarray]

    def combined(self) -> np.ndarray:
        """The unsupervised combination: the average rank over every score."""
        return rank_average(self.scores)

    def evaluate(self, counterfeits: frozenset[Channel]) -> dict:
        """ROC AUC of each score and of the combinations against the truth."""
        return self.evaluate_labels(np.array([c in counterfeits for c in self.channels], dtype=bool))

    def evaluate_labels(self, positive: np.ndarray) -> dict:
        """As ``evaluate``, with the counterfeits given as one flag per channel."""
        per_score = {name: roc_auc(v, positive) for name, v in self.scores.items()}
        known = {k: v for k, v in per_score.items() if v is not None}
        best = max(known, key=known.get) if known else None
        return {"channels": len(self.channels), "counterfeits": int(positive.sum()),
                "auc": {k: None if v is None else round(v, 4) for k, v in per_score.items()},
                "best_single": best, "best_single_auc": None if best is None else round(known[best], 4),
                "rank_average_auc": _round(roc_auc(self.combined(), positive)),
                "logistic_cv_auc": _round(logistic_cv(self.scores, positive))}


def pool(detections: list[Detection]) -> Detection:
    """Several locks' detections as one (channels concatenated; the scores every lock has): with a
    few counterfeits per lock, one lock's AUC is mostly chance, many locks' pooled AUC is not."""
    names = [n for n in detections[0].scores if all(n in d.scores for d in detections)]
    return Detection([c for d in detections for c in d.channels],
                     {n: np.concatenate([d.scores[n] for d in detections]) for n in names})


def null_labels(positives: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """As many random genuine channels per lock as it has counterfeits: the labels under which every
    AUC measures chance alone (the baseline a 'best' score must be read against)."""
    parts = []
    for positive in positives:
        fake = np.zeros(len(positive), dtype=bool)
        fake[rng.choice(np.flatnonzero(~positive), size=min(int(positive.sum()), int((~positive).sum())),
                        replace=False)] = True
        parts.append(fake)
    return np.concatenate(parts)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def detect(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, ablation: bool = True,
           health: str = "auto", peeling: Peeling | None = None) -> Detection:
    """Score every channel of every widenable group of ``model`` (or of ``peeling``'s model)."""
    peeling = peeling or Peeling.start(model)
    model = peeling.model
    ordered = [peeling.groups[name] for name in peeling.alive]
    means = model_input_means(model, feeds)
    per_group = [weight_scores(g, means) | acts for g, acts in zip(ordered, activation_scores(model, ordered, feeds))]
    names = list(dict.fromkeys(name for scores in per_group for name in scores))
    columns = {}
    for name in names:
        parts = [scores.get(name) for scores in per_group]
        parts = [np.full(g.channels, np.nan) if p is None else np.asarray(p, dtype=np.float64)
                 for g, p in zip(ordered, parts)]
        column = np.concatenate(parts) if parts else np.zeros(0)
        if not np.isnan(column).all():
            columns[name] = column
    channels = peeling.channels()
    if ablation and len(channels) <= MAX_ABLATION:
        columns[f"ablation_{health}"] = ablation_gain(peeling, feeds, health)
    return Detection(channels, columns)


def ablation_gain(peeling: Peeling, feeds: dict[str, np.ndarray], health: str = "auto") -> np.ndarray:
    """How much healthier the model looks with each channel deleted alone."""
    base = health_score(peeling.model, feeds, health)
    gains = []
    for channel in peeling.channels():
        if len(peeling.alive[channel.group]) < 2:
            gains.append(np.nan)
            continue
        gains.append(health_score(peeling.without([channel]).model, feeds, health) - base)
    return np.array(gains, dtype=np.float64)
