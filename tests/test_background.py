"""background.py: first uses run in a thread beside a call that lets other threads run (the
passphrase's scrypt), once per process, and the Task that runs them."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from onnxlock import background
from onnxlock.key import recipients
from onnxlock.key.envelope import open_key, seal

WAIT = 10  # seconds: a deadlock fails the test instead of hanging it


@pytest.fixture
def fresh(monkeypatch):
    """This process as if no first use had been run yet, with only the first uses a test registers."""
    monkeypatch.setattr(background, "_warmed", False)
    monkeypatch.setattr(background, "_first_uses", [])
    return background


def test_first_uses_run_in_another_thread_while_the_call_runs(fresh):
    """Each side waits for the other to have started: run one after the other, they would time out."""
    call_started, warmed = threading.Event(), threading.Event()
    seen = {}

    def warm():
        seen["thread"] = threading.get_ident()
        seen["call_was_running"] = call_started.wait(WAIT)
        warmed.set()

    def call(value):
        call_started.set()
        return value, warmed.wait(WAIT)

    fresh.first_use(warm)
    assert fresh.beside(call, "result") == ("result", True)
    assert seen == {"thread": seen["thread"], "call_was_running": True}
    assert seen["thread"] != threading.get_ident()


def test_first_uses_run_once_per_process_and_are_done_when_beside_returns(fresh):
    runs = []
    fresh.first_use(lambda: runs.append(threading.get_ident()))
    assert fresh.beside(lambda: 1) == 1
    assert len(runs) == 1  # joined before returning
    assert fresh.beside(lambda: 2) == 2
    assert len(runs) == 1


def test_a_failing_first_use_changes_nothing(fresh):
    runs = []

    def broken():
        raise ValueError("a warm-up that fails")

    fresh.first_use(broken)
    fresh.first_use(lambda: runs.append(True))
    assert fresh.beside(lambda: "derived") == "derived"
    assert runs == [True]  # the later ones still ran


def test_the_calls_error_is_raised_after_the_first_uses_finish(fresh):
    finished = threading.Event()
    fresh.first_use(lambda: finished.wait(0.05) or finished.set())

    def failing():
        raise MemoryError("scrypt")

    with pytest.raises(MemoryError, match="scrypt"):
        fresh.beside(failing)
    assert finished.is_set()


def test_the_passphrase_kdf_runs_the_first_uses_beside_it(fresh, monkeypatch):
    """Opening a passphrase key runs the first uses in another thread while scrypt derives."""
    if recipients._STDLIB_SCRYPT is None:
        pytest.skip("this Python's OpenSSL has no scrypt: cryptography's holds the GIL, nothing to overlap")
    key = seal({"layers": []}, model_sha256="ab" * 32, method="mask", passphrase="pw",
               kdf_params={"n": 2**12, "r": 1, "p": 1})
    deriving, seen = threading.Event(), {}
    real = recipients.scrypt

    def scrypt(*args):
        deriving.set()
        return real(*args)

    def warm():
        seen["during_kdf"] = deriving.wait(WAIT)
        seen["thread"] = threading.get_ident()

    monkeypatch.setattr(recipients, "scrypt", scrypt)
    fresh.first_use(warm)
    assert open_key(key, passphrase="pw") == {"layers": []}
    assert seen["during_kdf"] and seen["thread"] != threading.get_ident()


def test_without_the_standard_librarys_scrypt_nothing_runs_beside(fresh, monkeypatch):
    """cryptography's scrypt holds the GIL: a thread beside it would only take turns with it."""
    monkeypatch.setattr(recipients, "_STDLIB_SCRYPT", None)
    runs = []
    fresh.first_use(lambda: runs.append(True))
    key = seal({"layers": []}, model_sha256="ab" * 32, method="mask", passphrase="pw",
               kdf_params={"n": 2**12, "r": 1, "p": 1})
    assert open_key(key, passphrase="pw") == {"layers": []}
    assert runs == []


def test_the_loaders_first_uses_are_registered_and_work():
    """A load registers its libraries' first uses (AES-GCM, Poly1305, the keystreams), and each runs
    without error: a failing one would be swallowed in a load and silently save nothing."""
    code = ("import onnxlock.runtime.session, onnxlock.background as b; "
            "print(sorted(f.__qualname__ for f in b._first_uses)); "
            "[f() for f in b._first_uses]")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['_first_aead', '_first_keystreams', '_first_tag']"


def test_a_task_runs_once_and_join_waits_for_it():
    done = []
    task = background.Task(lambda item: done.append(item), "x")
    task.join()  # not started: returns at once
    assert not task.started and done == []
    task.start()
    task.start()
    task.join()
    assert task.started and done == ["x"]


def test_a_check_put_off_runs_beside_the_call_even_once_warmed(fresh):
    """A Meanwhile check runs in another thread while the call runs, in a process whose first uses
    are long done (each side waits for the other: run in sequence, they would time out)."""
    fresh._warmed = True
    call_started, checked, seen = threading.Event(), threading.Event(), {}

    def check(value):
        seen["value"], seen["thread"] = value, threading.get_ident()
        seen["call_was_running"] = call_started.wait(WAIT)
        checked.set()

    def call():
        call_started.set()
        return checked.wait(WAIT)

    with fresh.Meanwhile(check, "options"):
        assert fresh.beside(call) is True
    assert seen["value"] == "options" and seen["call_was_running"]
    assert seen["thread"] != threading.get_ident()


def test_a_check_put_off_runs_when_its_block_ends_if_nothing_ran_beside(fresh):
    runs = []
    with fresh.Meanwhile(lambda: runs.append(threading.get_ident())):
        assert runs == []
    assert runs == [threading.get_ident()]
    assert fresh.beside(lambda: "alone") == "alone"  # outside the block: nothing pending
    assert len(runs) == 1


def test_a_failed_check_is_raised_when_its_block_ends_and_again_in_a_later_one(fresh):
    runs = []

    def check():
        runs.append(True)
        raise ValueError("unsafe option")

    pending = fresh.Meanwhile(check)
    with pytest.raises(ValueError, match="unsafe option"):
        with pending:
            assert fresh.beside(lambda: "derived") == "derived"  # the call itself goes on
    with pytest.raises(ValueError, match="unsafe option"):
        with pending:
            pass
    assert runs == [True]  # run once


def test_the_blocks_own_error_wins_over_the_checks(fresh):
    def check():
        raise ValueError("unsafe option")

    def wrong_passphrase():
        raise KeyError("wrong passphrase")

    with pytest.raises(KeyError, match="wrong passphrase"):
        with fresh.Meanwhile(check):
            fresh.beside(wrong_passphrase)


def test_ahead_starts_its_call_once_per_process_in_another_thread(monkeypatch):
    monkeypatch.setattr(background, "_ahead", {})
    runs, release = [], threading.Event()

    def start_up():
        release.wait(WAIT)
        runs.append(threading.get_ident())

    task = background.ahead(start_up)
    assert background.ahead(start_up) is task  # already started: the same task, not a second run
    release.set()
    task.join()
    background.ahead(start_up).join()
    assert runs == [runs[0]] and runs[0] != threading.get_ident()


def test_ahead_drops_its_calls_error(monkeypatch):
    monkeypatch.setattr(background, "_ahead", {})
    runs = []

    def broken():
        runs.append(True)
        raise RuntimeError("onnxruntime would not start")

    task = background.ahead(broken)
    task.join()  # nothing raised here: the work that needs it says what is wrong
    assert task.started and runs == [True]
    assert background.ahead(broken) is task and runs == [True]  # not tried again
