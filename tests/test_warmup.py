"""warmup.py: the first load in a process pays onnxruntime's start-up in a thread of its own, once,
writing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from onnxlock import background, load_session
from onnxlock.runtime import session
from onnxlock.runtime.warmup import first_session, one_node_model

from conftest import PASSPHRASE

ROOT = Path(__file__).resolve().parent.parent


def test_the_one_node_model_runs():
    import onnxruntime as ort

    built = ort.InferenceSession(one_node_model(), providers=["CPUExecutionProvider"])
    assert built.run(None, {"x": np.array([2.5], np.float32)})[0].tolist() == [2.5]


def test_the_first_load_starts_onnxruntime_in_another_thread_once(locked_mlp, monkeypatch):
    monkeypatch.setattr(background, "_ahead", {})
    runs = []

    def recorded():
        runs.append(threading.get_ident())
        first_session()

    monkeypatch.setattr(session, "first_session", recorded)
    for _ in range(2):
        built = load_session(locked_mlp.model, locked_mlp.key, passphrase=PASSPHRASE, providers="cpu")
        assert built.get_providers() == ["CPUExecutionProvider"]
    assert len(runs) == 1 and runs[0] != threading.get_ident()


def test_the_start_up_session_writes_nothing(tmp_path):
    """In a fresh process, with the loader's telemetry switch as a load sets it, the start-up
    session changes no file under the home, temp and working folders (onnxruntime may make its
    telemetry store when it is imported: before the snapshot). The process then writes one file
    into each folder as it resolves them, and the watch must see all three."""
    home, temp, work = (tmp_path / name for name in ("home", "tmp", "work"))
    for folder in (home, temp, work):
        folder.mkdir()
    code = ("import os, sys\n"
            "def files():\n"
            "    return sorted((os.path.join(r, n), os.stat(os.path.join(r, n)).st_size, "
            "os.stat(os.path.join(r, n)).st_mtime_ns) for r, _, ns in os.walk(sys.argv[1]) for n in ns)\n"
            "from onnxlock.runtime.session import disable_telemetry\n"
            "from onnxlock.runtime.warmup import first_session\n"
            "disable_telemetry()\n"
            "before = files()\n"
            "first_session()\n"
            "after = files()\n"
            "import tempfile\n"
            "os.close(tempfile.mkstemp()[0])\n"
            "open(os.path.join(os.path.expanduser('~'), 'probe'), 'w').close()\n"
            "open('probe', 'w').close()\n"
            "print(before == after, len(set(files()) - set(after)))\n")
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(temp), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=work, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    unchanged, seen = result.stdout.split()
    assert unchanged == "True" and result.stderr == ""
    assert seen == "3"  # the watch covers the temp, home and working folders the process writes to
