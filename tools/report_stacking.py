"""Stacking report: each model locked three ways (``advparams``, ``confusion``, ``confusion,advparams``)
and every attack of the suite run on each lock, to answer: does the stacked lock restore bit-exact
and score at least as well as the better of the two alone on every attack? Writes
reports/stacking.{json,md}.

Locks: seed 0, the calibration split with its labels (models/digits_calib.npz), a cheap KDF. The
thief: the first 64 calibration inputs, unlabelled, for the blind attacks (weight detection and
revert, channel detection, peel, peel then revert, prune); 1% and 10% of scikit-learn's digits
training split, with labels, for fine-tuning (300 steps, against the same architecture from
scratch). Judged on the
held-out split (models/digits_test.npz): top-1 agreement with the original. The PP-OCR direction
classifier (``ocr_cls``: rendered lines upright = 0, rotated = 1) is locked on 16 rendered lines
(as tools/attack_search.py), judged on 64 others and fine-tuned on fractions of 128 more; its
channel detection leaves out per-channel ablation (12 minutes a lock here).

For the owner lower is better everywhere (agreement, AUC, accuracy after fine-tuning). The stacked
lock counts as at least as good as the better lock alone when its value is no more than the
better one's plus a noise margin: the 95% half-width of a binomial proportion on the held-out set
for agreements and accuracies, the Hanley-McNeil 95% half-width for AUCs, never under MARGIN_FLOOR.

    OMP_NUM_THREADS=1 nice python tools/report_stacking.py [--models digits_cnn,ocr_cls]
    # one lock and the weight attacks only, in a minute:
    python tools/report_stacking.py --methods advparams --attacks weights,revert --out /tmp/adv
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch on a shared CPU: one thread is fastest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from dataclasses import asdict, dataclass, replace  # noqa: E402

import numpy as np  # noqa: E402

from attack_search import DIGITS, Data, cls_data, model_and_data  # noqa: E402
from onnxlock import load_session, lock_model  # noqa: E402
from onnxlock.evaluate.attacks import peel, suite, truth_from_secret  # noqa: E402
from onnxlock.evaluate.attacks.revert import TOPS  # noqa: E402
from onnxlock.evaluate.attacks.scoring import auc_standard_error  # noqa: E402
from onnxlock.evaluate.damage import run  # noqa: E402
from onnxlock.fileio import atomic_write_bytes, sha256_bytes  # noqa: E402
from onnxlock.graph.io import load_model, parse_model  # noqa: E402
from onnxlock.key import open_key  # noqa: E402

PASSPHRASE = "stacking report"
METHODS = ("advparams", "confusion", "confusion,advparams")
ATTACKS = ("detect", "weights", "revert", "peel", "peel_revert", "prune", "finetune")
BLIND = 64
FRACTIONS = (0.01, 0.1)
STEPS = 300
PRUNERS = ("weight_norm", "activation")
MARGIN_FLOOR = 0.02
OCR_TEST_LINES, OCR_TRAIN_LINES = 64, 128  # rendered lines, each upright and rotated
Z95 = 1.96


def lock(path: Path, method: str, calib: dict, labels: np.ndarray | None, seed: int = 0):
    """The locked model (parsed), its truth, the lock's report and seconds, and whether the real
    loader restores outputs bit-identical to the original's."""
    start = time.perf_counter()
    locked = lock_model(path, passphrase=PASSPHRASE, seed=seed, kdf_params={"n": 2**12}, calibration=calib,
                        labels=labels, method=method)
    seconds = time.perf_counter() - start
    model = parse_model(locked.model)
    truth = truth_from_secret(model, open_key(locked.key, passphrase=PASSPHRASE,
                                              model_sha256=sha256_bytes(locked.model)))
    session = load_session(locked.model, locked.key, passphrase=PASSPHRASE, verify="full")
    exact = all(np.array_equal(a, b) for a, b in zip(session.run(None, calib), run(load_model(path), calib)))
    return model, truth, locked.report, round(seconds, 1), exact


