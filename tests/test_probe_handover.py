"""tools/probe_handover.py: each way runs in its own process from the same base, and a way that
hands the weights over computes the plain model's outputs bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "probe_handover.py"


def test_the_loaders_way_computes_the_plain_models_outputs_and_a_refusal_is_reported(tmp_path):
    out = tmp_path / "probe.json"
    run = subprocess.run([sys.executable, str(TOOL), "--mib", "16", "--ways", "plain,copied,lent,fifo",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    rows = {row["way"]: row for row in report["rows"]}
    assert list(rows) == ["plain", "copied", "lent", "fifo"] and report["weights_mib"] == 16
    assert rows["plain"]["peak_vs_plain"] == 1.0 and rows["plain"]["same_outputs"]
    for way in ("copied", "lent"):
        assert rows[way]["accepted"] and rows[way]["same_outputs"], rows[way]
        assert rows[way]["peak_mib"] >= 16  # the restored weights were in this process's memory
    # onnxruntime 1.32 refuses a pipe (no regular file): the probe says why in one line; a later
    # onnxruntime that takes it must compute the same outputs
    fifo = rows["fifo"]
    assert fifo["same_outputs"] if fifo["accepted"] else fifo["error"] and "\n" not in fifo["error"]


def test_an_unknown_way_is_refused_before_anything_runs():
    run = subprocess.run([sys.executable, str(TOOL), "--ways", "plain,mmap"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "unknown way 'mmap'" in run.stderr
