"""Where a load's time goes: load_session timed phase by phase, in fresh processes and in a warm one.

Each phase is one of the loader's own calls, wrapped with a timer (the wrappers add ~1 us a
call); "onnxruntime" is InferenceSession's construction, "rest" what no listed phase covers
(Python between them). scrypt's own work is taken out as in bench_load.py (``timed_kdf``: its
first-call costs stay in "open key"). Uses bench_load's cache of locked models (run bench_load.py
once first). Prints medians in milliseconds; never asserts a time.

    python tools/profile_load.py digits_cnn mask --fresh 9 --warm 40 [--identity]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_load  # noqa: E402
import bench_start  # noqa: E402
import onnxruntime as ort  # noqa: E402

from onnxlock.runtime import fast, session  # noqa: E402

# (module, attribute, phase): the loader's calls, in the order a load makes them
PHASES = [(session, "check_safe", "option checks"), (session, "settle", "interrupted-write check"),
          (session, "read_bytes", "read key"), (session, "parse_key", "parse key"),
          (session, "LockedSource", "read/map model"), (session.Credentials, "open", "open key"),
          (fast, "parse_model", "parse model"), (fast, "restore", "restore (small tensors)"),
          (fast, "_restore_all", "restore (large tensors)"), (fast, "drop_unread", "unread scan"),
          (fast, "copy_options", "copy options"), (session, "_check_binding", "binding check")]


def instrument(spent: dict[str, float]) -> None:
    """Wrap each phase's call (and onnxruntime's session) to add its wall time to ``spent``."""
    def timed(function, phase):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - begin
        return wrapper
    for owner, name, phase in PHASES:
        setattr(owner, name, timed(getattr(owner, name), phase))

    class Timed(ort.InferenceSession):
        def __init__(self, *args, **kwargs):
            begin = time.perf_counter()
            super().__init__(*args, **kwargs)
            if threading.current_thread() is threading.main_thread():  # not the start-up run ahead
                spent["onnxruntime"] = spent.get("onnxruntime", 0.0) + time.perf_counter() - begin
    ort.InferenceSession = Timed  # onnxruntime's own attribute, which session.py calls (this process only)


def loads(folder: Path, count: int, identity: bool = False) -> list[dict[str, float]]:
    """``count`` loads in this process, each as {phase: ms} with 'total' and 'rest'; by the device
    identity bench_start.py writes beside the lock (``identity``) instead of the passphrase."""
    spent, kdf = {}, bench_load.timed_kdf()
    instrument(spent)
    opener = {"identity": folder / bench_start.IDENTITY} if identity else {"passphrase": bench_load.PASSPHRASE}
    key = folder / (bench_start.IDENTITY_KEY if identity else "model.key")
    result = []
    for _ in range(count):
        spent.clear()
        before, begin = len(kdf), time.perf_counter()
        session.load_session(folder / "locked.onnx", key, **opener, providers="cpu", sess_options=bench_load.options())
        total = time.perf_counter() - begin - sum(wall for wall, _ in kdf[before:])
        if "open key" in spent:
            spent["open key"] -= sum(wall for wall, _ in kdf[before:])
        row = {phase: 1000 * value for phase, value in spent.items()}
        row["total"] = 1000 * total
        row["rest"] = row["total"] - sum(v for k, v in row.items() if k != "total")
        result.append(row)
    return result


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    phases = [phase for _, _, phase in PHASES] + ["onnxruntime", "rest", "total"]
    return {phase: statistics.median(row.get(phase, 0.0) for row in rows) for phase in phases
            if any(phase in row for row in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model name in bench_load's cache (e.g. digits_cnn, mlp_32MiB)")
    parser.add_argument("method", help="its lock method there (mask, confusion, advparams)")
    parser.add_argument("--fresh", type=int, default=9, help="fresh processes, one load each")
    parser.add_argument("--warm", type=int, default=40, help="loads in one process after 5 untimed ones")
    parser.add_argument("--cache", type=Path, default=bench_load.CACHE)
    parser.add_argument("--identity", action="store_true",
                        help="open the key by the device identity tools/bench_start.py writes beside the lock")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.cache / args.model / args.method.replace(",", "+")
    if not (folder / "model.key").exists():
        parser.error(f"{folder} has no locked model: run tools/bench_load.py for it first")
    if args.identity and not (folder / bench_start.IDENTITY_KEY).exists():
        parser.error(f"{folder} has no device identity: run tools/bench_start.py for it first")
    if args.child is not None:
        print(json.dumps(loads(folder, args.child, args.identity)))
        return
    command = [sys.executable, __file__, args.model, args.method, "--cache", str(args.cache)]
    command += ["--identity"] * args.identity + ["--child"]
    fresh = [json.loads(subprocess.run(command + ["1"], capture_output=True, text=True, check=True).stdout)[0]
             for _ in range(args.fresh)]
    warm = json.loads(subprocess.run(command + [str(args.warm + 5)], capture_output=True, text=True,
                                     check=True).stdout)[5:]
    columns = {"fresh process": medians(fresh), "warm process": medians(warm)}
    print(f"{args.model} [{args.method}]: medians in ms ({args.fresh} fresh processes, {args.warm} warm loads)")
    for phase in columns["fresh process"]:
        print(f"  {phase:26s} {columns['fresh process'][phase]:8.3f} {columns['warm process'].get(phase, 0.0):8.3f}")


if __name__ == "__main__":
    main()