def peel_then_revert(model, blind: suite.Data, truth, tops: tuple[int, ...]) -> dict:
    """The thief facing a stack: strip the channels the blind peel finds, then revert weights in
    what is left (the changed weights' positions move as channels go: not scored)."""
    peeled = peel(model, blind.feeds).peeling.model
    return suite.run_revert(peeled, blind, replace(truth, changed_weights=frozenset()), tops=tops)


def case_data(name: str) -> tuple[Path, Data, Data, Data]:
    """The model's path, the calibration split (the lock's and the blind thief's), the held-out
    split and the labelled data fine-tuning draws its fractions from."""
    if name == "ocr_cls":
        from onnxlock.evaluate.ocr import ocr_model_paths

        return (ocr_model_paths()["cls"], cls_data(100), cls_data(0, lines=OCR_TEST_LINES),
                cls_data(200, lines=OCR_TRAIN_LINES))
    from train_zoo import load_split

    path, calib, test = model_and_data(name)
    x_train, _, y_train, _ = load_split()
    return path, calib, test, ({"pixels": x_train}, y_train)


@dataclass(frozen=True)
class Budget:
    """How much of each costly attack to run (the defaults for the digits models)."""

    tops: tuple[int, ...] = TOPS
    fractions: tuple[float, ...] = FRACTIONS
    steps: int = STEPS
    peel_revert: bool = True
    attacks: tuple[str, ...] = ATTACKS


def attack_lock(name: str, method: str, budget: Budget, seed: int = 0) -> dict:
    path, (calib, calib_labels), (test, test_labels), (train_x, train_y) = case_data(name)
    model, truth, report, seconds, exact = lock(path, method, calib, calib_labels, seed)
    blind = suite.Data({k: v[:BLIND] for k, v in calib.items()}, None, test, test_labels)
    row = {"model": name, "method": method, "seed": seed, "budget": asdict(budget), "held_out": len(test_labels),
           "lock_seconds": seconds,
           "restore_exact": exact, "counterfeits": len(truth.counterfeits),
           "weights_changed": len(truth.changed_weights),
           "locked": suite.outcome(model, blind, truth), "original": suite.outcome(truth.original, blind, truth)}
    layers = report.get("layers", [report])
    for field in ("stacked_top_up", "peel_guard"):
        row[field] = next((layer.get(field) for layer in layers if field in layer), None)
    steps = [("revert", lambda: suite.run_revert(model, blind, truth, tops=budget.tops)),
             ("peel", lambda: suite.run_peel(model, blind, truth)),
             ("prune", lambda: suite.run_prune(model, blind, truth, pruners=PRUNERS))]
    if budget.peel_revert:
        steps.insert(2, ("peel_revert", lambda: peel_then_revert(model, blind, truth, budget.tops)))
    if truth.changed_weights:
        steps.insert(0, ("weights", lambda: suite.run_weights_detect(model, blind, truth)))
    if truth.counterfeits:
        steps.insert(0, ("detect", lambda: suite.run_detect(model, blind, truth, ablation=name in DIGITS)))
    labelled = suite.Data(train_x, train_y, test, test_labels)
    steps.append(("finetune", lambda: suite.run_finetune(model, labelled, truth, fractions=budget.fractions,
                                                         steps=budget.steps)))
    for attack, step in steps:
        if attack not in budget.attacks:
            continue
        start = time.perf_counter()
        row[attack] = step()
        row[attack]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name} {method}: {attack} {row[attack]['seconds']} s", file=sys.stderr, flush=True)
    return row


# --- the owner's view: one number per attack, lower is better -----------------------------


