"""Each attack as one call returning a JSON-ready dict: what the ``attack`` verb prints and
tools/report_attacks.py records. Scoring fields appear only when the truth is given."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from ...errors import InvalidArgumentError
from ..damage import run, top1_agreement
from .base_model import base_attack
from .changed_weights import score_weights, top_suspects
from .channels import Channel, Peeling, accuracy
from .detect import detect, null_labels, pool
from .health import health_score
from .peel import peel
from .prune import PRUNERS, RATES, prune_at
from .revert import REPAIRS, TOPS, reverts
from .scoring import roc_auc
from .search import search_attack
from .signs import recover_signs, sign_agreement
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
    if truth is not None and truth.counterfeits:
        found |= detection.evaluate(truth.counterfeits)
    return found | {"seconds": round(time.perf_counter() - start, 2)}


def run_weights_detect(locked: onnx.ModelProto, data: Data, truth: Truth | None) -> dict:
    """Per-weight suspicion scores (changed_weights.py); their AUC for the key's changed weights."""
    start = time.perf_counter()
    scores = score_weights(locked, data.feeds)
    found = {"attack": "weights", "scores": list(scores.scores), "top_suspects": top_suspects(scores)}
    if truth is not None and truth.changed_weights:
        found |= scores.evaluate(truth.changed_weights)
    return found | {"seconds": round(time.perf_counter() - start, 2)}


def run_revert(locked: onnx.ModelProto, data: Data, truth: Truth | None, *, tops=TOPS, repairs=REPAIRS) -> dict:
    """Every repair of the top-K suspects by every score (revert.py), judged on the held-out data;
    ``best`` by agreement with the original (else accuracy, else health), ``blind_choice`` the one
    a thief without labels would keep: the healthiest on their own inputs."""
    start = time.perf_counter()
    scores = score_weights(locked, data.feeds)
    results = []
    for score, k, repair, picks, model in reverts(locked, data.feeds, scores, tops, repairs):
        row = {"score": score, "top": k, "repair": repair, "health": round(health_score(model, data.feeds), 4)}
        if truth is not None and truth.changed_weights:
            row["reverted_changed"] = len(truth.changed_weights.intersection(picks))
        results.append(row | outcome(model, data, truth))
    judge = next((m for m in ("agreement", "accuracy") if results and m in results[0]), "health")
    return {"attack": "revert", "judged_by": judge, "before": outcome(locked, data, truth)
            | {"health": round(health_score(locked, data.feeds), 4)},
            "best": max(results, key=lambda r: r[judge]) if results else None,
            "blind_choice": max(results, key=lambda r: r["health"]) if results else None,
            "results": results, "seconds": round(time.perf_counter() - start, 2)}


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


def run_signs(locked: onnx.ModelProto, data: Data, truth: Truth | None) -> dict:
    """Signs recovered from BatchNormalization statistics (signs.py); with the truth, the share of
    each layer's signs that match the original's before and after."""
    start = time.perf_counter()
    recovery = recover_signs(locked, data.feeds)
    layers = recovery.layers
    if truth is not None:
        names = [layer["weight"] for layer in layers]
        before, after = (sign_agreement(m, truth.original, names) for m in (locked, recovery.model))
        layers = [layer | {"signs_right_before": round(before[layer["weight"]], 4),
                           "signs_right_after": round(after[layer["weight"]], 4)}
                  if layer["weight"] in after else layer for layer in layers]
    return {"attack": "signs", "layers": layers, "before": outcome(locked, data, truth),
            "after": outcome(recovery.model, data, truth), "seconds": round(time.perf_counter() - start, 2)}


def run_base(locked: onnx.ModelProto, base: onnx.ModelProto, data: Data, truth: Truth | None) -> dict:
    """The base-model attack (base_model.py): counterfeits deleted by how unlike every base channel
    they are, signs copied from the base; with the truth, how well the channels were told apart
    (ROC AUC of the mismatch) and the share of signs now right."""
    start = time.perf_counter()
    found = base_attack(locked, base)
    seconds = time.perf_counter() - start
    result = {"attack": "base", "signs_copied": len(found.copied)} | removed(found.removed, truth)
    if truth is not None:
        channels = sorted(found.scores)
        positive = np.array([c in truth.counterfeits for c in channels], dtype=bool)
        auc = roc_auc(np.array([found.scores[c] for c in channels]), positive) if len(channels) else None
        result["counterfeit_auc"] = None if auc is None else round(auc, 4)
        signs = sign_agreement(found.model, truth.original, found.copied)
        result["signs_right"] = round(float(np.mean(list(signs.values()))), 4) if signs else None
    return result | {"before": outcome(locked, data, truth), "after": outcome(found.model, data, truth),
                     "seconds": round(seconds, 2)}


def run_search(locked: onnx.ModelProto, data: Data, truth: Truth) -> dict:
    if data.labels is None:
        raise InvalidArgumentError("the search attack needs labels (--labels)")
    if not truth.counterfeits:
        raise InvalidArgumentError("the told-groups search needs a key with confusion channels")
    start = time.perf_counter()
    result = search_attack(locked, truth.widened(), data.feeds, data.labels)
    return {"attack": "search", "told": truth.widened(), "trials": result["trials"],
            "before": outcome(locked, data, truth), "after": outcome(result["model"], data, truth),
            "seconds": round(time.perf_counter() - start, 2)}


def run_finetune(locked: onnx.ModelProto, data: Data, truth: Truth | None, *, fractions, steps: int) -> dict:
    from .finetune import finetune_attack

    if data.labels is None or data.test_labels is None:
        raise InvalidArgumentError("fine-tuning needs labelled training data (--labels) and labelled --test data")
    if len(data.feeds) != 1:
        raise InvalidArgumentError("fine-tuning supports models with one input")
    (train_x,), (test_x,) = data.feeds.values(), data.test_feeds.values()
    results = finetune_attack(locked, train_x, data.labels, test_x, data.test_labels, fractions, steps)
    found = {"attack": "finetune", "accuracy_locked": round(accuracy(locked, data.test_feeds, data.test_labels), 4)}
    if truth is not None:  # the share of the lost accuracy won back, as the AdvParams paper reports it
        found["accuracy_original"] = round(accuracy(truth.original, data.test_feeds, data.test_labels), 4)
        for row in results:
            row |= {f"recovered_share{suffix}": recovered_share(row[f"accuracy_{start}"], found)
                    for start, suffix in (("finetuned", ""), ("signs_learned", "_signs"), ("scratch", "_scratch"))}
    return found | {"results": results}


def recovered_share(value: float, found: dict) -> float | None:
    """(value - locked) / (original - locked): 0 is the locked model, 1 the original."""
    lost = found["accuracy_original"] - found["accuracy_locked"]
    return round((value - found["accuracy_locked"]) / lost, 4) if lost > 0 else None
