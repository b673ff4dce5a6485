"""Benchmark: does a model restored by onnxlock load fast and run exactly as fast as the original?

For each model: session creation from the original file vs ``load_session`` on the locked file
(key opening, scrypt, in-memory restore and session creation included), and inference latency of
the original vs the restored session, measured interleaved in one run so machine noise hits both.
Writes JSON (ratios against the original as baseline); never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxlock import load_session, lock_model, write_locked  # noqa: E402
from onnxlock.bundled import bundled_path  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402
from onnxlock.runtime import select_providers  # noqa: E402

PASSPHRASE = "benchmark passphrase"
DIGITS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]


def timed(fn, repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls of ``fn``, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return times


def model_cases(names: list[str], batch: int) -> list[tuple[str, Path, dict, dict]]:
    """(name, original path, calibration feeds, benchmark feeds) per model."""
    with np.load(bundled_path("digits_calib.npz")) as calib, np.load(bundled_path("digits_test.npz")) as test:
        calibration, feeds = {"pixels": calib["pixels"]}, {"pixels": test["pixels"][:batch]}
    return [(name, bundled_path(name), calibration, feeds) for name in names]


def bench(name: str, original: Path, calibration: dict, feeds: dict, providers: list, repeat: int) -> dict:
    locked = lock_model(original, passphrase=PASSPHRASE, calibration=calibration, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        model_path, key_path = Path(folder) / "m.onnx", Path(folder) / "m.key"
        write_locked(locked, model_path, key_path)
        load_original = timed(lambda: ort.InferenceSession(str(original), providers=providers), repeat)
        load_locked = timed(lambda: load_session(model_path, key_path, passphrase=PASSPHRASE,
                                                 providers=providers), repeat)
        base = ort.InferenceSession(str(original), providers=providers)
        restored = load_session(model_path, key_path, passphrase=PASSPHRASE, providers=providers)
        without_key = ort.InferenceSession(str(model_path), providers=providers)
    run_base, run_restored, run_locked = [], [], []
    for _ in range(repeat * 20):  # interleaved call by call: noise hits all three alike
        run_base += timed(lambda: base.run(None, feeds), 1)
        run_restored += timed(lambda: restored.run(None, feeds), 1)
        run_locked += timed(lambda: without_key.run(None, feeds), 1)
    med = statistics.median
    return {
        "model": name,
        "load_ms": {"original": med(load_original), "load_session": med(load_locked)},
        "run_ms": {"original": med(run_base), "restored": med(run_restored), "locked_no_key": med(run_locked)},
        "ratios": {"run_restored_vs_original": med(run_restored) / med(run_base),
                   "run_locked_vs_original": med(run_locked) / med(run_base),
                   "load_session_vs_original_load": med(load_locked) / med(load_original)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DIGITS), help="bundled models, comma-separated")
    parser.add_argument("--provider", default="cpu", choices=["auto", "cpu", "cuda"], help="execution provider")
    parser.add_argument("--batch", type=int, default=64, help="images per inference call")
    parser.add_argument("--repeat", type=int, default=20, help="repetitions per measurement")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_load.json"), help="JSON output")
    args = parser.parse_args()
    providers = select_providers(args.provider)
    results = []
    for case in model_cases(args.models.split(","), args.batch):
        results.append(bench(*case, providers, args.repeat))
        r = results[-1]
        print(f"{r['model']}: run restored/original {r['ratios']['run_restored_vs_original']:.3f}, "
              f"load_session {r['load_ms']['load_session']:.1f} ms vs {r['load_ms']['original']:.1f} ms",
              file=sys.stderr)
    report = {"providers": [p if isinstance(p, str) else p[0] for p in providers],
              "onnxruntime": ort.__version__, "batch": args.batch, "repeat": args.repeat, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode(), mode=0o644)


if __name__ == "__main__":
    main()
