"""Adaptive search attack on locked models: how many trials does a thief with labelled data need?

The thief holds the locked model, onnxlock's own analysis, labelled calibration data, and
is told which groups were widened and by how many channels. They delete channels greedily by
accuracy (onnxlock.evaluate.attacks.search_attack). Scored on held-out data. Writes JSON.
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
import wheel_models  # noqa: E402

DIGITS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]
Data = tuple[dict, np.ndarray]  # feeds, labels


def digits_data() -> tuple[Data, Data]:
    """(attacker's labelled calibration split, held-out split)."""
    with np.load(bundled_path("digits_calib.npz")) as c, np.load(bundled_path("digits_test.npz")) as t:
        return ({"pixels": c["pixels"]}, c["labels"]), ({"pixels": t["pixels"]}, t["labels"])


def cls_data(seed: int, lines: int = 16) -> Data:
    """Rendered text lines upright (label 0) and rotated 180 degrees (label 1) for the PP-OCR classifier."""
    from onnxlock.evaluate import ocr

    upright = [img for _, img in ocr.render_text_lines(lines, seed=seed)]
    images = upright + [np.ascontiguousarray(img[::-1, ::-1]) for img in upright]
    return {"x": ocr.cls_input(images)}, np.repeat([0, 1], lines)


def rec_data(seed: int, lines: int = 16) -> Data:
    """Rendered text lines for the PP-OCR recogniser (unlabelled: judged against the original's text)."""
    from onnxlock.evaluate import ocr

    return {"x": ocr.rec_input([img for _, img in ocr.render_text_lines(lines, seed=seed)])}, None


def det_data(seed: int, pages: int = 4) -> Data:
    """Rendered pages for the PP-OCR detector (unlabelled: judged against the original's maps)."""
    from onnxlock.evaluate import ocr

    return {"x": np.concatenate([ocr.det_input(ocr.render_page(seed + i)) for i in range(pages)])}, None


# per OCR model: the data's maker, the thief's calibration size and the held-out size (lines or pages);
# the classifier's held-out split is large because a two-class accuracy on 32 images moves by +-9 points
OCR_DATA = {"ocr_cls": (cls_data, 32, 128), "ocr_rec": (rec_data, 16, 16), "ocr_det": (det_data, 4, 4)}


def model_and_data(name: str) -> tuple[Path, Data, Data]:
    """The model's path, the thief's calibration split and the held-out split."""
    if name in wheel_models.WHEEL_MODELS:
        return wheel_models.model_and_data(name)
    if name in OCR_DATA:
        from onnxlock.evaluate import ocr

        make, calib_size, test_size = OCR_DATA[name]
        return ocr.ocr_model_paths()[name.removeprefix("ocr_")], make(100, calib_size), make(0, test_size)
    return (bundled_path(name), *digits_data())


def attack(name: str, ratio: float, seed: int) -> dict:
    path, (calib, calib_labels), (test, test_labels) = model_and_data(name)
    locked = lock_model(path, passphrase="attack-search passphrase", ratio=ratio, seed=seed, kdf_params={"n": 2**12},
                        calibration=calib)
    model = parse_model(locked.model)
    widened = {g["group"]: g["added"] for g in locked.layer_report("confusion")["groups"]}
    start = time.perf_counter()
    result = search_attack(model, widened, calib, calib_labels)
    return {"model": name, "ratio": ratio, "seed": seed, "channels_added": widened,
            "accuracy_original": accuracy(load_model(path), test, test_labels),
            "accuracy_locked": accuracy(model, test, test_labels),
            "accuracy_after_attack": accuracy(result["model"], test, test_labels),
            "trials": result["trials"], "attack_seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DIGITS + ["ocr_cls"]),
                        help="bundled digits models and/or ocr_cls, comma-separated")
    parser.add_argument("--ratio", type=float, default=0.02, help="lock ratio (default: 0.02)")
    parser.add_argument("--seeds", type=int, default=3, help="lock seeds 0..N-1 (default: 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "attack_search.json", help="JSON output")
    args = parser.parse_args()
    results = []
    for name in args.models.split(","):
        for seed in range(args.seeds):
            results.append(attack(name, args.ratio, seed))
            r = results[-1]
            print(f"{name} seed {seed}: original {r['accuracy_original']:.3f}, locked {r['accuracy_locked']:.3f}, "
                  f"after {r['trials']} trials {r['accuracy_after_attack']:.3f}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps({"results": results}, indent=2) + "\n").encode(), mode=0o644)


if __name__ == "__main__":
    main()
