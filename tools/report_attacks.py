"""Run the attack suite on the bundled digits models and the PP-OCR direction classifier, each
locked at the default settings, and write reports/attacks.json and reports/attacks.md.

The thief's blind inputs are the first 64 calibration images (unlabelled); results are judged on
the held-out split. Fine-tuning uses scikit-learn's digits training split (1% and 10%), so needs
the ``[train]`` extra; it is left out for the OCR classifier (no labelled training set here), and so is per-channel
ablation (one model per channel: too slow on a shared CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch on a shared CPU: one thread is fastest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from attack_search import DIGITS, model_and_data  # noqa: E402
from onnxlock import lock_model  # noqa: E402
from onnxlock.lock import DEFAULT_METHOD  # noqa: E402
from onnxlock.evaluate.attacks import suite, truth_from_secret  # noqa: E402
from onnxlock.fileio import atomic_write_bytes, sha256_bytes  # noqa: E402
from onnxlock.graph.io import parse_model  # noqa: E402
from onnxlock.key import open_key  # noqa: E402

PASSPHRASE = "attack report"
BLIND = 64


def attack_model(name: str, seed: int, finetune: bool, method: str) -> dict:
    path, (calib, calib_labels), (test, test_labels) = model_and_data(name)
    locked = lock_model(path, passphrase=PASSPHRASE, seed=seed, kdf_params={"n": 2**12}, calibration=calib,
                        method=method)
    model = parse_model(locked.model)
    truth = truth_from_secret(model, open_key(locked.key, passphrase=PASSPHRASE,
                                              model_sha256=sha256_bytes(locked.model)))
    blind = suite.Data({k: v[:BLIND] for k, v in calib.items()}, calib_labels[:BLIND], test, test_labels)
    labelled = suite.Data(calib, calib_labels, test, test_labels)
    row = {"model": name, "method": method, "seed": seed, "counterfeits": len(truth.counterfeits), "groups_widened": truth.widened()}
    steps = [("detect", lambda: suite.run_detect(model, blind, truth, ablation=name != "ocr_cls")),
             ("peel", lambda: suite.run_peel(model, blind, truth)),
             ("prune", lambda: suite.run_prune(model, blind, truth)),
             ("search", lambda: suite.run_search(model, labelled, truth))]
    if finetune:
        steps.append(("finetune", lambda: finetune_digits(model, test, test_labels)))
    for attack, step in steps:
        start = time.perf_counter()
        row[attack] = step()
        print(f"{name}: {attack} {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return row


def finetune_digits(model, test, test_labels) -> dict:
    from train_zoo import load_split

    x_train, _, y_train, _ = load_split()
    data = suite.Data({"pixels": x_train}, y_train, test, test_labels)
    return suite.run_finetune(model, data, None, fractions=(0.01, 0.1), steps=300)


def markdown(rows: list[dict]) -> str:
    methods = sorted({r.get("method", "confusion") for r in rows})
    lines = [f"# Attack suite on the lock ({', '.join(methods)})", "",
             "Made by `tools/report_attacks.py`. Blind attacks see 64 unlabelled calibration inputs; accuracy "
             "and agreement (top-1, with the original) are on the held-out split.", "",
             "| model | counterfeits | locked acc. | best single score (AUC) | rank avg. AUC | logistic CV AUC "
             "| peel: removed (true/false) | acc. after peel | best prune acc. | search acc. |",
             "|---|---:|---:|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        d, p = r["detect"], r["peel"]
        best_prune = max(x.get("accuracy", 0) for x in r["prune"]["results"])
        lines.append(f"| {r['model']} | {r['counterfeits']} | {p['before'].get('accuracy')} | {d['best_single']} "
                     f"({d['best_single_auc']}) | {d['rank_average_auc']} | {d['logistic_cv_auc']} | "
                     f"{p['removed_counterfeit']}/{p['removed_genuine']} | {p['after'].get('accuracy')} | "
                     f"{best_prune} | {r['search']['after'].get('accuracy')} |")
    tuned = [r for r in rows if "finetune" in r]
    if tuned:
        lines += ["", "Fine-tuning the locked file vs the same architecture from scratch (same samples, 300 steps):", "",
                  "| model | samples | fine-tuned acc. | from scratch | advantage |", "|---|---:|---:|---:|---:|"]
        for r in tuned:
            for f in r["finetune"]["results"]:
                lines.append(f"| {r['model']} | {f['samples']} ({f['fraction']:.0%}) | {f['accuracy_finetuned']} | "
                             f"{f['accuracy_scratch']} | {f['advantage']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DIGITS + ["ocr_cls"]), help="comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="lock seed (default: 0)")
    parser.add_argument("--method", default=DEFAULT_METHOD, help=f"lock method (default: {DEFAULT_METHOD})")
    parser.add_argument("--no-finetune", action="store_true", help="skip fine-tuning (no torch needed)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "attacks", help="output stem (.json, .md)")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):  # written after each model: a long run keeps what it measured
        rows.append(attack_model(name, args.seed, not args.no_finetune and name != "ocr_cls", args.method))
        atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps({"results": rows}, indent=2) + "\n").encode(),
                           mode=0o644)
        atomic_write_bytes(args.out.with_suffix(".md"), markdown(rows).encode(), mode=0o644)


if __name__ == "__main__":
    main()
