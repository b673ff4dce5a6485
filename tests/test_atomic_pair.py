"""The locked model and its key are written as one: interrupted anywhere, a pair is complete or absent.

Real `onnxlock lock` child processes are SIGKILLed (at sampled I/O calls of the write, half-way
through a write(2), and at random times), interrupted with Ctrl-C, and run out of disk; after the
next command the final paths hold the old pair, the whole new pair, or (fresh) nothing, and no
temporary or journal is left. ONNXLOCK_KILL_POINTS=all tries every I/O call instead of a sample.
"""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnxlock import filepair, lock_model, restore_model, write_locked
from onnxlock.errors import OnnxlockError
from onnxlock.fileio import sha256_bytes
from onnxlock.key import read_header
from conftest import CHEAP_KDF, MODELS, PASSPHRASE

MLP = MODELS / "digits_mlp.onnx"
ROOT = Path(__file__).resolve().parent.parent
# A real `onnxlock lock` whose filepair I/O calls are counted; the KILL_AT-th one SIGKILLs the process
# (a write(2) is cut in half first). Only the key's KDF cost is lowered, as in every test.
HARNESS = r'''
import json, os, signal, sys
from onnxlock.key import recipients
recipients.SCRYPT_DEFAULTS["n"] = 2**12
from onnxlock import filepair
from onnxlock.cli import main

KILL_AT, calls = int(os.environ.get("KILL_AT", "0")), []


def counted(name, real):
    def call(*args, **kwargs):
        calls.append(name)
        if len(calls) == KILL_AT:
            if name == "write":
                os.write(args[0], bytes(args[1][: len(args[1]) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call


class CountingOs:
    def __getattr__(self, name):
        real = getattr(os, name)
        return counted(name, real) if callable(real) and name != "fspath" else real


filepair.os = CountingOs()
filepair.fsync_directory = counted("fsync_directory", filepair.fsync_directory)
code = main(sys.argv[1:])
print("CALLS " + json.dumps(calls), file=sys.stderr)
sys.exit(code)
'''


@pytest.fixture(scope="module")
def old_pair(tmp_path_factory) -> tuple[bytes, bytes]:
    """A complete earlier pair (model bytes, key bytes), to be overwritten with --force."""
    locked = lock_model(MLP, passphrase=PASSPHRASE, seed=5, kdf_params=CHEAP_KDF, tries=1)
    return locked.model, locked.key


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("harness") / "harness.py"
    path.write_text(HARNESS)
    return path


def lock_command(harness: Path, model: Path, key: Path) -> list[str]:
    """The child's command line; seed 0 is one whose single draw changes the outputs (so the lock succeeds)."""
    return [sys.executable, str(harness), "lock", str(MLP), "-o", str(model), "--key", str(key),
            "--tries", "1", "--seed", "0", "--force"]


def child_env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "ONNXLOCK_PASSPHRASE": PASSPHRASE, **extra}


def setup_pair(tmp_path: Path, old: tuple[bytes, bytes] | None) -> tuple[Path, Path]:
    """Model and key in two folders (so the pair spans two directories), with the old pair if given."""
    model, key = tmp_path / "models" / "m.onnx", tmp_path / "keys" / "m.key"
    model.parent.mkdir(parents=True)
    key.parent.mkdir(parents=True)
    if old:
        model.write_bytes(old[0])
        key.write_bytes(old[1])
    return model, key


def assert_complete_or_absent(model: Path, key: Path, old: tuple[bytes, bytes] | None) -> str:
    """After the next command: the old pair, a new pair whose key opens its model, or (fresh) nothing;
    never one file alone, never a temporary or journal left. Returns which."""
    filepair.recover(key)  # what every onnxlock command does first for a pair
    leftovers = sorted(p.name for folder in (model.parent, key.parent) for p in folder.iterdir()
                       if p not in (model, key))
    assert leftovers == []
    if not model.exists() and not key.exists():
        assert old is None, "the old pair was lost"
        return "absent"
    assert model.exists() and key.exists(), "half a pair"
    pair = (model.read_bytes(), key.read_bytes())
    if old and pair == old:
        return "old"
    assert read_header(pair[1])["model_sha256"] == sha256_bytes(pair[0])
    restore_model(pair[0], pair[1], PASSPHRASE)  # the key really opens this model
    return "new"


