"""AdvParams report: damage, lock time, exact restore and detectability of the changed weights.

Digits models: held-out accuracy (models/digits_test.npz) after locking with labelled calibration
data (models/digits_calib.npz). PP-OCR cls and rec: label-free locks on rendered lines, measured on
other rendered lines (onnxlock/evaluate/ocr.py). Detectability: ROC AUC of the changed weights
against every unchanged weight of the candidate layers, for the scores a thief computes first
(|value| rank within its tensor, |z-score| within its filter/row). Lock seconds are wall time on
this machine, with its 1-minute load average beside them (the machine is shared). Writes
reports/advparams.{json,md}.

    PYTHONPATH=. nice python tools/report_advparams.py [--only digits_cnn,ocr_cls] [--max-weights 64]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx

from onnxlock.evaluate.damage import cpu_session, run
from onnxlock.evaluate.ocr import cls_input, eval_cls, eval_rec, ocr_model_paths, rec_charset, rec_input, render_text_lines
from onnxlock.fileio import atomic_write_bytes
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnxlock.passes import PerturbWeightsPass, WidenChannelsPass, restore, stack_secrets
from onnxlock.passes.advparams import weight_names

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DIGITS = ("digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer")
TARGETS = {"digits_cnn": "accuracy <= 0.15", "digits_transformer": "accuracy <= 0.15",
           "ocr_cls": "accuracy <= 0.60", "ocr_rec": "CER >= 0.90"}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a changed weight > score of an unchanged one), ties counted half (Mann-Whitney)."""
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores[np.isin(scores, positive)]):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detectability(original: onnx.ModelProto, locked: onnx.ModelProto) -> dict:
    """Range check and AUCs of |value| rank and filter |z| for the weights that differ."""
    before, after = initializer_arrays(original), initializer_arrays(locked)
    pos = {"magnitude_rank": [], "filter_z": []}
    neg = {"magnitude_rank": [], "filter_z": []}
    inside, strictly = True, True
    for name in weight_names(original):
        old, new = before[name].reshape(-1), after[name].reshape(-1)
        changed = old != new
        rank = np.abs(new).argsort().argsort() / max(len(new) - 1, 1)
        rows = after[name].reshape(after[name].shape[0], -1).astype(np.float64)
        std = rows.std(1, keepdims=True)
        z = (np.abs(rows - rows.mean(1, keepdims=True)) / np.where(std > 0, std, 1)).reshape(-1)
        for scores, key in ((rank, "magnitude_rank"), (z, "filter_z")):
            pos[key].append(scores[changed])
            neg[key].append(scores[~changed])
        if changed.any():
            lo, hi = old.min(), old.max()
            inside &= bool(np.all((new[changed] >= lo) & (new[changed] <= hi)))
            strictly &= bool(np.all((new[changed] > lo) & (new[changed] < hi)))
    return {"in_range": inside, "never_on_bound": strictly,
            **{f"auc_{key}": round(auc(np.concatenate(pos[key]), np.concatenate(neg[key])), 3) for key in pos}}


def digits_case(name: str, max_weights: int) -> dict:
    with np.load(MODELS / "digits_calib.npz") as calib, np.load(MODELS / "digits_test.npz") as test:
        feeds, labels = {"pixels": calib["pixels"]}, calib["labels"]
        x, y = {"pixels": test["pixels"]}, test["labels"]
    original = normalize(onnx.load(MODELS / f"{name}.onnx"))
    accuracy = lambda model: float(np.mean(run(model, x)[0].argmax(-1) == y))  # noqa: E731
    start = time.perf_counter()
    result = PerturbWeightsPass(max_weights=max_weights, calibration=feeds, labels=labels)(original)
    seconds = time.perf_counter() - start
    row = {"model": name, "metric": "held-out accuracy", "chance": 0.1, "original": accuracy(original),
           "locked": accuracy(result.model), "lock_s": round(seconds, 1),
           "restore_exact": restore(result.model, result.secret).SerializeToString() == original.SerializeToString(),
           **_common(result), **detectability(original, result.model)}
    # stacked under confusion channels: the lock, and what is left once the channels are stripped
    confusion = WidenChannelsPass(seed=0, calibration=feeds)(original)
    stacked = PerturbWeightsPass(max_weights=max_weights, calibration=feeds, labels=labels)(
        original, onto=normalize(confusion.model), earlier=[confusion.secret])
    secret = stack_secrets([confusion.secret, stacked.secret])
    restored = initializer_arrays(restore(stacked.model, secret))
    row["stacked"] = {
        "confusion_alone": accuracy(confusion.model), "locked": accuracy(stacked.model),
        "channels_stripped": accuracy(restore(stacked.model, confusion.secret)),
        "restore_exact": all(restored[k].tobytes() == v.tobytes() for k, v in initializer_arrays(original).items())}
    return row


