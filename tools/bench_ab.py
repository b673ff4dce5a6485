"""Two versions of the loader side by side: session creation of the same locked models in fresh
processes, each version's and a plain session's, interleaved in a shuffled order each round.

Whole-benchmark figures move by 0.3 between runs on shared cores; a change worth a few
milliseconds shows only when its before and after run in the same minutes. Each version is a
checkout (e.g. ``git worktree add /tmp/before <rev>``, bytecode compiled), timed by its own
``tools/bench_load.py --child locked`` (scrypt's own work taken out as there), on bench_load's
cache of locked models. Writes medians, ratios to plain, and the median of the per-round
differences; never asserts a time.

    python tools/bench_ab.py /tmp/before . --models digits_mlp,digits_cnn --methods mask --rounds 15
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_load import CACHE, DIGITS  # noqa: E402

from onnxlock.fileio import atomic_write_bytes  # noqa: E402


def creation_ms(checkout: Path, mode: str, folder: Path) -> float:
    """Creation (KDF excluded) in one fresh process running ``checkout``'s benchmark child."""
    out = subprocess.run([sys.executable, str(checkout / "tools" / "bench_load.py"), "--child", mode, str(folder),
                          "--steady", "1"], capture_output=True, text=True, check=True, cwd=checkout)
    return json.loads(out.stdout.splitlines()[-1])["create_excl_kdf_ms"]


def compare(before: Path, after: Path, folder: Path, rounds: int, rng: random.Random) -> dict:
    """``rounds`` rounds of (before, after, plain) in a shuffled order each."""
    runs = {"before": [], "after": [], "plain": []}
    for _ in range(rounds):
        order = [("before", before, "locked"), ("after", after, "locked"), ("plain", after, "plain")]
        rng.shuffle(order)
        for label, checkout, mode in order:
            runs[label].append(creation_ms(checkout, mode, folder))
    medians = {label: statistics.median(times) for label, times in runs.items()}
    return {"runs_ms": runs, "median_ms": medians,
            "ratio_vs_plain": {label: medians[label] / medians["plain"] for label in ("before", "after")},
            "after_minus_before_ms": statistics.median(a - b for a, b in zip(runs["after"], runs["before"]))}


def revision(checkout: Path) -> str | None:
    """The checkout's git commit, with "+changes" if its tracked files differ from it (None: not git)."""
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return None
    dirty = subprocess.run(["git", "-C", str(checkout), "diff", "--quiet", "HEAD"]).returncode
    return head.stdout.strip() + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the checkout of the earlier version")
    parser.add_argument("after", type=Path, help="the checkout of the later version")
    parser.add_argument("--models", default=",".join(DIGITS), help="models in bench_load's cache, comma-separated")
    parser.add_argument("--methods", default="mask", help="lock methods, ';'-separated")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--seed", type=int, default=0, help="for the order within each round")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_ab.json"))
    args = parser.parse_args()
    rng, results = random.Random(args.seed), []
    for model in [m for m in args.models.split(",") if m]:
        for method in [m for m in args.methods.split(";") if m]:
            folder = args.cache / model / method.replace(",", "+")
            if not (folder / "locked.onnx").exists():
                sys.exit(f"bench_ab: {folder} has no locked model: run tools/bench_load.py first")
            row = {"model": model, "method": method, **compare(args.before.resolve(), args.after.resolve(),
                                                               folder, args.rounds, rng)}
            results.append(row)
            m, r = row["median_ms"], row["ratio_vs_plain"]
            print(f"{model} [{method}]: plain {m['plain']:.1f} ms; before {m['before']:.1f} ms ({r['before']:.2f}x), "
                  f"after {m['after']:.1f} ms ({r['after']:.2f}x); after - before, median of rounds "
                  f"{row['after_minus_before_ms']:+.2f} ms", flush=True)
    report = {"before": str(args.before), "before_revision": revision(args.before), "after": str(args.after),
              "after_revision": revision(args.after), "rounds": args.rounds, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(report, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
