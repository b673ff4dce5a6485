"""Each attack as one call returning a JSON-ready dict: what the ``attack`` verb prints and
tools/report_attacks.py records. Scoring fields appear only when the truth is given."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from ..damage import run, top1_agreement
from .channels import Channel, Peeling, accuracy
from .detect import detect, null_labels, pool
from .peel import peel
from .prune import PRUNERS, RATES, prune_at
from .search import search_attack
from .truth import Truth

TOP = 10  # suspects listed by detect


@dataclass
class Data:
    """The thief's inputs (``feeds``, unlabelled unless ``labels``) and held-out data to judge by."""

    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    test_feeds: dict[str, np.ndarray] | None = None
    test_labels: np.ndarray | None = None
    metric: Callable[[onnx.ModelProto], dict] | None = None  # a task's own measure on the held-out data

    @property
    def judge(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        if self.test_feeds is not None:
            return self.test_feeds, self.test_labels
        return self.feeds, self.labels


def outcome(model: onnx.ModelProto, data: Data, truth: Truth | None) -> dict:
    """Accuracy (with labels) and agreement with the original (with the truth) on the held-out data."""
    feeds, labels = data.judge
    found = {}
    if labels is not None:
        found["accuracy"] = round(accuracy(model, feeds, labels), 4)
    if truth is not None:
        found["agreement"] = round(top1_agreement(run(truth.original, feeds)[0], run(model, feeds)[0]), 4)
    if data.metric is not None:
        found |= data.metric(model)
    return found


def removed(channels: list[Channel], truth: Truth | None) -> dict:
    found = {"removed": len(channels)}
    if truth is not None:
        found["removed_counterfeit"] = sum(c in truth.counterfeits for c in channels)
        found["removed_genuine"] = found["removed"] - found["removed_counterfeit"]
        found["counterfeits"] = len(truth.counterfeits)
    return found


def run_detect(locked: onnx.ModelProto, data: Data, truth: Truth | None, *, ablation: bool = True,
               health: str = "auto") -> dict:
    start = time.perf_counter()
    detection = detect(locked, data.feeds, ablation=ablation, health=health)
    order = np.argsort(-detection.combined(), kind="stable")[:TOP]
    found = {"attack": "detect", "scores": list(detection.scores),
             "top_suspects": [{"group": detection.channels[i].group, "position": detection.channels[i].position}
                              for i in order]}
    if truth is not None:
        found |= detection.evaluate(truth.counterfeits)
    return found | {"seconds": round(time.perf_counter() - start, 2)}


def run_detect_pooled(locks: list[tuple[onnx.ModelProto, Truth]], data: Data, *, ablation: bool = True,
                      seed: int = 0) -> dict:
    """Detection on several locks of one model, pooled (see detect.pool), against the truth and
    against random genuine channels (chance)."""
    start = time.perf_counter()
    detections = [detect(model, data.feeds, ablation=ablation) for model, _ in locks]
    positives = [np.array([c in truth.counterfeits for c in d.channels], dtype=bool)
                 for d, (_, truth) in zip(detections, locks)]
    pooled = pool(detections)
    found = {"attack": "detect_pooled", "locks": len(locks)} | pooled.evaluate_labels(np.concatenate(positives))
    found["chance"] = pooled.evaluate_labels(null_labels(positives, np.random.default_rng(seed)))
    return found | {"seconds": round(time.perf_counter() - start, 2)}


def run_peel(locked: onnx.ModelProto, data: Data, truth: Truth | None, *, health: str = "auto",
             max_steps: int | None = None) -> dict:
    start = time.perf_counter()
    result = peel(locked, data.feeds, health=health, max_steps=max_steps)
    seconds = time.perf_counter() - start
    return ({"attack": "peel", "health": health, "health_trace": [round(h, 4) for h in result.health]}
            | removed(result.removed, truth) | {"before": outcome(locked, data, truth)}
            | {"after": outcome(result.peeling.model, data, truth), "seconds": round(seconds, 2)})


def removed_by(start: Peeling, after: Peeling) -> list[Channel]:
    return sorted(set(start.channels()) - set(after.channels()))


def run_prune(locked: onnx.ModelProto, data: Data, truth: Truth | None, *, pruners=PRUNERS,
              rates=RATES) -> dict:
    start, results = Peeling.start(locked), []
    for pruner in pruners:
        for rate, after in zip(rates, prune_at(locked, data.feeds, pruner, list(rates))):
            results.append({"pruner": pruner, "rate": rate} | removed(removed_by(start, after), truth)
                           | outcome(after.model, data, truth))
    return {"attack": "prune", "before": outcome(locked, data, truth), "results": results}


def run_search(locked: onnx.ModelProto, data: Data, truth: Truth) -> dict:
    if data.labels is None:
        raise ValueError("the search attack needs labels (--labels)")
    start = time.perf_counter()
    result = search_attack(locked, truth.widened(), data.feeds, data.labels)
    return {"attack": "search", "told": truth.widened(), "trials": result["trials"],
            "before": outcome(locked, data, truth), "after": outcome(result["model"], data, truth),
            "seconds": round(time.perf_counter() - start, 2)}


def run_finetune(locked: onnx.ModelProto, data: Data, truth: Truth | None, *, fractions, steps: int) -> dict:
    from .finetune import finetune_attack

    if data.labels is None or data.test_labels is None:
        raise ValueError("fine-tuning needs labelled training data (--labels) and labelled --test data")
    if len(data.feeds) != 1:
        raise ValueError("fine-tuning supports models with one input")
    (train_x,), (test_x,) = data.feeds.values(), data.test_feeds.values()
    return {"attack": "finetune", "results": finetune_attack(locked, train_x, data.labels, test_x,
                                                             data.test_labels, fractions, steps)}
