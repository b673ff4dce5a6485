"""How strong a lock is: lock a model, run it without and with the key, compare with the original.

A *case* is a model with its calibration feeds, evaluation feeds, a metric of the locked model's
outputs against the original's, and the target that metric should reach for the lock to count as
useful. ``measure`` locks one case and returns a JSON-ready dict: the damage done without the key,
and whether the key restores the original exactly (outputs and weights).
"""

from __future__ import annotations

import functools
import inspect
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..bundled import bundled_path
from ..graph.io import load_model
from ..lock import lock_model, write_locked
from ..runtime import load_session, restore_model
from ..runtime.feeds import load_npz
from . import ocr
from .damage import cpu_session, pearson, top1_agreement

PASSPHRASE = "strength report"
KDF_PARAMS = {"n": 2**12}  # cheap scrypt: the report measures the lock, not the key derivation
LOCK_DEFAULTS = {name: p.default for name, p in inspect.signature(lock_model).parameters.items()
                 if p.default is not inspect.Parameter.empty}

CHANCE = 0.10  # 10 balanced digit classes
OCR_CALIB_SEED, OCR_EVAL_SEED = 100, 0
OCR_CALIB_LINES, OCR_EVAL_LINES = 8, 16

Outputs = list[np.ndarray]


@dataclass(frozen=True)
class Target:
    """What the metric must reach: ``value <= bound``, ``value >= bound`` or ``|value| <= bound``."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        checks = {"<=": value <= self.bound, ">=": value >= self.bound, "|x|<=": abs(value) <= self.bound}
        return bool(np.isfinite(value) and checks[self.op])

    def describe(self) -> str:
        return f"|x| <= {self.bound:g}" if self.op == "|x|<=" else f"{self.op} {self.bound:g}"


@dataclass(frozen=True)
class Case:
    """A model to lock and how to judge the lock; the callables are cached, so cheap to call again."""

    name: str
    model_path: Callable[[], Path]
    calibration: Callable[[], dict[str, np.ndarray]]
    evaluation: Callable[[], dict[str, np.ndarray]]
    compare: Callable[[Outputs, Outputs], dict[str, float]]  # (original, locked) -> metrics
    metric: str  # the key of ``compare``'s result that is judged
    target: Target


# --- inputs -------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def digits_arrays(split: str) -> dict[str, np.ndarray]:
    """'calib' (training images) or 'test' (held-out): pixels and labels."""
    return load_npz(bundled_path(f"digits_{split}.npz"))


def digits_feeds(split: str) -> dict[str, np.ndarray]:
    return {"pixels": digits_arrays(split)["pixels"]}


@functools.lru_cache(maxsize=None)
def ocr_path(kind: str) -> Path:
    return ocr.ocr_model_paths()[kind]


@functools.lru_cache(maxsize=None)
def ocr_lines(n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    return ocr.render_text_lines(n, seed=seed)


def ocr_batch(kind: str, n: int, seed: int) -> np.ndarray:
    """The batch the ``kind`` model reads: a page (det), lines (rec), lines upright and flipped (cls)."""
    if kind == "det":
        return ocr.det_input(ocr.render_page(seed))
    images = [img for _, img in ocr_lines(n, seed)]
    if kind == "rec":
        return ocr.rec_input(images)
    return ocr.cls_input(images + [np.ascontiguousarray(img[::-1, ::-1]) for img in images])


def ocr_feeds(kind: str, calibration: bool) -> dict[str, np.ndarray]:
    if calibration:
        return {"x": ocr_batch(kind, OCR_CALIB_LINES, OCR_CALIB_SEED)}
    return {"x": ocr_batch(kind, OCR_EVAL_LINES, OCR_EVAL_SEED)}


# --- metrics (original outputs, locked outputs) -------------------------------------


def compare_digits(original: Outputs, locked: Outputs) -> dict[str, float]:
    labels = digits_arrays("test")["labels"]
    return {"top1_agreement": top1_agreement(original[0], locked[0]),
            "accuracy_original": float(np.mean(original[0].argmax(-1) == labels)),
            "accuracy_locked": float(np.mean(locked[0].argmax(-1) == labels))}


def compare_rec(original: Outputs, locked: Outputs) -> dict[str, float]:
    charset = ocr.rec_charset(ocr_path("rec"))
    decode = lambda probs: [t.strip() for t in ocr.ctc_decode(probs, charset)]  # noqa: E731
    refs, hyps = decode(original[0]), decode(locked[0])
    truth = [text for text, _ in ocr_lines(OCR_EVAL_LINES, OCR_EVAL_SEED)]
    return {"cer": ocr.character_error_rate(hyps, refs),
            "cer_truth_original": ocr.character_error_rate(refs, truth),
            "cer_truth_locked": ocr.character_error_rate(hyps, truth)}


def compare_det(original: Outputs, locked: Outputs) -> dict[str, float]:
    return {"map_correlation": pearson(original[0], locked[0])}


def compare_cls(original: Outputs, locked: Outputs) -> dict[str, float]:
    return {"top1_agreement": top1_agreement(original[0], locked[0])}


# --- the registry -------------------------------------------------------------------


def digits_case(name: str) -> Case:
    return Case(name, lambda: bundled_path(name), lambda: digits_feeds("calib"), lambda: digits_feeds("test"),
                compare_digits, "top1_agreement", Target("<=", CHANCE + 0.05))


def ocr_case(kind: str, compare: Callable, metric: str, target: Target) -> Case:
    return Case(f"ocr_{kind}", lambda: ocr_path(kind), lambda: ocr_feeds(kind, True),
                lambda: ocr_feeds(kind, False), compare, metric, target)


CASES: dict[str, Case] = {case.name: case for case in (
    *(digits_case(name) for name in ("digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer")),
    ocr_case("det", compare_det, "map_correlation", Target("|x|<=", 0.1)),
    ocr_case("rec", compare_rec, "cer", Target(">=", 0.9)),
    ocr_case("cls", compare_cls, "top1_agreement", Target("<=", 0.55)),
)}


def ocr_available() -> bool:
    """Whether rapidocr's model files can be found (the OCR cases need them)."""
    try:
        ocr.ocr_model_paths()
    except FileNotFoundError:
        return False
    return True


