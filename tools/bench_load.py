"""Benchmark: a locked model's load against a plain session and against whole-file encryption.

Per model, three ways to get a CPU session, each measured in fresh child processes (one
onnxruntime thread), interleaved so machine noise hits all alike:
  plain  InferenceSession(path) on the original model;
  aes    the original encrypted whole with AES-256-GCM: read, decrypt, InferenceSession(bytes)
         (the industrial anchor);
  locked onnxlock.load_session on the locked model (cheap scrypt, n=2^12; the default KDF's
         cost is measured on its own and reported once), for each lock method given: by default
         mask (the default lock: every weight transformed) and confusion (a small part touched).
For each: session creation (wall time, and the process's CPU time, which the neighbours of a
shared virtual machine disturb less), first inference, steady latency at batch 1 and 32 (medians), peak
RSS and the RSS held at the end (the session's footprint once built and run); and steady latency
of the locked and plain sessions side by side in one process (runs interleaved, for at least
--side-seconds a batch size), the latency comparison that process-to-process noise does not swamp; in that process also creation once both
kinds were built before (onnxruntime's start-up and each library's first use paid: the loader's
own cost on every load, which a fresh process's ~5 ms of start-up hides on a small model). Models: the bundled digits models,
generated MatMul MLPs of the given sizes (from 1 GiB on, locked with external data, as the CLI
does) and torchvision architectures exported with random weights (real layouts: 61-83 initializers
of many shapes in 169-185 nodes for mobilenet_v3_large and resnet50). Locked models are cached under build/bench_load/ (git ignores it): a 384 MiB lock takes
minutes.
Writes reports/bench_load.json (and a plot when matplotlib is installed); never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxlock import load_session, lock_model, write_locked  # noqa: E402
from onnxlock.bundled import bundled_path  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402
from onnxlock.graph.external import AUTO_BYTES  # noqa: E402
from onnxlock.key import recipients  # noqa: E402,F401  (tests patch it here)
from onnxlock.key.recipients import SCRYPT_DEFAULTS, ScryptRecipient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kdf_timing import timed_kdf  # noqa: E402

PASSPHRASE = "benchmark passphrase"
CHEAP_KDF = {"n": 2**12}
DIGITS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]
MODES = ("plain", "aes", "locked")
METHODS = "mask;confusion"
CACHE = Path(__file__).resolve().parent.parent / "build" / "bench_load"
WIDTH = 2048


def mlp(mib: int, width: int = WIDTH, inputs: int = 256, outputs: int = 10) -> onnx.ModelProto:
    """A MatMul+Add+Relu MLP with about ``mib`` MiB of float32 weights."""
    rng = np.random.default_rng(0)
    layers = max(1, round(mib * 2**20 / 4 / width / width))
    nodes, weights, previous, size = [], [], "x", inputs
    for i in range(layers + 1):
        out = outputs if i == layers else width
        weights += [numpy_helper.from_array((rng.standard_normal((size, out)) / np.sqrt(size)).astype(np.float32), f"w{i}"),
                    numpy_helper.from_array((0.1 * rng.standard_normal(out)).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"], name=f"matmul{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}")]
        previous, size = f"a{i}", out
        if i < layers:
            nodes.append(helper.make_node("Relu", [previous], [f"r{i}"], name=f"relu{i}"))
            previous = f"r{i}"
    graph = helper.make_graph(nodes, f"mlp{mib}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", inputs])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["batch", outputs])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def torchvision_export(name: str) -> onnx.ModelProto:
    """torchvision's ``name`` (random weights, eval mode) exported by the TorchScript exporter at
    opset 17 with a dynamic batch: a real layout (needs the [train] extra)."""
    import io

    import torch

    from onnxlock.torch_compat import prepare_torchvision

    prepare_torchvision()
    import torchvision

    model, buffer = getattr(torchvision.models, name)(weights=None).eval(), io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), buffer, opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def options() -> ort.SessionOptions:
    result = ort.SessionOptions()
    result.intra_op_num_threads = result.inter_op_num_threads = 1
    return result


def feeds_for(session: ort.InferenceSession, batch: int) -> dict:
    rng = np.random.default_rng(1)
    feeds = {}
    for arg in session.get_inputs():
        shape = [batch if not isinstance(d, int) or i == 0 else d for i, d in enumerate(arg.shape)]
        feeds[arg.name] = rng.random(shape, dtype=np.float32)
    return feeds


def rss_mib(field: str = "VmHWM") -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would carry the parent's over a fork), or
    with ``field="VmRSS"`` the resident set now."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side_by_side(locked: Path, steady: int, seconds: float) -> dict:
    """Steady latency of ``load_session``'s session over a plain one, both in this process, their
    runs interleaved (order alternating), 2 x ``steady`` pairs or more until ``seconds`` have passed
    for each batch size: per batch size the ratio of medians. Separate processes
    differ by more than the sessions do (one plain session runs 7.6 or 10.3 ms a batch-1 step on
    the 114 MiB MLP here, depending on the process), so this is the latency comparison."""
    plain = ort.InferenceSession(str(locked.parent / "original.onnx"), options(), providers=["CPUExecutionProvider"])
    session = load_session(locked / "locked.onnx", locked / "model.key", passphrase=PASSPHRASE, providers="cpu",
                           sess_options=options())
    ratios = {"create_in_process": in_process_creation(locked, steady), "side_seconds": seconds}
    for batch in (1, 32):
        feeds, times = feeds_for(plain, batch), {"plain": [], "locked": []}
        deadline, step = time.perf_counter() + seconds, 0
        while step < 2 * steady or (time.perf_counter() < deadline and step < 200_000):
            step += 1
            pair = [("plain", plain), ("locked", session)]
            for mode, which in pair if step % 2 else pair[::-1]:
                start = time.perf_counter()
                which.run(None, feeds)
                times[mode].append(time.perf_counter() - start)
        ratios[f"batch{batch}"] = statistics.median(times["locked"]) / statistics.median(times["plain"])
        ratios[f"batch{batch}_runs"] = len(times["locked"])
    return ratios


def in_process_creation(locked: Path, steady: int) -> dict:
    """Creation once this process has built both kinds of session (onnxruntime's start-up and every
    library's first use paid): the loader's own cost on each load, the KDF excluded. Medians of up
    to ``steady`` alternating pairs, at most ~20 s of them."""
    spent, times = timed_kdf(), {"plain": [], "locked": []}
    deadline = time.perf_counter() + 20
    for step in range(max(steady, 5)):
        if step >= 5 and time.perf_counter() > deadline:
            break
        start = time.perf_counter()
        ort.InferenceSession(str(locked.parent / "original.onnx"), options(), providers=["CPUExecutionProvider"])
        times["plain"].append(time.perf_counter() - start)
        before, start = len(spent), time.perf_counter()
        load_session(locked / "locked.onnx", locked / "model.key", passphrase=PASSPHRASE, providers="cpu",
                     sess_options=options())
        times["locked"].append(time.perf_counter() - start - sum(s[0] for s in spent[before:]))
    plain, mine = (1000 * statistics.median(times[k]) for k in ("plain", "locked"))
    return {"plain_ms": plain, "locked_ms": mine, "ratio": mine / plain}


def child(mode: str, folder: Path, steady: int, seconds: float) -> dict:
    """One measurement in this (fresh) process (``folder``: the lock's folder, original one up)."""
    if mode == "side_by_side":
        return side_by_side(folder, steady, seconds)
    locked, folder = folder, folder.parent
    start, cpu = time.perf_counter(), time.process_time()
    if mode == "plain":
        session = ort.InferenceSession(str(folder / "original.onnx"), options(), providers=["CPUExecutionProvider"])
    elif mode == "aes":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        key = (folder / "aes.key").read_bytes()
        sealed = (folder / "original.aes").read_bytes()
        model = AESGCM(key).decrypt(sealed[:12], sealed[12:], None)
        del sealed
        session = ort.InferenceSession(model, options(), providers=["CPUExecutionProvider"])
        del model
    else:
        spent = timed_kdf()
        start, cpu = time.perf_counter(), time.process_time()
        session = load_session(locked / "locked.onnx", locked / "model.key", passphrase=PASSPHRASE,
                               providers="cpu", sess_options=options())
    create, create_cpu = time.perf_counter() - start, time.process_time() - cpu
    kdf, kdf_cpu = (1000 * sum(s[0] for s in spent), 1000 * sum(s[1] for s in spent)) if mode == "locked" else (0, 0)
    one, many = feeds_for(session, 1), feeds_for(session, 32)
    start = time.perf_counter()
    session.run(None, one)
    first = time.perf_counter() - start
    latency = {}
    for name, feeds in (("batch1", one), ("batch32", many)):
        times = []
        for _ in range(steady):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - start)
        latency[name] = 1000 * statistics.median(times)
    output = session.run(None, many)[0]
    return {"create_ms": 1000 * create, "create_excl_kdf_ms": 1000 * create - kdf,
            "create_cpu_ms": 1000 * create_cpu, "create_cpu_excl_kdf_ms": 1000 * create_cpu - kdf_cpu,
            "first_ms": 1000 * first, **{f"{k}_ms": v for k, v in latency.items()},
            "peak_rss_mib": rss_mib(), "held_rss_mib": rss_mib("VmRSS"),
            "output_sha": __import__("hashlib").sha256(output.tobytes()).hexdigest()}


def run_child(mode: str, folder: Path, steady: int, seconds: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), "--steady", str(steady),
                          "--side-seconds", str(seconds)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def prepare(name: str, model, folder: Path, method: str) -> dict:
    """Write (once: the folder is a cache) the original and its AES-GCM encryption into ``folder``,
    and the model locked with ``method`` and its key into ``folder/<method>``; return the lock's facts."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "original.aes").exists():
        original = model.read_bytes() if isinstance(model, Path) else model().SerializeToString()
        atomic_write_bytes(folder / "original.onnx", original, mode=0o644)
        key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
        atomic_write_bytes(folder / "aes.key", key, mode=0o600)
        atomic_write_bytes(folder / "original.aes", nonce + AESGCM(key).encrypt(nonce, original, None), mode=0o644)
    locked_dir = folder / method.replace(",", "+")
    facts = locked_dir / "lock.json"
    if not facts.exists():
        locked_dir.mkdir(exist_ok=True)
        start = time.perf_counter()
        external_data = "locked.onnx.data" if (folder / "original.onnx").stat().st_size >= AUTO_BYTES else None
        locked = lock_model(folder / "original.onnx", passphrase=PASSPHRASE, seed=0, tries=1, kdf_params=CHEAP_KDF,
                            method=method, external_data=external_data)
        info = {"model": name, "method": method, "size_mib": round((folder / "original.onnx").stat().st_size / 2**20, 2),
                "lock_s": round(time.perf_counter() - start, 1), "external_data": external_data is not None}
        write_locked(locked, locked_dir / "locked.onnx", locked_dir / "model.key")
        atomic_write_bytes(facts, json.dumps(info).encode(), mode=0o644)
    return json.loads(facts.read_text())


def bench(info: dict, folder: Path, repeat: int, steady: int, seconds: float) -> dict:
    runs = {mode: [] for mode in MODES}
    for _ in range(repeat):
        for mode in MODES:
            runs[mode].append(run_child(mode, folder, steady, seconds))
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "output_sha"}
           for mode, rs in runs.items()}
    shas = {mode: {r["output_sha"] for r in rs} for mode, rs in runs.items()}
    ratio = {k: {mode: med[mode][k] / med["plain"][k] for mode in ("aes", "locked")} for k in med["plain"]
             if "excl_kdf" not in k}
    for excluded, plain in (("create_excl_kdf_ms", "create_ms"), ("create_cpu_excl_kdf_ms", "create_cpu_ms")):
        ratio[excluded] = {"locked": med["locked"][excluded] / med["plain"][plain]}
    pairs = [run_child("side_by_side", folder, steady, seconds) for _ in range(repeat)]
    batches = ("batch1", "batch32")
    ratio["steady_side_by_side"] = {**{k: statistics.median(p[k] for p in pairs) for k in batches},
                                    "runs": {k: [p[f"{k}_runs"] for p in pairs] for k in batches},
                                    "spread": {k: [min(p[k] for p in pairs), max(p[k] for p in pairs)] for k in batches}}
    ratio["create_in_process"] = {k: statistics.median(p["create_in_process"][k] for p in pairs)
                                  for k in ("plain_ms", "locked_ms", "ratio")}
    return {**info, "medians": med, "ratios_vs_plain": ratio,
            "outputs_bit_identical": len(shas["plain"] | shas["locked"]) == 1}


def kdf_cost_ms() -> dict:
    result = {}
    for label, params in (("default", dict(SCRYPT_DEFAULTS)), ("cheap_n2^12", {**SCRYPT_DEFAULTS, **CHEAP_KDF})):
        stanza = ScryptRecipient(PASSPHRASE, **params).wrap(os.urandom(32))
        start = time.perf_counter()
        ScryptRecipient(PASSPHRASE).unwrap(stanza)
        result[label] = 1000 * (time.perf_counter() - start)
    return result


def plot(report: dict, path: Path) -> None:
    """Creation (KDF excluded), peak RSS and held RSS relative to a plain session, one bar pair per row."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = report["results"]
    names = [f"{r['model']} [{r['method']}]" for r in rows]
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(16, 0.45 * len(names) + 1.5), sharey=True)
    panels = ((axes[0], {"aes": "create_ms", "locked": "create_excl_kdf_ms"}, "session creation / plain (KDF excluded)"),
              (axes[1], {"aes": "peak_rss_mib", "locked": "peak_rss_mib"}, "peak RSS / plain"),
              (axes[2], {"aes": "held_rss_mib", "locked": "held_rss_mib"}, "RSS held once built and run / plain"))
    for ax, keys, title in panels:
        for i, mode in enumerate(("aes", "locked")):
            ax.barh(y + 0.4 * i, [r["ratios_vs_plain"].get(keys[mode], {}).get(mode, np.nan) for r in rows], 0.4,
                    label={"aes": "whole-file AES-GCM", "locked": "onnxlock load_session"}[mode])
        ax.axvline(1, color="k", lw=0.5)
        ax.set_title(title)
        ax.legend()
    axes[0].set_yticks(y + 0.2, names)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DIGITS), help="bundled models, comma-separated ('' for none)")
    parser.add_argument("--sizes", default="32,128,384", help="generated MLP sizes in MiB, comma-separated")
    parser.add_argument("--torchvision", default="", help="torchvision models to export and load, comma-separated "
                        "(e.g. mobilenet_v3_large,resnet50; needs the [train] extra)")
    parser.add_argument("--methods", default=METHODS, help="lock methods to load, ';'-separated")
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder keeping originals and locked models")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per mode and model")
    parser.add_argument("--steady", type=int, default=30, help="timed inferences per batch size")
    parser.add_argument("--side-seconds", type=float, default=3.0,
                        help="side by side: time each batch size's interleaved runs for at least this long")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_load.json"), help="JSON output")
    parser.add_argument("--plot-also", type=Path, action="append", default=[], metavar="JSON",
                        help="results of an earlier run (e.g. the 1 GiB one) to draw in this run's plot")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.steady, args.side_seconds)))
        return
    cases = [(name, bundled_path(name)) for name in filter(None, args.models.split(","))]
    cases += [(f"mlp_{mib}MiB", lambda mib=int(mib): mlp(mib)) for mib in filter(None, args.sizes.split(","))]
    cases += [(name, lambda name=name: torchvision_export(name)) for name in filter(None, args.torchvision.split(","))]
    results = []
    for name, model in cases:
        for method in args.methods.split(";"):
            info = prepare(name, model, args.cache / name, method)
            results.append(bench(info, args.cache / name / method.replace(",", "+"), args.repeat, args.steady,
                                 args.side_seconds))
            r, m = results[-1]["ratios_vs_plain"], results[-1]["medians"]
            print(f"{name} [{method}]: create aes {r['create_ms']['aes']:.2f}x locked {r['create_ms']['locked']:.2f}x, "
                  f"KDF excluded {r['create_excl_kdf_ms']['locked']:.2f}x (plain {m['plain']['create_ms']:.1f} ms); "
                  f"CPU time aes {r['create_cpu_ms']['aes']:.2f}x locked {r['create_cpu_excl_kdf_ms']['locked']:.2f}x; "
                  f"rss aes {r['peak_rss_mib']['aes']:.2f}x locked {r['peak_rss_mib']['locked']:.2f}x "
                  f"(plain {m['plain']['peak_rss_mib']:.0f} MiB), held after creation and runs "
                  f"aes {r['held_rss_mib']['aes']:.2f}x locked {r['held_rss_mib']['locked']:.2f}x; "
                  f"batch1 {r['batch1_ms']['locked']:.3f}x batch32 {r['batch32_ms']['locked']:.3f}x "
                  f"(side by side {r['steady_side_by_side']['batch1']:.3f}x, {r['steady_side_by_side']['batch32']:.3f}x); "
                  f"creation in a warm process {r['create_in_process']['locked_ms']:.2f} ms against "
                  f"{r['create_in_process']['plain_ms']:.2f} ms ({r['create_in_process']['ratio']:.2f}x); "
                  f"exact {results[-1]['outputs_bit_identical']}", file=sys.stderr, flush=True)
    kdf = kdf_cost_ms()
    print(f"KDF (scrypt) to open a key, on its own: default {kdf['default']:.0f} ms, cheap {kdf['cheap_n2^12']:.1f} ms",
          file=sys.stderr)
    report = {"onnxruntime": ort.__version__, "threads": 1, "cpu_count": os.cpu_count(), "repeat": args.repeat,
              "steady": args.steady, "side_seconds": args.side_seconds, "kdf_ms": kdf, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode(), mode=0o644)
    earlier = [row for extra in args.plot_also for row in json.loads(extra.read_text())["results"]]
    plot({**report, "results": results + earlier}, args.out)


if __name__ == "__main__":
    main()
