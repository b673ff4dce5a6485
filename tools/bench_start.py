"""Benchmark: a service's start, from its first import to its first answer, locked against plain.

bench_load.py times session creation in processes that have imported everything already. A
service or an edge device that starts also pays for its imports, and onnxlock's (onnx,
cryptography, its own modules) come on top of onnxruntime's. Here each fresh child process times,
from its first statement (the interpreter's own start-up is the same for all and left out):
  import  plain: ``import onnxruntime``; aes: that and cryptography's AESGCM;
          locked: ``from onnxlock import load_session``;
  create  the session (as bench_load.py: one onnxruntime thread; scrypt's own work taken out,
          ``kdf_timing``); identity: the same locked model, its secret re-sealed (``rekey``)
          for a device identity (X25519), which opens it with no KDF at all;
  first   the first inference (batch 1);
  start   the three together;
  kdf     scrypt's own work, taken out of the above (locked only).
Modes run interleaved, ``--repeat`` times; medians and their ratios to plain. Uses bench_load's
cache of locked models (run bench_load.py first). Writes reports/bench_start.json; never asserts
a time.

    python tools/bench_start.py --repeat 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "bench_load"
sys.path.insert(0, str(ROOT))  # this checkout's onnxlock, as bench_load.py
MODELS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]
MODES = ("plain", "aes", "locked", "identity")
PASSPHRASE = "benchmark passphrase"  # bench_load.PASSPHRASE (not imported: it would time its imports)
PHASES = ("import_ms", "create_ms", "first_ms", "start_ms")
IDENTITY, IDENTITY_KEY = "device", "device.key"  # written beside each cached lock: ``with_identity``


def child(mode: str, locked: Path) -> dict:
    """One start in this fresh process; ``locked``: the lock's folder (the original one up)."""
    begin = time.perf_counter()
    import onnxruntime as ort
    if mode == "aes":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    elif mode in ("locked", "identity"):
        from onnxlock import load_session
    imported = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    folder, kdf = locked.parent, []
    if mode == "plain":
        session = ort.InferenceSession(str(folder / "original.onnx"), options, providers=["CPUExecutionProvider"])
    elif mode == "aes":
        sealed = (folder / "original.aes").read_bytes()
        model = AESGCM((folder / "aes.key").read_bytes()).decrypt(sealed[:12], sealed[12:], None)
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        del model, sealed
    elif mode == "identity":
        session = load_session(locked / "locked.onnx", locked / IDENTITY_KEY, identity=locked / IDENTITY,
                               providers="cpu", sess_options=options)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from kdf_timing import timed_kdf  # imports nothing load_session did not
        paused = time.perf_counter()
        kdf = timed_kdf()  # pays scrypt's first-call costs now and charges them to the first derivation:
        shift = time.perf_counter() - paused
        begin, imported = begin + shift, imported + shift  # so its set-up is left out of every phase
        session = load_session(locked / "locked.onnx", locked / "model.key", providers="cpu", sess_options=options)
    created = time.perf_counter() - sum(wall for wall, _ in kdf)
    import numpy as np  # onnxruntime imported it already
    feeds = {arg.name: np.zeros([1 if not isinstance(d, int) else d for d in arg.shape], dtype=np.float32)
             for arg in session.get_inputs()}
    session.run(None, feeds)
    answered = time.perf_counter() - sum(wall for wall, _ in kdf)
    return {"import_ms": 1000 * (imported - begin), "create_ms": 1000 * (created - imported),
            "first_ms": 1000 * (answered - created), "start_ms": 1000 * (answered - begin),
            "kdf_ms": 1000 * sum(wall for wall, _ in kdf)}


def run_child(mode: str, locked: Path) -> dict:
    env = {**os.environ, "ONNXLOCK_PASSPHRASE": PASSPHRASE}
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(locked)], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.splitlines()[-1])


def bench(locked: Path, repeat: int) -> dict:
    runs = {mode: [] for mode in MODES}
    for _ in range(repeat):
        for mode in MODES:
            runs[mode].append(run_child(mode, locked))
    medians = {mode: {phase: statistics.median(row[phase] for row in rows) for phase in PHASES}
               for mode, rows in runs.items()}
    ratios = {phase: {mode: medians[mode][phase] / medians["plain"][phase] for mode in MODES[1:]}
              for phase in PHASES}
    return {"model": locked.parent.name, "method": locked.name, "medians": medians, "ratios_vs_plain": ratios}


def with_identity(locked: Path) -> None:
    """A device identity beside the cached lock and its key re-sealed for it (once)."""
    if (locked / IDENTITY_KEY).exists():
        return
    from onnxlock import keygen
    from onnxlock.key import ScryptRecipient, rekey
    recipient = keygen(locked / IDENTITY, force=True)
    sealed = rekey((locked / "model.key").read_bytes(), [ScryptRecipient(PASSPHRASE)], [recipient])
    (locked / IDENTITY_KEY).write_bytes(sealed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="models in bench_load's cache")
    parser.add_argument("--methods", default="mask,confusion,advparams", help="their lock methods there")
    parser.add_argument("--repeat", type=int, default=15, help="fresh processes per mode and lock")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_start.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    import onnxruntime
    locks = [args.cache / model / method for model in args.models.split(",") for method in args.methods.split(",")
             if (args.cache / model / method / "model.key").exists()]
    if not locks:
        parser.error(f"no locked models under {args.cache}: run tools/bench_load.py first")
    results = []
    for number, locked in enumerate(locks, start=1):
        with_identity(locked)
        result = bench(locked, args.repeat)
        results.append(result)
        plain, ratio = result["medians"]["plain"], result["ratios_vs_plain"]
        cells = "  ".join(f"{phase[:-3]} {plain[phase]:.1f} ms x{ratio[phase]['locked']:.2f} "
                          f"(identity x{ratio[phase]['identity']:.2f}, aes x{ratio[phase]['aes']:.2f})"
                          for phase in PHASES)
        print(f"[{number}/{len(locks)}] {result['model']} [{result['method']}]: {cells}", flush=True)
    report = {"onnxruntime": onnxruntime.__version__, "cpu_count": os.cpu_count(), "repeat": args.repeat,
              "threads": 1, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(report, indent=1))
    partial.replace(args.out)  # never a half-written report
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