def owner_view(row: dict) -> dict[str, tuple[float, str, int]]:
    """Attack -> (value, kind, sample size for the margin): agreement or accuracy on the held-out
    set ('rate', its size), or the best AUC of a detector ('auc', its positives)."""
    n = row["held_out"]
    view = {"locked agreement": (row["locked"]["agreement"], "rate", n)}
    if "weights" in row:
        w = row["weights"]
        view["weight detection: best AUC"] = (w["best_single_auc"], "auc", w["changed"])
    if "detect" in row and "best_single_auc" in row["detect"]:
        d = row["detect"]
        view["channel detection: best AUC"] = (d["best_single_auc"], "auc", d["counterfeits"])
    if "revert" in row:
        r = row["revert"]
        view["revert: best"] = (r["best"]["agreement"], "rate", n)
        view["revert: blind choice"] = (r["blind_choice"]["agreement"], "rate", n)
    if "peel" in row:
        view["peel"] = (row["peel"]["after"]["agreement"], "rate", n)
    if "peel_revert" in row:
        view["peel, then revert: best"] = (row["peel_revert"]["best"]["agreement"], "rate", n)
        view["peel, then revert: blind choice"] = (row["peel_revert"]["blind_choice"]["agreement"], "rate", n)
    if "prune" in row:
        view["prune: best"] = (max(p["agreement"] for p in row["prune"]["results"]), "rate", n)
    for f in row.get("finetune", {}).get("results", []):
        view[f"fine-tune {f['fraction']:.0%}: accuracy"] = (f["accuracy_finetuned"], "rate", n)
    return view


def margin(value: float, kind: str, n: int) -> float:
    if kind == "rate":
        half = Z95 * math.sqrt(max(value * (1 - value), 0.0) / max(n, 1))
    else:  # Hanley & McNeil (1982), with as many negatives as there are weights or channels: ~infinite
        half = Z95 * auc_standard_error(value, n)
    return max(half, MARGIN_FLOOR)


def verdicts(rows: list[dict]) -> list[dict]:
    """Per model and attack: each lock's value, the better alone, the margin, and whether the
    stacked lock is at least as good."""
    found = []
    for name in dict.fromkeys(r["model"] for r in rows):
        views = {r["method"]: owner_view(r) for r in rows if r["model"] == name}
        if set(views) != set(METHODS):
            continue
        stacked = views["confusion,advparams"]
        for attack, (value, kind, n) in stacked.items():
            alone = {m: views[m][attack] for m in METHODS[:2] if attack in views[m]}
            if not alone:
                continue
            better = min(alone, key=lambda m: alone[m][0])
            best, best_kind, best_n = alone[better]
            room = margin(best, best_kind, best_n)
            found.append({"model": name, "attack": attack,
                          **{m: views[m][attack][0] if attack in views[m] else None for m in METHODS},
                          "better_alone": better, "margin": round(room, 3),
                          "stacked_at_least_as_good": value <= best + room})
    return found


