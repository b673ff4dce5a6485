"""Lock and load a model past protobuf's 2 GiB limit (ONNX external data), end to end.

Generates a MatMul MLP of ``--mib`` MiB stored with external data (build/past_2gib/, cached),
locks it with ``--method`` into a graph, a data file and a key, loads it with load_session, and
compares its outputs with a plain onnxruntime session of the original, bit for bit. Writes
reports/past_2gib.json (times, sizes, peak memory: the lock's, and the whole script's with the
load and the plain session).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_load import mlp, rss_mib  # noqa: E402
from onnxlock import load_session, lock_model, write_locked  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402

PASSPHRASE = "benchmark passphrase"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=2200, help="model size in MiB (default: 2200)")
    parser.add_argument("--method", default="mask", help="lock method (default: mask, the default lock)")
    parser.add_argument("--folder", type=Path, default=ROOT / "build" / "past_2gib")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "past_2gib.json")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    original = args.folder / f"mlp_{args.mib}.onnx"
    if not original.exists():
        onnx.save_model(mlp(args.mib), original, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=original.name + ".data", size_threshold=1024)
    start = time.perf_counter()
    locked = lock_model(original, passphrase=PASSPHRASE, seed=0, tries=1, kdf_params={"n": 2**12},
                        method=args.method, external_data="locked.onnx.data")
    lock_s = time.perf_counter() - start
    lock_peak = rss_mib()  # the lock's peak (the script's own start is far below it)
    write_locked(locked, args.folder / "locked.onnx", args.folder / "model.key", force=True)
    sizes = {"graph_bytes": len(locked.model), "data_bytes": len(locked.data)}
    del locked
    start = time.perf_counter()
    session = load_session(args.folder / "locked.onnx", args.folder / "model.key", passphrase=PASSPHRASE,
                           providers="cpu")
    load_s = time.perf_counter() - start
    x = np.random.default_rng(0).random((4, 256), dtype=np.float32)
    restored = session.run(None, {"x": x})[0]
    del session
    start = time.perf_counter()
    plain = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    plain_s = time.perf_counter() - start
    reference = plain.run(None, {"x": x})[0]
    report = {"mib": args.mib, "method": args.method, **sizes, "lock_s": round(lock_s, 1),
              "load_session_s": round(load_s, 2), "plain_session_s": round(plain_s, 2),
              "bit_identical": restored.tobytes() == reference.tobytes(),
              "peak_rss_mib_lock": round(lock_peak), "peak_rss_mib_whole_script": round(rss_mib())}
    print(json.dumps(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode(), mode=0o644)


if __name__ == "__main__":
    main()
