#!/usr/bin/env python
"""Measure how strong onnxlock's lock is on the bundled digits models and rapidocr's PP-OCR models.

For each model: lock it, run the locked file without the key (how much does the answer change?)
and with the key (is the original restored exactly?). Writes a JSON report and a Markdown summary.

  python tools/report_strength.py                                  # all models, default settings
  python tools/report_strength.py --strategies init,samp,mixed     # + strategy comparison
  python tools/report_strength.py --sweep 0.02,0.05,0.1,0.2        # + ratio needed per model
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxlock import __version__  # noqa: E402
from onnxlock.errors import OnnxlockError  # noqa: E402
from onnxlock.evaluate.strength import CASES, LOCK_DEFAULTS, measure, ocr_available  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402
from onnxlock.passes.counterfeit import STRATEGIES  # noqa: E402

METRIC_LABELS = {"top1_agreement": "agreement", "cer": "CER", "map_correlation": "correlation"}


# --- arguments ----------------------------------------------------------------------


def comma_list(convert):
    def parse(text: str) -> list:
        try:
            return [convert(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Metrics of the locked model (no key) vs the original on held-out data, and their targets: "
               + "; ".join(f"{c.name}: {c.metric} {c.target.describe()}" for c in CASES.values()) + ".")
    parser.add_argument("--models", type=comma_list(str), default=None, metavar="A,B",
                        help=f"cases to measure (default: all of {', '.join(CASES)}; OCR cases are "
                             "skipped when rapidocr-onnxruntime is not installed)")
    parser.add_argument("--ratio", type=float, default=LOCK_DEFAULTS["ratio"],
                        help="parameter budget of the confusion channels (default: %(default)s)")
    parser.add_argument("--strategy", default=LOCK_DEFAULTS["strategy"],
                        help="counterfeit strategy of the main table (default: %(default)s)")
    parser.add_argument("--strategies", type=comma_list(str), default=[], metavar="S,T",
                        help="also compare these strategies at --ratio (e.g. init,samp,mixed)")
    parser.add_argument("--sweep", type=comma_list(float), default=[], metavar="R1,R2",
                        help="for models missing their target at --ratio, find the smallest of these "
                             "ratios that meets it")
    parser.add_argument("--seed", type=int, default=0, help="lock seed (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="also lock with the next SEEDS-1 seeds and report the spread (default: %(default)s)")
    parser.add_argument("--tries", type=int, default=LOCK_DEFAULTS["tries"],
                        help="draws per layer when locking (default: lock_model's, 32 for small models down to 4)")
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "strength.json",
                        help="JSON report (default: reports/strength.json)")
    parser.add_argument("--markdown", type=Path, default=ROOT / "reports" / "strength.md",
                        help="Markdown report (default: reports/strength.md)")
    args = parser.parse_args(argv)
    args.models = select_models(parser, args.models)
    bad = sorted({args.strategy, *args.strategies} - set(STRATEGIES))
    if bad:
        parser.error(f"unknown strategy {', '.join(bad)} (choose from {', '.join(STRATEGIES)})")
    if not all(0 < r <= 1 for r in [args.ratio, *args.sweep]):
        parser.error("ratios must be in (0, 1]")
    return args


def select_models(parser: argparse.ArgumentParser, requested: list[str] | None) -> list[str]:
    unknown = sorted(set(requested or ()) - set(CASES))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)} (choose from {', '.join(CASES)})")
    if requested:
        if any(name.startswith("ocr_") for name in requested) and not ocr_available():
            parser.error("OCR cases need rapidocr-onnxruntime (pip install rapidocr-onnxruntime)")
        return requested
    if ocr_available():
        return list(CASES)
    print("rapidocr-onnxruntime is not installed: skipping the OCR cases", file=sys.stderr)
    return [name for name in CASES if not name.startswith("ocr_")]


# --- measuring ----------------------------------------------------------------------


class Runner:
    """Measures (model, ratio, strategy) once each, printing one progress line per measurement."""

    def __init__(self, seed: int, tries: int):
        self.seed, self.tries = seed, tries
        self.results: dict[tuple, dict] = {}
        self.start = time.perf_counter()

    def __call__(self, model: str, ratio: float, strategy: str, seed: int | None = None) -> dict:
        seed = self.seed if seed is None else seed
        key = (model, ratio, strategy, seed)
        if key not in self.results:
            began = time.perf_counter()
            try:
                result = measure(model, ratio=ratio, strategy=strategy, seed=seed, tries=self.tries)
            except OnnxlockError as exc:
                result = {"model": model, "strategy": strategy, "ratio": ratio, "error": str(exc)}
            self.results[key] = result
            print(f"[{len(self.results):>2}] {model} {strategy} ratio={ratio:g} seed={seed}: {progress_text(result)} "
                  f"({time.perf_counter() - began:.1f} s, {time.perf_counter() - self.start:.0f} s total)",
                  file=sys.stderr, flush=True)
        return self.results[key]


def progress_text(result: dict) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    met = "met" if result["target_met"] else "missed"
    restore = "exact" if result["restore_exact"] else "NOT EXACT"
    return f"{result['metric']}={result['value']:.3f} (target {met}), restore {restore}"


def ratio_needed(run: Runner, model: str, ratios: list[float], strategy: str) -> float | None:
    """The smallest of ``ratios`` at which ``model`` meets its target (None if none does)."""
    for ratio in sorted(ratios):
        result = run(model, ratio, strategy)
        if result.get("target_met"):
            return ratio
    return None


# --- formatting ---------------------------------------------------------------------


def metric_cell(result: dict, with_target: bool = True) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    text = f"{METRIC_LABELS.get(result['metric'], result['metric'])} {result['value']:.3f}"
    return f"{text} (target {result['target']})" if with_target else text


def restore_cell(result: dict) -> str:
    if "error" in result:
        return "—"
    problems = []
    if result["restore_max_abs_diff"] != 0.0:
        problems.append(f"outputs differ by {result['restore_max_abs_diff']:.3g}")
    for source, check in result["weights"].items():
        if not check["equal"]:
            problems.append(f"{check['differing']}/{check['compared']} {source}: {'; '.join(check['reasons'])}")
    return "yes" if not problems else "**no**: " + ", ".join(problems)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def main_table(results: list[dict], needed: dict[str, float | None] | None, sweep: list[float]) -> list[str]:
    header = ["model", "groups widened", "added params", "metric locked vs original", "target met",
              "restore exact"]
    rows = []
    for r in results:
        if "error" in r:
            row = [r["model"], "—", "—", metric_cell(r), "—", "—"]
        else:
            row = [r["model"], f"{r['groups_widened']}/{r['groups_total']}",
                   f"{r['params_added']:,} ({r['params_added_pct']:.2f}%)", metric_cell(r),
                   "yes" if r["target_met"] else "**no**", restore_cell(r)]
        if needed is not None:
            row.append(ratio_needed_cell(r, needed.get(r["model"]), sweep))
        rows.append(row)
    return table(header + (["ratio needed"] if needed is not None else []), rows)


def ratio_needed_cell(result: dict, needed: float | None, sweep: list[float]) -> str:
    if result.get("target_met"):
        return "—"
    return f"{needed:g}" if needed is not None else f"> {max(sweep):g}"


def details_table(results: list[dict]) -> list[str]:
    header = ["model", "params", "locked outputs finite", "range ratio", "lock s", "task score original → locked"]
    rows = [[r["model"], f"{r['params_original']:,}", "yes" if r["locked_finite"] else "**no**",
             f"{r['range_ratio']:.2f}", f"{r['lock_seconds']:.1f}", task_score(r["metrics"])]
            for r in results if "error" not in r]
    return table(header, rows)


def task_score(metrics: dict) -> str:
    if "accuracy_original" in metrics:
        return f"accuracy {metrics['accuracy_original']:.1%} → {metrics['accuracy_locked']:.1%}"
    if "cer_truth_original" in metrics:
        return f"CER vs truth {metrics['cer_truth_original']:.3f} → {metrics['cer_truth_locked']:.3f}"
    return "—"


def strategy_table(models: list[str], strategies: list[str], run: Runner, ratio: float) -> list[str]:
    rows = []
    for model in models:
        cells = []
        for strategy in strategies:
            r = run(model, ratio, strategy)
            mark = "" if "error" in r else (" ✓" if r["target_met"] else "")
            cells.append(metric_cell(r, with_target=False) + mark)
        target = next((run(model, ratio, s).get("target") for s in strategies), None) or "—"
        rows.append([model, target, *cells])
    return table(["model", "target", *strategies], rows)


def seed_table(models: list[str], seeds: int, run: Runner, ratio: float, strategy: str) -> list[str]:
    """Spread of the metric over lock seeds: one seed can be lucky or unlucky."""
    rows = []
    for model in models:
        results = [run(model, ratio, strategy, run.seed + i) for i in range(seeds)]
        values = sorted(r["value"] for r in results if "error" not in r)
        if not values:
            continue
        met = sum(bool(r.get("target_met")) for r in results)
        rows.append([model, f"{values[0]:.3f}", f"{float(np.median(values)):.3f}", f"{values[-1]:.3f}",
                     f"{met}/{len(results)}"])
    return table(["model", "min", "median", "max", "target met"], rows)


def markdown(args: argparse.Namespace, main: list[dict], run: Runner, needed, seconds: float) -> str:
    lines = ["# Lock strength", "",
             f"onnxlock {__version__}, strategy `{args.strategy}`, ratio {args.ratio:g}, seed {args.seed}, "
             f"tries {args.tries or 'auto (32 for the digits models, 4 for OCR det/rec, 14 for cls)'}; onnxruntime {onnxruntime.__version__} (CPU). "
             f"Generated by `tools/report_strength.py` in {seconds:.0f} s.", "",
             "Locked model run without the key vs the original, on held-out data (digits: "
             "`digits_test.npz`; OCR: 16 rendered lines / one page, seed 0; calibration: "
             "`digits_calib.npz` / 8 lines, one page, seed 100). Restore exact: every output of "
             "`load_session` equals the original's bit for bit, and every original initializer and "
             "Constant-node tensor is byte-equal (same dtype and shape) in `restore_model`'s result.", ""]
    lines += main_table(main, needed, args.sweep)
    if args.sweep:
        lines += ["", f"Ratio needed: the smallest of {', '.join(f'{r:g}' for r in sorted(args.sweep))} at "
                      f"which a model missing its target at {args.ratio:g} meets it (strategy `{args.strategy}`)."]
    lines += ["", "## Details", ""] + details_table(main)
    if args.seeds > 1:
        lines += ["", f"## Spread over {args.seeds} lock seeds (ratio {args.ratio:g}, strategy `{args.strategy}`)",
                  "", f"Seeds {args.seed} to {args.seed + args.seeds - 1}; the metric of the main table.", ""]
        lines += seed_table(args.models, args.seeds, run, args.ratio, args.strategy)
    if args.strategies:
        lines += ["", f"## Strategies at ratio {args.ratio:g}", "", "✓ = target met.", ""]
        lines += strategy_table(args.models, args.strategies, run, args.ratio)
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode(), mode=0o644)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Runner(args.seed, args.tries)
    main_results = [run(model, args.ratio, args.strategy) for model in args.models]
    for model in args.models:  # strategy table first, so its measurements come in model order
        for strategy in args.strategies:
            run(model, args.ratio, strategy)
    for model in args.models:
        for offset in range(1, args.seeds):
            run(model, args.ratio, args.strategy, args.seed + offset)
    needed = None
    if args.sweep:
        needed = {r["model"]: ratio_needed(run, r["model"], args.sweep, args.strategy)
                  for r in main_results if not r.get("target_met")}
    seconds = time.perf_counter() - run.start
    report = {
        "settings": {"models": args.models, "ratio": args.ratio, "strategy": args.strategy,
                     "strategies": args.strategies, "sweep": args.sweep, "seed": args.seed, "seeds": args.seeds,
                     "tries": args.tries},
        "environment": {"onnxlock": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                        "python": platform.python_version(), "machine": platform.machine()},
        "seconds": round(seconds, 1),
        "main": main_results,
        "ratio_needed": needed,
        "measurements": list(run.results.values()),
    }
    write(args.json, json.dumps(report, indent=2) + "\n")
    write(args.markdown, markdown(args, main_results, run, needed, seconds))
    print(f"wrote {args.json} and {args.markdown} ({seconds:.0f} s)", file=sys.stderr)
    failed = [r["model"] for r in main_results if "error" not in r and not r["restore_exact"]]
    if failed:
        print(f"restore NOT exact for: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