def markdown(rows: list[dict], table: list[dict]) -> str:
    seeds = ", ".join(str(s) for s in sorted({r.get("seed", 0) for r in rows}))
    lines = ["# Stacking: `confusion,advparams` against each lock alone", "",
             f"Made by `tools/report_stacking.py` (seed {seeds}; see its docstring for the data). Every value is what "
             "the thief gets, so lower is better for the owner: top-1 agreement with the original on the "
             "held-out split, best ROC AUC of a detector, held-out accuracy after fine-tuning. *ok* when the "
             "stacked lock is at most the better lock alone plus the margin (binomial or Hanley-McNeil 95% "
             f"half-width, at least {MARGIN_FLOOR}).", "",
             "| model | attack | advparams | confusion | stacked | better alone | margin | stacked ok |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for v in table:
        cells = ["-" if v[m] is None else f"{v[m]:.3f}" for m in METHODS]
        lines.append(f"| {v['model']} | {v['attack']} | {' | '.join(cells)} | {v['better_alone']} | {v['margin']} "
                     f"| {'ok' if v['stacked_at_least_as_good'] else '**no**'} |")
    lines += ["", "Per lock (top-up: weights the stacked pass added where the two locks' damage cancelled; peel "
              "guard: the calibration agreement each peel of the lock left, * the state kept, +N weights added "
              "after it):", "",
              "| model | method | exact restore | locked agr. | weights changed | top-up | weight AUCs | revert best "
              "(blind) | fine-tuned acc. (scratch) | recovered share | lock s | attacks s |",
              "|---|---|---|---:|---:|---|---|---|---|---|---:|---:|"]
    for r in rows:
        aucs = ", ".join(f"{k} {v}" for k, v in r["weights"]["auc"].items()) if "weights" in r else "-"
        rv = r.get("revert")
        best = "-" if rv is None else (f"{rv['best']['agreement']} ({rv['best']['repair']}, top {rv['best']['top']} "
                                       f"by {rv['best']['score']}); blind {rv['blind_choice']['agreement']}")
        ft = r.get("finetune", {}).get("results", [])
        tuned = ", ".join(f"{f['fraction']:.0%}: {f['accuracy_finetuned']} ({f['accuracy_scratch']})" for f in ft)
        share = ", ".join(f"{f['fraction']:.0%}: {f.get('recovered_share')}" for f in ft)
        seconds = round(sum(v["seconds"] for v in r.values() if isinstance(v, dict) and "seconds" in v), 1)
        top_up = "-" if r["stacked_top_up"] is None else f"+{r['stacked_top_up']['weights_added']}"
        guard = r.get("peel_guard") or []
        if guard:  # each peel of the lock: agreement left (calibration), weights added after it
            top_up += "; peel guard " + ", ".join(f"{g['agreement_after_peel']}" + ("*" if g.get("kept") else "") + (
                f" +{g['weights_added']}" if "weights_added" in g else "") for g in guard)
        lines.append(f"| {r['model']} | {r['method']} | {r['restore_exact']} | {r['locked']['agreement']} | "
                     f"{r['weights_changed']} | {top_up} | {aucs} | {best} | "
                     f"{tuned} | {share} | {r['lock_seconds']} | {seconds} |")
    lighter = {r["model"]: r["budget"] for r in rows if r["budget"] != asdict(Budget())}
    for name, budget in lighter.items():
        lines += ["", f"{name} ran on a lighter budget (CPU time): {budget}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DIGITS), help="comma-separated (digits models, ocr_cls)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "stacking", help="output stem (.json, .md)")
    parser.add_argument("--update", action="store_true", help="keep the rows of other models already in the output")
    parser.add_argument("--tops", default=",".join(map(str, TOPS)), help="revert: K (default: %(default)s)")
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)),
                        help="fine-tune: shares of the training data (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=STEPS, help="fine-tune: steps (default: %(default)s)")
    parser.add_argument("--no-peel-revert", action="store_true", help="skip peel-then-revert (the costliest attack)")
    parser.add_argument("--methods", default=";".join(METHODS), help="locks to attack, ';'-separated (default: %(default)s)")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="attacks to run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the locks' seed (default: %(default)s)")
    args = parser.parse_args()
    budget = Budget(tuple(int(k) for k in args.tops.split(",")), tuple(float(f) for f in args.fractions.split(",")),
                    args.steps, not args.no_peel_revert, tuple(args.attacks.split(",")))
    unknown = set(budget.attacks) - set(ATTACKS) or set(args.methods.split(";")) - set(METHODS)
    if unknown:
        parser.error(f"unknown attack or method: {', '.join(sorted(unknown))}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",")
    rows = []
    if args.update and args.out.with_suffix(".json").exists():
        rows = [{"budget": asdict(Budget())} | r  # rows from before budgets were recorded ran the default
                for r in json.loads(args.out.with_suffix(".json").read_text())["rows"] if r["model"] not in names]
    start = time.perf_counter()
    for name in names:
        for method in args.methods.split(";"):
            rows.append(attack_lock(name, method, budget, args.seed))
            table = verdicts(rows)
            atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps(
                {"rows": rows, "verdicts": table, "run_seconds": round(time.perf_counter() - start, 1)},
                indent=2) + "\n").encode(), mode=0o644)
            atomic_write_bytes(args.out.with_suffix(".md"), markdown(rows, table).encode(), mode=0o644)


if __name__ == "__main__":
    main()
