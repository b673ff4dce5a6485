"""Run the attack suite on the bundled digits models and the three PP-OCR models (and, by name,
the pretrained models of tools/wheel_models.py), each locked at the default settings, and write
reports/attacks.json and reports/attacks.md.

The thief's blind inputs are the first 64 calibration inputs (unlabelled); results are judged on
the held-out split (the PP-OCR recogniser and detector against the original's own outputs: CER
and map correlation; the wheel models by their own agreement with the original). Detection is
pooled over ``--locks`` locks of each model. Fine-tuning (1% and 10% of a labelled set; needs the
``[train]`` extra) uses scikit-learn's digits training split, and for the PP-OCR direction
classifier 1,000 other rendered lines; it is left out for the other models (no labelled training
set here), and so is per-channel ablation (one model per channel: too slow on a shared CPU) and
the told-groups search (it needs labels)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch on a shared CPU: one thread is fastest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from attack_search import DIGITS, OCR_DATA, model_and_data  # noqa: E402
import wheel_models  # noqa: E402
from onnxlock import lock_model  # noqa: E402
from onnxlock.lock import DEFAULT_METHOD  # noqa: E402
from onnxlock.evaluate.attacks import suite, truth_from_secret  # noqa: E402
from onnxlock.evaluate.attacks.prune import PRUNERS  # noqa: E402
from onnxlock.fileio import atomic_write_bytes, sha256_bytes  # noqa: E402
from onnxlock.evaluate.damage import cpu_session, run  # noqa: E402
from onnxlock.graph.io import load_model, parse_model  # noqa: E402
from onnxlock.key import open_key  # noqa: E402

PASSPHRASE = "attack report"
# what the removal table shows, the first a model has
JUDGED = ("accuracy", "cer", "map_correlation", "box_recall", "speech_correlation")
BLIND = 64


def locked_with_truth(path: Path, seed: int, method: str, calib: dict) -> tuple:
    """The locked model (parsed) and the truth its key holds."""
    locked = lock_model(path, passphrase=PASSPHRASE, seed=seed, kdf_params={"n": 2**12}, calibration=calib,
                        method=method)
    model = parse_model(locked.model)
    return model, truth_from_secret(model, open_key(locked.key, passphrase=PASSPHRASE,
                                                    model_sha256=sha256_bytes(locked.model)))


def task_metric(name: str, path: Path, test: dict) -> Callable | None:
    """For the PP-OCR recogniser and detector (no labels): CER against the original's transcriptions,
    correlation with the original's text map, on the held-out inputs; for the wheel models, their
    agreement with the original."""
    from onnxlock.evaluate import ocr

    if name in wheel_models.WHEEL_MODELS:
        return wheel_models.task_metric(name, path, test)
    original = load_model(path)
    if name == "ocr_rec":
        charset = ocr.rec_charset(path)
        refs = ocr.transcribe(cpu_session(original), test["x"], charset)
        return lambda m: {"cer": round(ocr.character_error_rate(ocr.transcribe(cpu_session(m), test["x"], charset),
                                                                 refs), 4)}
    if name == "ocr_det":
        reference = run(original, test)[0]
        return lambda m: {"map_correlation": round(ocr.map_correlation(run(m, test)[0], reference), 4)}
    return None


def attack_model(name: str, seed: int, finetune: bool, method: str, locks: int, peel_steps: int | None = None,
                 pruners: tuple[str, ...] = PRUNERS) -> dict:
    path, (calib, calib_labels), (test, test_labels) = model_and_data(name)
    owner = wheel_models.lock_calibration(name, calib)
    start = time.perf_counter()
    model, truth = locked_with_truth(path, seed, method, owner)
    lock_seconds = round(time.perf_counter() - start, 1)
    metric = task_metric(name, path, test)
    blind = suite.Data({k: v[:BLIND] for k, v in calib.items()}, None if calib_labels is None else calib_labels[:BLIND],
                       test, test_labels, metric)
    labelled = suite.Data(calib, calib_labels, test, test_labels, metric)
    row = {"model": name, "method": method, "seed": seed, "counterfeits": len(truth.counterfeits),
           "groups_widened": truth.widened(), "lock_seconds": lock_seconds}
    no_model = wheel_models.no_model_baseline(name, path, test)
    if no_model is not None:  # the chance level of a metric that is not accuracy: outputs made without the model
        row["no_model"] = no_model
    others = lambda: [locked_with_truth(path, seed + i, method, owner) for i in range(1, locks)]  # noqa: E731
    steps = [("detect", lambda: suite.run_detect(model, blind, truth, ablation=name in DIGITS)),
             ("detect_pooled", lambda: suite.run_detect_pooled([(model, truth)] + others(), blind,
                                                                    ablation=name in DIGITS, seed=seed)),
             ("peel", lambda: suite.run_peel(model, blind, truth, max_steps=peel_steps)),
             ("prune", lambda: suite.run_prune(model, blind, truth, pruners=pruners))]
    if calib_labels is not None and truth.counterfeits:  # the told-groups search needs confusion channels
        steps.append(("search", lambda: suite.run_search(model, labelled, truth)))
    if finetune:
        steps.append(("finetune", lambda: run_finetune(name, model, test, test_labels)))
    for attack, step in steps:
        start = time.perf_counter()
        row[attack] = step()
        print(f"{name}: {attack} {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return row


FINETUNED = DIGITS + ["ocr_cls"]  # the models with a labelled training set here


def training_set(name: str) -> tuple[dict, np.ndarray]:
    """The labelled set whose 1% and 10% the fine-tuning thief holds: the digits training split;
    for the PP-OCR direction classifier 1,000 other rendered lines, upright and rotated."""
    if name == "ocr_cls":
        return OCR_DATA[name][0](300, 1000)
    from train_zoo import load_split

    x_train, _, y_train, _ = load_split()
    return {"pixels": x_train}, y_train


def run_finetune(name: str, model, test, test_labels) -> dict:
    feeds, labels = training_set(name)
    data = suite.Data(feeds, labels, test, test_labels)
    return suite.run_finetune(model, data, None, fractions=(0.01, 0.1), steps=300)


def markdown(rows: list[dict]) -> str:
    methods = sorted({r.get("method", "confusion") for r in rows})
    lines = [f"# Attack suite on the lock ({', '.join(methods)})", "",
             "Made by `tools/report_attacks.py`. Blind attacks see 64 unlabelled calibration inputs; accuracy "
             "and agreement (top-1, with the original) are on the held-out split.", "",
             "Detection: every score of the suite on each channel, pooled over several locks of the model (one "
             "lock holds a few counterfeits, so its AUC is mostly chance); *chance* is the same statistic with "
             "random genuine channels labelled as counterfeits. The best single score is picked knowing the "
             "truth, so even chance gives it more than 0.5.", "",
             "| model | locks | counterfeits | best single score (AUC) | chance | rank avg. AUC | chance "
             "| logistic CV AUC | chance |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = r["detect_pooled"]
        c = d["chance"]
        if not d["counterfeits"]:
            lines.append(f"| {r['model']} | {d['locks']} | 0 | no counterfeit channels: nothing to detect | - | - | - | - | - |")
            continue
        lines.append(f"| {r['model']} | {d['locks']} | {d['counterfeits']} | {d['best_single']} ({d['best_single_auc']}) "
                     f"| {c['best_single_auc']} | {d['rank_average_auc']} | {c['rank_average_auc']} "
                     f"| {d['logistic_cv_auc']} | {c['logistic_cv_auc']} |")
    lines += ["", "Removal on one lock (seed in the JSON). *Without the model*: the same measure of outputs made "
              "with no model at all, where one exists (Silero VAD: a frame-energy detector), the chance level a "
              "thief starts from:", "",
              "| model | counterfeits | locked | peel: removed (true/false) | after peel | best prune "
              "| search acc. | without the model | lock (s) |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = r["peel"]
        measure = next(m for m in JUDGED if m in p["before"])
        best = min if measure == "cer" else max
        best_prune = best(x[measure] for x in r["prune"]["results"])
        search = r["search"]["after"].get("accuracy") if "search" in r else "-"
        lines.append(f"| {r['model']} | {r['counterfeits']} | {measure} {p['before'][measure]} | "
                     f"{p['removed_counterfeit']}/{p['removed_genuine']} | {p['after'][measure]} | "
                     f"{best_prune} | {search} | {r.get('no_model', {}).get(measure, '-')} | "
                     f"{r.get('lock_seconds', '-')} |")
    tuned = [r for r in rows if "finetune" in r]
    if tuned:
        lines += ["", "Fine-tuning the locked file (as it is, and its magnitudes with the signs learned) vs the same "
              "architecture from scratch (same samples, 300 steps; scratch at both starts' learning rates, the better kept, "
              "where the JSON has `accuracy_scratch_by_rate`):", "",
                  "| model | samples | fine-tuned acc. | signs learned | from scratch | advantage (better start) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in tuned:
            for f in r["finetune"]["results"]:
                lines.append(f"| {r['model']} | {f['samples']} ({f['fraction']:.0%}) | {f['accuracy_finetuned']} | "
                             f"{f.get('accuracy_signs_learned', '-')} | {f['accuracy_scratch']} | {f['advantage']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DIGITS + list(OCR_DATA)),
                        help=f"comma-separated (also: {', '.join(wheel_models.WHEEL_MODELS)})")
    parser.add_argument("--seed", type=int, default=0, help="lock seed (default: 0)")
    parser.add_argument("--method", default=DEFAULT_METHOD, help=f"lock method (default: {DEFAULT_METHOD})")
    parser.add_argument("--locks", type=int, default=8,
                        help="locks (seeds seed, seed+1, ...) whose detections are pooled (default: 8)")
    parser.add_argument("--peel-steps", type=int, default=None,
                        help="most channels the peel deletes (default: a tenth of the channels)")
    parser.add_argument("--pruners", default=",".join(PRUNERS),
                        help=f"comma-separated (default: {','.join(PRUNERS)}; taylor runs the model twice per channel)")
    parser.add_argument("--update", action="store_true",
                        help="keep the rows of other models already in the output (re-run some models only)")
    parser.add_argument("--no-finetune", action="store_true", help="skip fine-tuning (no torch needed)")
    parser.add_argument("--held-out", type=int, default=None, metavar="N",
                        help="held-out inputs of the wheel models (default: each model's own, e.g. 16 NudeNet crops)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "attacks", help="output stem (.json, .md)")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.held_out is not None:
        for name, spec in wheel_models.WHEEL_MODELS.items():
            wheel_models.WHEEL_MODELS[name] = dataclasses.replace(spec, held_out=args.held_out)
    rows = []
    if args.update and args.out.with_suffix(".json").exists():  # keep the other models' rows
        kept = json.loads(args.out.with_suffix(".json").read_text())["results"]
        rows = [r for r in kept if r["model"] not in args.models.split(",")]
    for name in args.models.split(","):  # written after each model: a long run keeps what it measured
        rows.append(attack_model(name, args.seed, not args.no_finetune and name in FINETUNED, args.method, args.locks,
                                 args.peel_steps, tuple(args.pruners.split(","))))
        atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps({"results": rows}, indent=2) + "\n").encode(),
                           mode=0o644)
        atomic_write_bytes(args.out.with_suffix(".md"), markdown(rows).encode(), mode=0o644)


if __name__ == "__main__":
    main()
