"""Adaptive search attack on locked digits models: how many trials does a thief with labelled data need?

The thief holds the locked model, onnxlock's own analysis, the calibration split with labels, and
is told which groups were widened and by how many channels. They delete channels greedily by
accuracy (onnxlock.evaluate.attacks.search_attack). Scored on the held-out split. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxlock import lock_model  # noqa: E402
from onnxlock.bundled import bundled_path  # noqa: E402
from onnxlock.evaluate.attacks import accuracy, search_attack  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402
from onnxlock.graph.io import load_model, parse_model  # noqa: E402

DIGITS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]


def attack(name: str, ratio: float, seed: int, calib: dict, test: dict) -> dict:
    locked = lock_model(bundled_path(name), passphrase="attack", ratio=ratio, seed=seed, kdf_params={"n": 2**12},
                        calibration={"pixels": calib["pixels"]})
    model = parse_model(locked.model)
    widened = {g["group"]: g["added"] for g in locked.report["groups"]}
    start = time.perf_counter()
    result = search_attack(model, widened, {"pixels": calib["pixels"]}, calib["labels"])
    held_out = {"pixels": test["pixels"]}
    return {"model": name, "ratio": ratio, "seed": seed, "channels_added": widened,
            "accuracy_original": accuracy(load_model(bundled_path(name)), held_out, test["labels"]),
            "accuracy_locked": accuracy(model, held_out, test["labels"]),
            "accuracy_after_attack": accuracy(result["model"], held_out, test["labels"]),
            "trials": result["trials"], "attack_seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DIGITS), help="bundled digits models, comma-separated")
    parser.add_argument("--ratio", type=float, default=0.02, help="lock ratio (default: 0.02)")
    parser.add_argument("--seeds", type=int, default=3, help="lock seeds 0..N-1 (default: 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "attack_search.json", help="JSON output")
    args = parser.parse_args()
    with np.load(bundled_path("digits_calib.npz")) as c, np.load(bundled_path("digits_test.npz")) as t:
        calib, test = dict(c), dict(t)
    results = []
    for name in args.models.split(","):
        for seed in range(args.seeds):
            results.append(attack(name, args.ratio, seed, calib, test))
            r = results[-1]
            print(f"{name} seed {seed}: original {r['accuracy_original']:.3f}, locked {r['accuracy_locked']:.3f}, "
                  f"after {r['trials']} trials {r['accuracy_after_attack']:.3f}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps({"results": results}, indent=2) + "\n").encode(), mode=0o644)


if __name__ == "__main__":
    main()