def test_an_uninterrupted_lock_leaves_only_the_pair(tmp_path, harness):
    model, key = setup_pair(tmp_path, None)
    done = subprocess.run(lock_command(harness, model, key), env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert assert_complete_or_absent(model, key, None) == "new"
    assert (model.stat().st_mode & 0o777, key.stat().st_mode & 0o777) == (0o644, 0o600)


def test_sigkill_at_io_calls_of_the_write(tmp_path, harness, old_pair):
    """SIGKILL before sampled I/O calls of the pair write (half-way through a write(2) for writes),
    alternately over an old pair (--force) and into empty folders."""
    probe = subprocess.run(lock_command(harness, *setup_pair(tmp_path / "probe", None)), env=child_env(),
                           capture_output=True, text=True)
    calls = json.loads(probe.stderr.rsplit("CALLS ", 1)[1])
    assert {"write", "fsync", "replace"} <= set(calls)
    points = list(range(1, len(calls) + 1))
    if os.environ.get("ONNXLOCK_KILL_POINTS") != "all":
        points = sorted(random.Random(7).sample(points, 12))
    seen = set()
    for i, point in enumerate(points):
        old = old_pair if i % 2 else None
        model, key = setup_pair(tmp_path / f"kill{point}", old)
        done = subprocess.run(lock_command(harness, model, key), env=child_env(KILL_AT=str(point)),
                              capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, (point, calls[point - 1], done.stderr)
        seen.add(assert_complete_or_absent(model, key, old))
    assert len(seen) >= 2  # the sample reaches both sides of the commit point


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_signal_at_random_times(tmp_path, harness, old_pair, sig):
    """Signals at random moments of a whole `onnxlock lock` run (start-up, locking, writing)."""
    model, key = setup_pair(tmp_path / "timing", None)
    start = time.monotonic()
    subprocess.run(lock_command(harness, model, key), env=child_env(), capture_output=True, check=True)
    duration = time.monotonic() - start
    rng = random.Random(11)
    for i in range(3):
        old = old_pair if i % 2 == 0 else None
        model, key = setup_pair(tmp_path / f"{sig.name}{i}", old)
        child = subprocess.Popen(lock_command(harness, model, key), env=child_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 1.1) * duration)
        child.send_signal(sig)
        _, err = child.communicate()
        assert "internal error" not in err.decode()
        if sig == signal.SIGKILL:  # (Ctrl-C can land in Python's own start-up or shut-down: any status)
            assert child.returncode in (0, -signal.SIGKILL)
        assert_complete_or_absent(model, key, old)


class DiskFillsAt:
    """``os`` for filepair, whose n-th write(2) writes a third of its bytes and then fails with ENOSPC."""

    def __init__(self, n: int):
        self.n, self.writes = n, 0

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        self.writes += 1
        if self.writes == self.n:
            os.write(fd, bytes(data[: len(data) // 3]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)


@pytest.mark.parametrize("failing_write", [1, 2, 3, 4])
def test_no_space_at_each_write_leaves_no_partial_file(tmp_path, monkeypatch, old_pair, failing_write):
    """ENOSPC at the journal, the model, the key or the commit write: the old pair (or nothing) stays."""
    locked = lock_model(MLP, passphrase=PASSPHRASE, seed=3, kdf_params=CHEAP_KDF, tries=1)
    for old in (None, old_pair):
        model, key = setup_pair(tmp_path / f"{old is None}", old)
        monkeypatch.setattr(filepair, "os", DiskFillsAt(failing_write))
        with pytest.raises(OSError, match="No space left"):
            write_locked(locked, model, key, force=True)
        monkeypatch.undo()
        leftovers = [p.name for folder in (model.parent, key.parent) for p in folder.iterdir() if p not in (model, key)]
        assert leftovers == []  # cleaned up at once, not only by the next command
        assert assert_complete_or_absent(model, key, old) == ("absent" if old is None else "old")


def test_file_size_limit_in_a_real_child(tmp_path, harness, old_pair):
    """The kernel refuses the write (RLIMIT_FSIZE, EFBIG): one error line, exit 1, the old pair intact."""
    model, key = setup_pair(tmp_path, old_pair)

    def limit():  # runs in the child: files may not grow past 20 kB; SIGXFSZ ignored so write(2) fails
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    done = subprocess.run(lock_command(harness, model, key), env=child_env(), capture_output=True, text=True,
                          preexec_fn=limit)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("onnxlock: error:")]
    assert len(errors) == 1 and "cannot write" in errors[0] and "File too large" in errors[0]
    assert "Traceback" not in done.stderr
    assert assert_complete_or_absent(model, key, old_pair) == "old"


def test_full_disk(tmp_path, harness, old_pair):
    """A real full filesystem (a small tmpfs; needs root): ENOSPC, exit 1, the old pair intact."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        model, key = setup_pair(mount, old_pair)
        done = subprocess.run(lock_command(harness, model, key), env=child_env(), capture_output=True, text=True)
        assert done.returncode == 1, done.stderr
        assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
        assert assert_complete_or_absent(model, key, old_pair) == "old"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_committed_write_is_finished_by_the_next_command(tmp_path, cli, passphrase_env, old_pair):
    """Killed between the two renames: the next `run` finishes the write and says so."""
    model, key = setup_pair(tmp_path, None)
    temp_model, temp_key = (p.with_name(f".{p.name}.0badcafe{filepair.TEMP_SUFFIX}") for p in (model, key))
    temp_model.write_bytes(old_pair[0])
    temp_key.write_bytes(old_pair[1])
    filepair._write_journal(filepair.journal_path(key), "committed", [(temp_model, model), (temp_key, key)])
    os.replace(temp_model, model)  # the first rename happened, then the process died
    result = cli("run", model, "--key", key, "--input", MODELS / "digits_test.npz", "-o", tmp_path / "out.npz")
    assert result.code == 0, result.err
    assert "finished an interrupted write" in result.err
    assert assert_complete_or_absent(model, key, None) == "new"


def test_a_journal_onnxlock_did_not_write_is_refused(tmp_path):
    key = tmp_path / "m.key"
    filepair.journal_path(key).write_text(json.dumps(
        {"format": "onnxlock-journal", "version": 1, "state": "committed",
         "files": [{"temp": "/etc/passwd", "final": str(key)}]}))
    with pytest.raises(OnnxlockError, match="not a journal onnxlock wrote"):
        filepair.recover(key)
