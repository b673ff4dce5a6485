#!/usr/bin/env python
"""Benchmark: lock time and peak memory against model size, each lock in a fresh child process.

Models are generated with random weights (no download, no torch): MLPs and plain CNNs of growing
size, and a ResNet-50 (its layer shapes, BatchNorm folded into the convolutions as exporters do,
about 100 MB). Each is locked by ``lock_model`` with ``--method`` (default: the default lock,
mask; confusion stacks at their defaults: ratio 0.02, synthetic calibration batch of 8, automatic
tries) in a child process that reports wall time and peak RSS; the import baseline (RSS before
the model is read) is reported beside it. Writes JSON; never asserts a time.

  PYTHONPATH=. python tools/bench_lock.py                      # all sizes -> reports/bench_lock.json
  PYTHONPATH=. python tools/bench_lock.py --models mlp_10,resnet50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxlock.fileio import atomic_write_bytes  # noqa: E402

PASSPHRASE = "benchmark passphrase"
OPSET = 17
METHOD = "mask"  # the default lock
REPORTED = ("tries", "groups_widened", "calibration_damage", "tensors", "weights_locked")  # from the pass's report
MB = 1 << 20


class Builder:
    """A small onnx.helper graph builder with random weights (He-normal, fixed seed)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def weight(self, name: str, shape: tuple, fan_in: int) -> str:
        values = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def bias(self, name: str, n: int) -> str:
        self.inits.append(numpy_helper.from_array(self.rng.uniform(-0.1, 0.1, n).astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, name: str, cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> str:
        w = self.weight(f"{name}.w", (cout, cin, k, k), cin * k * k)
        y = self.node("Conv", [x, w, self.bias(f"{name}.b", cout)], name, kernel_shape=[k, k],
                      pads=[k // 2] * 4, strides=[stride, stride])
        return self.node("Relu", [y], f"{name}.relu") if relu else y

    def model(self, inputs: list, output: str, classes: int) -> onnx.ModelProto:
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", classes])
        graph = helper.make_graph(self.nodes, "bench", inputs, [out], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def mlp(megabytes: float) -> onnx.ModelProto:
    """Four hidden Gemm layers of equal width sized to ``megabytes`` of weights."""
    width = int(np.sqrt(megabytes * MB / 4 / 3)) // 8 * 8
    b = Builder()
    x = "x"
    dims = [256, width, width, width, width]
    for i, (cin, cout) in enumerate(zip(dims, dims[1:])):
        x = b.node("Gemm", [x, b.weight(f"fc{i}.w", (cout, cin), cin), b.bias(f"fc{i}.b", cout)], f"fc{i}", transB=1)
        x = b.node("Relu", [x], f"fc{i}.relu")
    y = b.node("Gemm", [x, b.weight("head.w", (10, width), width), b.bias("head.b", 10)], "head", transB=1)
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])], y, 10)


def cnn(megabytes: float) -> onnx.ModelProto:
    """Six 3x3 convolutions (two at 32x32, two at 16x16, two at 8x8) on 3x32x32 inputs, widths sized
    to ``megabytes`` of weights, global pooling and a linear head."""
    width = int(np.sqrt(megabytes * MB / 4 / 9 / 5)) // 8 * 8
    b = Builder()
    x, cin = "x", 3
    for i, stride in enumerate([1, 1, 2, 1, 2, 1]):
        x = b.conv(x, f"conv{i}", cin, width, stride=stride)
        cin = width
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x], "pool")], "flatten")
    y = b.node("Gemm", [x, b.weight("head.w", (10, width), width), b.bias("head.b", 10)], "head", transB=1)
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])], y, 10)


def resnet50() -> onnx.ModelProto:
    """ResNet-50's layer shapes (bottlenecks 3-4-6-3, 224x224 input, 1000 classes), BN folded."""
    b = Builder()
    x = b.conv("x", "stem", 3, 64, k=7, stride=2)
    x = b.node("MaxPool", [x], "stem.pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    cin = 64
    for stage, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
        for block in range(blocks):
            name, stride = f"layer{stage + 1}.{block}", 2 if block == 0 and stage > 0 else 1
            y = b.conv(x, f"{name}.conv1", cin, width, k=1)
            y = b.conv(y, f"{name}.conv2", width, width, k=3, stride=stride)
            y = b.conv(y, f"{name}.conv3", width, 4 * width, k=1, relu=False)
            if block == 0:
                x = b.conv(x, f"{name}.down", cin, 4 * width, k=1, stride=stride, relu=False)
            x = b.node("Relu", [b.node("Add", [y, x], f"{name}.add")], f"{name}.relu")
            cin = 4 * width
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x], "pool")], "flatten")
    y = b.node("Gemm", [x, b.weight("fc.w", (1000, cin), cin), b.bias("fc.b", 1000)], "fc", transB=1)
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])], y, 1000)


MODELS = {
    **{f"mlp_{mb}": (lambda mb=mb: mlp(mb)) for mb in (1, 10, 50, 100, 200, 400)},
    **{f"cnn_{mb}": (lambda mb=mb: cnn(mb)) for mb in (1, 10, 50, 100)},
    "resnet50": resnet50,
}


def memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process; ru_maxrss would carry the parent's peak over exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def child(path: Path, method: str) -> None:
    """Lock ``path`` once and print one JSON line: wall time, peak RSS, the import baseline, the report."""
    from onnxlock import lock_model  # imported before the baseline is read, like a user's process

    baseline = memory_mb("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    locked = lock_model(path, passphrase=PASSPHRASE, seed=0, method=method)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    report = locked.report
    report = report["layers"][0] if "layers" in report else report  # the first layer (confusion, in a stack)
    facts = {key: report[key] for key in REPORTED if key in report}
    if "skipped" in report:
        facts["groups_skipped"] = len(report["skipped"])
    print(json.dumps({"lock_s": round(seconds, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(memory_mb("VmHWM"), 1),
                      "import_rss_mb": round(baseline, 1), "locked_mb": round(len(locked.model) / MB, 2), **facts}))


def bench(name: str, folder: Path, timeout: float, method: str) -> dict:
    model = MODELS[name]()
    path = folder / f"{name}.onnx"
    data = model.SerializeToString()
    path.write_bytes(data)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    del model
    result = {"model": name, "model_mb": round(len(data) / MB, 2), "params": params}
    del data
    try:
        done = subprocess.run([sys.executable, __file__, "--child", str(path), "--method", method], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return {**result, "error": f"over {timeout:.0f} s"}
    finally:
        path.unlink()
    if done.returncode:
        return {**result, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    measured["peak_over_model"] = round((measured["peak_rss_mb"] - measured["import_rss_mb"]) / result["model_mb"], 2)
    return {**result, **measured}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per lock before giving up")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_lock.json", help="JSON output")
    parser.add_argument("--method", default=METHOD, help=f"lock_model's method (default {METHOD})")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.method)
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            results.append(bench(name, Path(folder), args.timeout, args.method))
            print(json.dumps(results[-1]), file=sys.stderr)
    import onnxruntime
    report = {"what": "lock_model with the method below at its defaults, one child process per model",
              "method": args.method,
              "cpus": os.cpu_count(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
              "peak_over_model": "(peak RSS - RSS after imports) / model size",
              "cpu_s": "user+system CPU seconds of the lock (the machine is shared: wall time includes waiting)", "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode(), mode=0o644)


if __name__ == "__main__":
    main()
