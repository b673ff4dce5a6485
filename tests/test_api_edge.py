"""Never a traceback: a bug reaches the user as one InternalError line (exit 2), bad input as itself (exit 1)."""

from __future__ import annotations

import errno
import re
import subprocess
import sys
from pathlib import Path

import pytest

import onnxlock
from onnxlock import InternalError, lock_model, restore_model, write_locked
from onnxlock.guard import DEBUG_ENV, is_user_error

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

MLP = MODELS / "digits_mlp.onnx"
ROOT = Path(__file__).resolve().parent.parent


def crash(*args, **kwargs):
    raise ZeroDivisionError("division by zero")


@pytest.fixture
def buggy_lock(monkeypatch):
    """A bug deep inside the lock (where issue 7's real crashes were)."""
    monkeypatch.setattr("onnxlock.passes.flip_signs.MaskKeystream.encryptor", crash)


def test_a_bug_becomes_one_internal_error(buggy_lock):
    with pytest.raises(InternalError) as caught:
        lock_model(str(MLP), passphrase=PASSPHRASE, kdf_params=CHEAP_KDF)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"internal error while locking {MLP}: ZeroDivisionError at onnxlock/")
    assert re.search(r"ZeroDivisionError at onnxlock/passes/flip_signs\.py:\d+ \(mask_values\); ", message)
    assert "report" in message and "--debug" in message and DEBUG_ENV in message
    assert isinstance(caught.value.original, ZeroDivisionError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # raised from None


def test_debug_env_raises_the_original(buggy_lock, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ZeroDivisionError):
        lock_model(MLP, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF)


def test_the_message_never_repeats_the_original_text(monkeypatch, locked_mlp):
    """The original message can hold secret values (here: an index); only its type is said."""
    def leaky(*args, **kwargs):
        raise IndexError("index 3791 is out of bounds for axis 0 with size 3072")
    monkeypatch.setattr("onnxlock.passes.flip_signs.mask_raw_tensors", leaky)
    with pytest.raises(InternalError) as caught:
        restore_model(locked_mlp.model.read_bytes(), locked_mlp.key.read_bytes(), PASSPHRASE)
    # (the message names where it happened: the index is checked whole, not as digits a line number may hold)
    message = str(caught.value)
    assert "IndexError" in message and "3791" not in message and "out of bounds" not in message
    assert "restoring a locked model" in str(caught.value)


def test_the_outermost_public_call_names_the_action(monkeypatch):
    """A bug inside lock_model's restore check is reported as the user's call: locking."""
    monkeypatch.setattr("onnxlock.lock.restore_serialized", crash)
    with pytest.raises(InternalError, match=r"^internal error while locking .*digits_mlp\.onnx: ZeroDivisionError"):
        lock_model(MLP, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, tries=1)


def test_python_dash_c_users_see_one_clear_line():
    code = ("import onnxlock.passes.flip_signs as f\n"
            "f.MaskKeystream.encryptor = lambda *args, **kwargs: 1 / 0\n"
            "import onnxlock\n"
            f"onnxlock.lock_model({str(MLP)!r}, passphrase='correct horse battery staple', kdf_params={{'n': 4096}})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    assert done.stderr.count("Traceback") == 1 and "direct cause" not in done.stderr
    assert "during handling" not in done.stderr and "division by zero" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("onnxlock.errors.InternalError: internal error while locking")
    assert "ZeroDivisionError at onnxlock/passes/flip_signs.py" in last


def test_cli_internal_error_exits_2_in_one_line(cli, passphrase_env, buggy_lock, outdir):
    result = cli("lock", MLP, "-o", outdir / "l.onnx", "--key", outdir / "k.key")
    assert result.code == 2
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"onnxlock: internal error while running 'lock' on {MLP}: ZeroDivisionError at onnxlock/passes/flip_signs.py")
    assert not list(outdir.iterdir())
    debug = cli("--debug", "lock", MLP, "-o", outdir / "l.onnx", "--key", outdir / "k.key")
    assert debug.code == 2 and "Traceback" in debug.err and "ZeroDivisionError: division by zero" in debug.err
    assert debug.err.strip().splitlines()[-1] == lines[0]


def test_cli_bug_outside_the_api(cli, monkeypatch):
    """A bug in the CLI's own code is caught too, naming the verb and the file."""
    def broken(path):
        return {}["kind"]
    monkeypatch.setattr("onnxlock.cli.inspect.describe_model", broken)
    result = cli("inspect", MLP)
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.startswith(
        f"onnxlock: internal error while running 'inspect' on {MLP}: KeyError at onnxlock/cli/inspect.py")


def test_full_disk_is_bad_input_not_a_bug(cli, passphrase_env, monkeypatch, outdir):
    """ENOSPC is the user's environment: exit 1 naming both files, nothing left behind."""
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("onnxlock.filepair._write_new", no_space)
    result = cli("lock", MLP, "-o", outdir / "l.onnx", "--key", outdir / "k.key", "--tries", "1")
    assert result.code == 1
    assert result.err.strip() == (f"onnxlock: error: cannot write {outdir / 'l.onnx'} and {outdir / 'k.key'}: "
                                  "No space left on device")
    assert not list(outdir.iterdir())


def test_out_of_memory_is_not_a_bug(cli, passphrase_env, monkeypatch, outdir):
    def huge(*args, **kwargs):
        raise MemoryError("Unable to allocate 64.0 GiB for an array")
    monkeypatch.setattr("onnxlock.passes.flip_signs.MaskKeystream.encryptor", huge)
    result = cli("lock", MLP, "-o", outdir / "l.onnx", "--key", outdir / "k.key")
    assert result.code == 1 and result.err.startswith("onnxlock: error: out of memory")


@pytest.mark.parametrize("exc, paths, expected", [
    (FileNotFoundError(errno.ENOENT, "No such file", "/data/model.onnx"), ["/data/model.onnx"], True),
    (FileNotFoundError(errno.ENOENT, "No such file", "/data/.model.onnx.1234.tmp"), ["/data/model.onnx"], True),
    (FileNotFoundError(errno.ENOENT, "No such file", "/data"), ["/data/model.onnx"], True),
    (FileNotFoundError(errno.ENOENT, "No such file", "/usr/lib/internal.so"), ["/data/model.onnx"], False),
    (OSError(errno.ENOSPC, "No space left on device"), [], True),
    (OSError(errno.EBADF, "Bad file descriptor"), ["/data/model.onnx"], False),
    (onnxlock.KeyAuthError("wrong passphrase or corrupted key"), [], True),
    (InternalError("internal error while x", ValueError()), [], False),
    (ValueError("setting an array element with a sequence"), [], False),
    (MemoryError(), [], True),
])
def test_what_counts_as_bad_input(exc, paths, expected):
    assert is_user_error(exc, paths) is expected


def test_wrong_call_stays_a_type_error():
    """Calling the API wrongly is the caller's TypeError, as for any Python function."""
    with pytest.raises(TypeError):
        write_locked()
