"""Each way onnxruntime's Python API takes weights a program made in memory, probed for the memory
a locked model's load pays: why a masked model's load peaks at about twice the weights.

A masked model's weights exist in the clear only once the loader has restored them in its own
memory, so onnxruntime must take them from there. On a generated MatMul MLP (``--mib``), each
way runs in a fresh process from the same base (imports done, weights on disk as raw bytes, read
back as the loader's restore would write them): accepted or refused (onnxruntime's message),
peak and held RSS over that base, and whether the session computes the plain model's outputs
bit for bit. A plain session of the original file is the yardstick. Never asserts; a way that
onnxruntime starts to accept shows up here first.

    python tools/probe_handover.py --mib 128 --out reports/probe_handover.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import rss_mib  # noqa: E402

WIDTH = 2048  # each layer's weight is WIDTH x WIDTH float32: 16 MiB
PLACEHOLDER = "restored-weights"  # external-data location of the weights handed over in memory
WAYS = {
    "plain": "InferenceSession(path) of the original model (the yardstick)",
    "copied": "add_external_initializers of numpy arrays, freed once built (the loader's way)",
    "lent": "add_initializer of numpy arrays, kept for the session's life (no copy)",
    "files_in_memory": "add_external_initializers_from_files_in_memory, the buffer freed once built",
    "files_borrowed": "the same with session.use_external_initializer_file_buffers_directly, kept",
    "ort_owned": "OrtValues onnxruntime allocates, filled in place, then add_external_initializers",
    "fifo": "external data read from a named pipe per tensor (nothing at rest)",
    "memfd": "external data in a memfd, reached as /proc/self/fd/N (nothing at rest)",
    "no_prepacking": "lent, with session.disable_prepacking (nothing packed beside the weights)",
}


def build(folder: Path, mib: int) -> None:
    """The original model (weights inline), its weights as raw bytes, and a skeleton whose weights
    are placeholders, in ``folder``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng, nodes, weights, biases, x = np.random.default_rng(0), [], [], [], "x"
    for i in range(max(1, mib // 16)):
        weights.append((rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32))
        biases.append(numpy_helper.from_array(np.full(WIDTH, 0.01, np.float32), f"b{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        x = f"r{i}"
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", WIDTH]) for name in ("x", x)]
    graph = helper.make_graph(nodes, "mlp", io[:1], io[1:],
                              [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)] + biases)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, folder / "plain.onnx")
    with open(folder / "weights.bin", "wb") as out:
        for w in weights:
            out.write(w.tobytes())
    for tensor in model.graph.initializer[:len(weights)]:
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", PLACEHOLDER), ("offset", "0"), ("length", str(WIDTH * WIDTH * 4))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    (folder / "skeleton.onnx").write_bytes(model.SerializeToString())


def restored(folder: Path, i: int, out: np.ndarray | None = None) -> np.ndarray:
    """Weight ``i`` read into ``out`` (a new array by default): what a restore leaves in memory."""
    out = np.empty((WIDTH, WIDTH), np.float32) if out is None else out
    with open(folder / "weights.bin", "rb") as data:
        data.seek(i * out.nbytes)
        data.readinto(memoryview(out).cast("B"))
    return out


def skeleton(folder: Path, locations: dict[str, str] | None = None, past_end: bool = False) -> bytes:
    """The skeleton's bytes, each weight's placeholder location renamed as ``locations`` says
    (``past_end``: its offset past the end of that file, so that reading it would fail)."""
    import onnx

    model = onnx.load(folder / "skeleton.onnx", load_external_data=False)
    for tensor in model.graph.initializer:
        if locations and tensor.name in locations:
            tensor.external_data[0].value = locations[tensor.name]
            if past_end:
                tensor.external_data[1].value = str((folder / locations[tensor.name]).stat().st_size + 1)
    return model.SerializeToString()


def hand_over(way: str, folder: Path, options, count: int):
    """The session for ``way`` and what it must keep alive; raises onnxruntime's refusal."""
    import onnxruntime as ort

    names, cpu = [f"w{i}" for i in range(count)], ["CPUExecutionProvider"]
    if way == "plain":
        return ort.InferenceSession(str(folder / "plain.onnx"), options, providers=cpu), None
    if way in ("copied", "lent", "no_prepacking"):
        arrays = [restored(folder, i) for i in range(count)]
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
        if way == "copied":
            options.add_external_initializers(names, values)
        else:
            for name, value in zip(names, values):
                options.add_initializer(name, value)
        if way == "no_prepacking":
            options.add_session_config_entry("session.disable_prepacking", "1")
        locations = None
        if way != "copied":  # lent weights must point at a real file, past its end (as the loader's do)
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
            locations = dict.fromkeys(names, "weights.bin")
        session = ort.InferenceSession(skeleton(folder, locations, past_end=way != "copied"), options, providers=cpu)
        return session, None if way == "copied" else (arrays, values)
    if way in ("files_in_memory", "files_borrowed"):
        buffer = np.empty((count, WIDTH, WIDTH), np.float32)
        for i in range(count):
            restored(folder, i, buffer[i])
        flat = buffer.reshape(-1).view(np.uint8)
        locations = {name: f"{PLACEHOLDER}-{i}" for i, name in enumerate(names)}
        options.add_external_initializers_from_files_in_memory(
            list(locations.values()), [flat[i * buffer[0].nbytes:(i + 1) * buffer[0].nbytes] for i in range(count)],
            [buffer[0].nbytes] * count)
        if way == "files_borrowed":
            options.add_session_config_entry("session.use_external_initializer_file_buffers_directly", "1")
        session = ort.InferenceSession(skeleton(folder, locations), options, providers=cpu)
        return session, buffer if way == "files_borrowed" else None
    if way == "ort_owned":
        values = [ort.OrtValue.ortvalue_from_shape_and_type([WIDTH, WIDTH], np.float32, "cpu") for _ in names]
        for i, value in enumerate(values):
            cells = (ctypes.c_float * (WIDTH * WIDTH)).from_address(value.data_ptr())
            restored(folder, i, np.ctypeslib.as_array(cells).reshape(WIDTH, WIDTH))
        options.add_external_initializers(names, values)
        return ort.InferenceSession(skeleton(folder), options, providers=cpu), None
    return _through_files(way, folder, options, names)


def _through_files(way: str, folder: Path, options, names: list[str]):
    """External data onnxruntime reads itself from a file that never holds the weights at rest."""
    import threading

    import onnxruntime as ort

    if way == "memfd":
        fds = [os.memfd_create(name) for name in names]
        for i, fd in enumerate(fds):
            os.write(fd, restored(folder, i).tobytes())
        where, locations = "/proc/self/fd", {name: str(fd) for name, fd in zip(names, fds)}
    else:
        where = tempfile.mkdtemp(prefix="probe-fifo-")
        locations = {name: name for name in names}
        for name in names:
            os.mkfifo(os.path.join(where, name), 0o600)

        def feed(i: int, name: str) -> None:
            try:
                fd = os.open(os.path.join(where, name), os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # never opened by onnxruntime
                return
            os.set_blocking(fd, True)
            try:
                os.write(fd, restored(folder, i).tobytes())
            except OSError:
                pass
            os.close(fd)

        def feeder() -> None:
            deadline = time.monotonic() + 5
            pending = dict(enumerate(names))
            while pending and time.monotonic() < deadline:
                for i, name in list(pending.items()):
                    feed(i, name)
                time.sleep(0.01)
        threading.Thread(target=feeder, daemon=True).start()
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", where)
    return ort.InferenceSession(skeleton(folder, locations), options, providers=["CPUExecutionProvider"]), None


def child(way: str, folder: Path, count: int) -> dict:
    """One way in this (fresh) process: the figures over the base, or onnxruntime's refusal."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    gc.collect()
    base = int(rss_mib("VmRSS"))
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")  # VmHWM from here
    started = time.perf_counter()
    try:
        session, kept = hand_over(way, folder, options, count)
    except Exception as error:  # onnxruntime's refusal is the result
        return {"way": way, "accepted": False, "error": str(error).strip().splitlines()[-1][-300:]}
    seconds = time.perf_counter() - started
    peak = int(rss_mib("VmHWM"))
    gc.collect()
    x = np.random.default_rng(1).standard_normal((32, WIDTH)).astype(np.float32)
    output = session.run(None, {"x": x})[0]
    figures = {"way": way, "accepted": True, "create_ms": round(seconds * 1e3, 1), "peak_mib": peak - base,
               "held_mib": int(rss_mib("VmRSS")) - base, "output_sha256": hashlib.sha256(output.tobytes()).hexdigest()}
    if way == "no_prepacking":
        figures["latency_vs_plain_batch32"] = _latency_ratio(folder, session, x)
    del kept
    return figures


def _latency_ratio(folder: Path, session, x: np.ndarray, runs: int = 20) -> float:
    """Median run time of ``session`` over a plain session's, interleaved, at ``x``'s batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    plain = ort.InferenceSession(str(folder / "plain.onnx"), options, providers=["CPUExecutionProvider"])
    times: dict[str, list[float]] = {"this": [], "plain": []}
    for _ in range(runs):
        for key, which in (("this", session), ("plain", plain)):
            started = time.perf_counter()
            which.run(None, {"x": x})
            times[key].append(time.perf_counter() - started)
    return round(float(np.median(times["this"]) / np.median(times["plain"])), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=128, help="weights of the generated MLP (16 MiB a layer)")
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated, of: " + ", ".join(WAYS))
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    count = max(1, args.mib // 16)
    if args.child:
        print(json.dumps(child(args.child, args.folder, count)))
        return
    ways = args.ways.split(",")
    for way in ways:
        if way not in WAYS:
            parser.error(f"unknown way {way!r}")
    import onnxruntime as ort

    rows = []
    with tempfile.TemporaryDirectory(prefix="probe-handover-") as folder:
        build(Path(folder), args.mib)
        for way in ways:
            print(f"{way}: {WAYS[way]}", file=sys.stderr, flush=True)
            run = subprocess.run([sys.executable, __file__, "--child", way, "--folder", folder, "--mib", str(args.mib)],
                                 capture_output=True, text=True, timeout=600)
            lines = run.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if run.returncode == 0 and lines else {
                "way": way, "accepted": False, "error": f"exit {run.returncode}: {run.stderr.strip()[-300:]}"}
            rows.append({"description": WAYS[way]} | row)
    plain = next((dict(row) for row in rows if row["way"] == "plain" and row["accepted"]), None)
    for row in rows:
        if plain and row["accepted"]:
            row["peak_vs_plain"] = round(row["peak_mib"] / plain["peak_mib"], 2)
            row["held_vs_plain"] = round(row["held_mib"] / plain["held_mib"], 2)
            row["same_outputs"] = row.pop("output_sha256") == plain["output_sha256"]
        print(json.dumps(row), flush=True)
    report = {"onnxruntime": ort.__version__, "weights_mib": count * 16, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
