"""Run the sign-recovery attack (``onnxlock attack signs``: flipped signs chosen to fit each
BatchNormalization's running statistics, on 64 unlabelled inputs) on the models that have a Conv
feeding a BatchNormalization, and write reports/signs.json and reports/signs.md.

The thief is handed the best case: a lock of sign flips alone (``--method signflip``, as if the
confusion channels of the default lock had been peeled perfectly). Judged on the held-out split
as in tools/report_attacks.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from report_attacks import BLIND, JUDGED, locked_with_truth, model_and_data, task_metric  # noqa: E402
import wheel_models  # noqa: E402
from onnxlock.evaluate.attacks import suite  # noqa: E402
from onnxlock.evaluate.attacks.signs import conv_bn_pairs  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402

MODELS = ("digits_cnn", "digits_resnet", "ocr_cls", "ocr_rec", "ocr_det")
METHOD = "signflip"


def attack(name: str, seed: int) -> dict:
    path, (calib, _), (test, test_labels) = model_and_data(name)
    owner = wheel_models.lock_calibration(name, calib)
    model, truth = locked_with_truth(path, seed, METHOD, owner)
    data = suite.Data({k: v[:BLIND] for k, v in calib.items()}, None, test, test_labels,
                      task_metric(name, path, test))
    return {"model": name, "method": METHOD, "seed": seed, "pairs": len(conv_bn_pairs(model))} \
        | suite.run_signs(model, data, truth)


def summary(row: dict) -> dict:
    """First layer's signs, the other layers' (weighted by nothing: a plain mean per layer), and
    the measure before and after."""
    layers = row["layers"]
    measure = next(m for m in JUDGED if m in row["before"])
    rest = [layer["signs_right_after"] for layer in layers[1:]]
    exhaustive = [layer["signs_right_after"] for layer in layers if layer["exhaustive"]]
    return {"measure": measure, "first": layers[0]["signs_right_after"] if layers else None,
            "first_weights": layers[0]["weights_per_channel"] if layers else None,
            "rest_mean": round(float(np.mean(rest)), 4) if rest else None,
            "exhaustive_layers": len(exhaustive),
            "exhaustive_mean": round(float(np.mean(exhaustive)), 4) if exhaustive else None,
            "before": row["before"][measure], "after": row["after"][measure]}


def markdown(rows: list[dict]) -> str:
    lines = ["# Sign recovery from BatchNorm statistics", "",
             "Made by `tools/report_signs.py`: a lock of sign flips alone (the default lock with its confusion "
             "channels peeled perfectly), 64 unlabelled inputs; *signs right*: the share of a layer's non-zero "
             "weights whose sign matches the original's (0.5: a coin flip).", "",
             "| model | Conv+BN layers | first layer: weights a channel, signs right | layers tried exhaustively: "
             "signs right (mean) | other layers: signs right (mean) | measure | locked | after |",
             "|---|---:|---|---|---:|---|---:|---:|"]
    for row in rows:
        s = summary(row)
        lines.append(f"| {row['model']} | {row['pairs']} | {s['first_weights']}, {s['first']} | "
                     f"{s['exhaustive_layers']}: {s['exhaustive_mean']} | {s['rest_mean']} | {s['measure']} | "
                     f"{s['before']} | {s['after']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="lock seed (default: 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "signs", help="output stem (.json, .md)")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        start = time.perf_counter()
        rows.append(attack(name, args.seed))
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps({"results": rows}, indent=2) + "\n").encode(),
                           mode=0o644)
    atomic_write_bytes(args.out.with_suffix(".md"), markdown(rows).encode(), mode=0o644)
    print(markdown(rows))


if __name__ == "__main__":
    main()