def _common(result) -> dict:
    report = result.report
    return {"weights_changed": report["weights_changed"], "layers_changed": report["layers_changed"],
            "steps": report["steps"], "calibration_agreement_after": report["calibration_agreement_after"],
            "stealth": report["stealth"], "load_avg": round(os.getloadavg()[0], 1)}


def ocr_case(kind: str, max_weights: int) -> dict:
    path = ocr_model_paths()[kind]
    original = normalize(onnx.load(path))
    calib_lines, test_lines = render_text_lines(16, seed=1), render_text_lines(40, seed=2)
    if kind == "cls":
        imgs = [img for _, img in calib_lines]
        feeds = {"x": cls_input(imgs + [np.ascontiguousarray(i[::-1, ::-1]) for i in imgs])}
    else:
        feeds = {"x": rec_input([img for _, img in calib_lines[:8]])}
    start = time.perf_counter()
    result = PerturbWeightsPass(max_weights=max_weights, calibration=feeds)(original)
    seconds = time.perf_counter() - start
    reference, locked = cpu_session(original), cpu_session(result.model)
    if kind == "cls":
        before, after = eval_cls(reference, reference, test_lines), eval_cls(locked, reference, test_lines)
        row = {"metric": "accuracy (upright + flipped lines)", "chance": 0.5,
               "original": before["accuracy"], "locked": after["accuracy"], "agreement": after["top1_agreement"]}
    else:
        charset = rec_charset(path)
        before = eval_rec(reference, reference, charset, test_lines)
        after = eval_rec(locked, reference, charset, test_lines)
        row = {"metric": "CER vs rendered text", "original": before["cer_truth"], "locked": after["cer_truth"]}
    return {"model": f"ocr_{kind}", **row, "lock_s": round(seconds, 1),
            "restore_exact": restore(result.model, result.secret).SerializeToString() == original.SerializeToString(),
            **_common(result), **detectability(original, result.model)}


def markdown(rows: list[dict], max_weights: int) -> str:
    lines = [f"# AdvParams (at most {max_weights} weights)", "",
             "| model | metric | original | locked | target | weights | stealth cap | lock s (load) | exact "
             "| in range, not on bound | AUC abs-value rank | AUC filter z |",
             "|---|---|---:|---:|---|---:|---:|---:|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['metric']} | {r['original']:.3f} | {r['locked']:.3f} | "
                     f"{TARGETS.get(r['model'], '-')} | {r['weights_changed']} | {r['stealth']} | "
                     f"{r['lock_s']} ({r['load_avg']}) | {r['restore_exact']} | "
                     f"{r['in_range'] and r['never_on_bound']} | {r['auc_magnitude_rank']} | {r['auc_filter_z']} |")
    stacked = [r for r in rows if "stacked" in r]
    if stacked:
        lines += ["", "Stacked `confusion,advparams` (held-out accuracy):", "",
                  "| model | confusion alone | stacked | stacked, channels stripped | exact |", "|---|---:|---:|---:|---|"]
        for r in stacked:
            s = r["stacked"]
            lines.append(f"| {r['model']} | {s['confusion_alone']:.3f} | {s['locked']:.3f} | "
                         f"{s['channels_stripped']:.3f} | {s['restore_exact']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated cases (default: all)")
    parser.add_argument("--max-weights", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "reports" / "advparams"))
    args = parser.parse_args()
    cases = [*DIGITS, "ocr_cls", "ocr_rec"]
    if args.only:
        cases = [c for c in cases if c in args.only.split(",")]
    rows = []
    for case in cases:
        row = digits_case(case, args.max_weights) if case in DIGITS else ocr_case(case[4:], args.max_weights)
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out.with_suffix(".json"), json.dumps({"max_weights": args.max_weights, "rows": rows},
                                                            indent=2).encode(), mode=0o644)
    atomic_write_bytes(out.with_suffix(".md"), markdown(rows, args.max_weights).encode(), mode=0o644)


if __name__ == "__main__":
    main()
