"""Peeling without labels: score every channel, delete the suspect whose deletion makes the model
look healthiest, recompute, repeat while health improves.

The suspects of each step are the few most suspicious channels by each detection score and by
their rank average (a thief does not know which fingerprint a lock leaves, so tries them all);
the unlabelled health measure (see ``health``) decides which one goes, and when to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ...runtime.session import ORT_ERRORS
from .channels import Channel, Peeling
from .detect import detect
from .health import health_score

PER_SCORE = 2  # suspects taken from the top of each score per step
TOLERANCE = 1e-4  # a deletion must improve health by more than this


@dataclass
class PeelResult:
    peeling: Peeling
    removed: list[Channel] = field(default_factory=list)
    health: list[float] = field(default_factory=list)  # before any deletion, then after each


def suspects(peeling: Peeling, feeds: dict[str, np.ndarray], per_score: int = PER_SCORE) -> list[Channel]:
    """The channels worth trying next: the top of every detection score, ties broken by the rank average."""
    detection = detect(peeling.model, feeds, ablation=False, peeling=peeling)
    combined = detection.combined()
    deletable = np.array([len(peeling.alive[c.group]) > 1 for c in detection.channels])
    picked: dict[Channel, None] = {}
    for values in [*detection.scores.values(), combined]:
        order = np.lexsort((-combined, -np.nan_to_num(values, nan=-np.inf)))
        for index in [i for i in order if deletable[i]][:per_score]:
            picked[detection.channels[index]] = None
    return list(picked)


def peel(locked: onnx.ModelProto, feeds: dict[str, np.ndarray], *, health: str = "auto",
         max_steps: int | None = None, per_score: int = PER_SCORE) -> PeelResult:
    """Delete channels one at a time while the model's unlabelled health improves."""
    result = PeelResult(Peeling.start(locked))
    result.health.append(health_score(locked, feeds, health))
    if max_steps is None:
        max_steps = max(1, len(result.peeling.channels()) // 10)
    for _ in range(max_steps):
        tried = [(score, channel, trial) for channel in suspects(result.peeling, feeds, per_score)
                 for trial in [result.peeling.without([channel])]
                 for score in [_health_or_none(trial.model, feeds, health)] if score is not None]
        if not tried:
            break
        best, channel, trial = max(tried, key=lambda t: t[0])
        if best <= result.health[-1] + TOLERANCE:
            break
        result.peeling, result.removed = trial, [*result.removed, channel]
        result.health.append(best)
    return result


def _health_or_none(model: onnx.ModelProto, feeds: dict[str, np.ndarray], health: str) -> float | None:
    """``health_score``, or None when onnxruntime refuses the trial model: a deletion the graph
    cannot take (seen beside a Split on NudeNet) is no candidate, as it is none for a thief."""
    try:
        return health_score(model, feeds, health)
    except ORT_ERRORS:
        return None