def get_case(case: Case | str) -> Case:
    if isinstance(case, Case):
        return case
    if case not in CASES:
        raise KeyError(f"unknown case {case!r} (choose from {', '.join(CASES)})")
    return CASES[case]


# --- checks -------------------------------------------------------------------------


def max_abs_diff(a: Outputs, b: Outputs) -> float:
    """Largest |a - b| over all outputs (inf if shapes differ or anything is not finite)."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    diffs = [np.abs(x.astype(np.float64) - y.astype(np.float64)) for x, y in zip(a, b)]
    worst = max((float(d.max()) for d in diffs if d.size), default=0.0)
    return worst if np.isfinite(worst) else float("inf")


def original_weights(model: onnx.ModelProto) -> dict[str, dict[str, np.ndarray]]:
    """The original's weights by where they live: 'initializers' and 'constants' (Constant nodes,
    which normalisation folds into initializers of the same name)."""
    constants = {}
    for node in model.graph.node:
        tensors = [a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and tensors:
            constants[node.output[0]] = numpy_helper.to_array(tensors[0])
    return {"initializers": {t.name: numpy_helper.to_array(t) for t in model.graph.initializer},
            "constants": constants}


def difference(expected: np.ndarray, got: np.ndarray | None) -> str | None:
    """Why ``got`` is not byte-equal to ``expected`` (None when it is)."""
    if got is None:
        return "missing"
    if got.dtype != expected.dtype:
        return f"dtype {expected.dtype} -> {got.dtype}"
    if got.shape != expected.shape:
        return f"shape {expected.shape} -> {got.shape}"
    return None if got.tobytes() == expected.tobytes() else "values differ"


def weight_check(original: onnx.ModelProto, restored: onnx.ModelProto) -> dict[str, dict]:
    """Per source ('initializers', 'constants'): how many weights were compared and which differ, and why."""
    found = {t.name: numpy_helper.to_array(t) for t in restored.graph.initializer}
    check = {}
    for source, weights in original_weights(original).items():
        differing = {name: why for name, value in weights.items()
                     if (why := difference(value, found.get(name))) is not None}
        check[source] = {"compared": len(weights), "equal": not differing, "differing": len(differing),
                         "reasons": sorted(set(differing.values())), "examples": sorted(differing)[:5]}
    return check


def range_ratio(original: Outputs, locked: Outputs) -> float:
    """max |locked output| / max |original output| (over all outputs)."""
    peak = lambda outs: max(float(np.abs(o).max()) for o in outs)  # noqa: E731
    return peak(locked) / peak(original) if peak(original) else float("inf")


# --- the measurement ----------------------------------------------------------------


def lock_options(strategy: str | None, tries: int | None) -> dict:
    """lock_model keyword arguments, its own defaults where None is given."""
    return {"strategy": strategy or LOCK_DEFAULTS["strategy"],
            "tries": LOCK_DEFAULTS["tries"] if tries is None else tries}


def measure(case: Case | str, ratio: float = LOCK_DEFAULTS["ratio"], strategy: str | None = None, seed: int | None = 0,
            tries: int | None = None, method: str = "confusion") -> dict:
    """Lock ``case`` with ``method`` (by default confusion channels alone, whose strength this
    measures) and report the damage without the key and the exactness of the restore with it."""
    case = get_case(case)
    options = lock_options(strategy, tries)
    original = load_model(case.model_path())
    start = time.perf_counter()
    locked = lock_model(original, passphrase=PASSPHRASE, ratio=ratio, seed=seed,
                        calibration=case.calibration(), kdf_params=KDF_PARAMS, method=method, **options)
    seconds = time.perf_counter() - start
    feeds = case.evaluation()
    reference = cpu_session(original).run(None, feeds)
    with tempfile.TemporaryDirectory(prefix="onnxlock-strength-") as folder:
        model_path, key_path = Path(folder, "locked.onnx"), Path(folder, "model.key")
        write_locked(locked, model_path, key_path)
        without_key = cpu_session(model_path.read_bytes()).run(None, feeds)
        with_key = load_session(model_path, key_path, passphrase=PASSPHRASE, providers="cpu").run(None, feeds)
    weights = weight_check(original, restore_model(locked.model, locked.key, PASSPHRASE))
    metrics = case.compare(reference, without_key)
    value = metrics[case.metric]
    report = locked.layer_report("confusion")
    restore_diff = max_abs_diff(with_key, reference)
    return {
        "model": case.name, "method": method, "strategy": options["strategy"], "ratio": ratio, "seed": seed,
        "tries": report["tries"],
        "params_original": report["params_original"], "params_added": report["params_added"],
        "params_added_pct": round(100 * report["params_added"] / report["params_original"], 3),
        "groups_widened": report["groups_widened"], "groups_total": report["groups_total"],
        "metric": case.metric, "value": value, "target": case.target.describe(),
        "target_met": case.target.met(value), "metrics": metrics,
        "restore_max_abs_diff": restore_diff,
        "initializers_equal": weights["initializers"]["equal"], "constants_equal": weights["constants"]["equal"],
        "weights": weights,
        "restore_exact": restore_diff == 0.0 and all(w["equal"] for w in weights.values()),
        "locked_finite": bool(all(np.isfinite(o).all() for o in without_key)),
        "range_ratio": range_ratio(reference, without_key),
        "lock_seconds": round(seconds, 2),
    }
