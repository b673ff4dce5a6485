"""Benchmark: what a load does to the rest of its process, at the key's real KDF cost.

A service loads a locked model in one thread while others answer requests, health checks and
heartbeats, or loads several models side by side. With a passphrase, most of a load is scrypt
(n=2**17, r=8 by default: here the key's own default parameters, not the other benchmarks'
cheap ones). The two scrypt implementations alternate in one process: ``stdlib`` (the standard
library's, which onnxlock uses) and ``cryptography`` (its fallback where Python's OpenSSL has no
scrypt, and what onnxlock used before). For each, medians over ``--repeat`` rounds of:
  alone_ms    one load_session;
  two_ms      two load_session at once, in two threads (``two_ratio``: two_ms / alone_ms; 1.0
              is side by side, 2.0 one after the other);
  stall_ms    the longest gap of a thread that beats every millisecond, during one load (a
              thread never stopped sees about 1 ms);
and, for reference, ``plain_stall_ms``: that beat's longest gap while onnxruntime creates a plain
session of the original. Writes reports/bench_threads.json; never asserts a time.

    python tools/bench_threads.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's onnxlock
sys.path.insert(0, str(ROOT / "tools"))

import onnxruntime as ort  # noqa: E402
from bench_load import options  # noqa: E402  (one onnxruntime thread, as the other benchmarks)

from onnxlock import load_session, lock_model, write_locked  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402
from onnxlock.key import recipients  # noqa: E402

PASSPHRASE = "benchmark passphrase"
IMPLEMENTATIONS = ("stdlib", "cryptography")


def longest_beat_gap(work) -> float:
    """Run ``work()`` here while a thread beats every millisecond; the beat's longest gap, in s."""
    stop, gaps = threading.Event(), []

    def beat():
        longest, last = 0.0, time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now
        gaps.append(longest)
    beater = threading.Thread(target=beat)
    beater.start()
    time.sleep(0.02)
    try:
        work()
    finally:
        stop.set()
        beater.join()
    return gaps[0]


def wall(work) -> float:
    begin = time.perf_counter()
    work()
    return time.perf_counter() - begin


def side_by_side(work) -> float:
    """Wall seconds of ``work()`` run in two threads at once."""
    threads = [threading.Thread(target=work) for _ in range(2)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - begin


def use(implementation: str, stdlib) -> None:
    recipients._STDLIB_SCRYPT = stdlib if implementation == "stdlib" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_mlp", help="a bundled model (models/NAME.onnx)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--n", type=int, default=recipients.SCRYPT_DEFAULTS["n"],
                        help="scrypt's n for the benchmark's key (default: the key's own default)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_threads.json")
    args = parser.parse_args()
    stdlib = recipients._STDLIB_SCRYPT
    if stdlib is None:
        sys.exit("this Python's OpenSSL has no scrypt: there is nothing to compare")
    original = ROOT / "models" / f"{args.model}.onnx"
    with tempfile.TemporaryDirectory() as folder:
        locked, key = Path(folder) / "locked.onnx", Path(folder) / "model.key"
        print(f"locking {args.model} (mask, scrypt n={args.n})...", file=sys.stderr)
        write_locked(lock_model(original, passphrase=PASSPHRASE, method="mask", tries=1, kdf_params={"n": args.n}),
                     locked, key)

        def load():
            load_session(locked, key, passphrase=PASSPHRASE, sess_options=options(),
                         providers=["CPUExecutionProvider"])

        def plain():
            ort.InferenceSession(str(original), options(), providers=["CPUExecutionProvider"])
        rows = {name: {"alone_ms": [], "two_ms": [], "stall_ms": []} for name in IMPLEMENTATIONS}
        plain_stalls = []
        for round_ in range(args.repeat + 1):  # the first round warms up and is dropped
            for name in IMPLEMENTATIONS:
                use(name, stdlib)
                figures = {"alone_ms": wall(load), "two_ms": side_by_side(load), "stall_ms": longest_beat_gap(load)}
                if round_:
                    for field, seconds in figures.items():
                        rows[name][field].append(seconds * 1e3)
            use("stdlib", stdlib)
            if round_:
                plain_stalls.append(longest_beat_gap(plain) * 1e3)
            print(f"round {round_}/{args.repeat}", file=sys.stderr)
    report = {"model": args.model, "method": "mask", "kdf": recipients.SCRYPT_DEFAULTS | {"n": args.n},
              "repeat": args.repeat, "onnxruntime": ort.__version__,
              "plain_stall_ms": round(statistics.median(plain_stalls), 2)}
    for name, figures in rows.items():
        medians = {field: round(statistics.median(values), 2) for field, values in figures.items()}
        report[name] = medians | {"two_ratio": round(medians["two_ms"] / medians["alone_ms"], 2),
                                  "stall_range_ms": [round(min(figures["stall_ms"]), 1),
                                                     round(max(figures["stall_ms"]), 1)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode(), mode=0o644)  # never half a report
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
