"""Work in a thread beside the caller's: ``Task``, and the process's first uses of the libraries a
load needs, with any check the caller has put off (``Meanwhile``), run beside a long call that lets
other threads run (``beside``).

A process's first AES-GCM, Poly1305 or ChaCha20 call costs 0.1-3 ms on top of the call itself
(OpenSSL fetches and builds its algorithm tables; numpy sets up its loops), all holding the GIL.
The standard library's scrypt releases the GIL for its whole derivation (20 ms to a second), so a
passphrase load runs those first uses in a thread meanwhile, instead of after it. Each module
registers its own (``first_use``): a call on throwaway input whose result is never used. A load's
checks of the caller's session options go there too: onnxruntime raises on each unset entry read
(0.14 ms each, all holding the GIL).
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_first_uses: list[Callable[[], object]] = []
_warmed = False  # set once the first uses have been started in this process
_local = _thread._local()  # .pending: the innermost open Meanwhile of this thread
_ahead: dict[Callable[[], object], Task] = {}  # each call ``ahead`` started, once per process
_ahead_lock = _thread.allocate_lock()


class Task:
    """A call run once in a thread of its own, started without the handshake ``threading.Thread.start``
    waits for (~0.24 ms here against ~0.04 ms: a third of hashing a 190 KB model). Like a daemon
    thread it does not hold the interpreter's exit; its owner joins it. ``join`` before ``start``
    returns at once; where no thread can be started, ``start`` runs the call itself."""

    def __init__(self, function, *args):
        self._call, self._done, self._started = (function, args), _thread.allocate_lock(), False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._done.acquire()
        try:
            _thread.start_new_thread(self._run, ())
        except RuntimeError:  # no thread to be had (a process at its limit): the call runs here
            self._run()

    def _run(self) -> None:
        try:
            self._call[0](*self._call[1])
        finally:
            self._done.release()

    @property
    def started(self) -> bool:
        return self._started

    def join(self) -> None:
        if self._started:
            with self._done:
                pass


def ahead(call: Callable[[], object]) -> Task:
    """``call()`` started in a thread of its own, once per process (later calls get the same task,
    to ``join``): start-up work that releases the GIL, begun before the work that will need it.
    Its errors are dropped: it only saves time, and the work that needs it says what is wrong."""
    with _ahead_lock:
        task = _ahead.get(call)
        if task is None:
            task = _ahead[call] = Task(_quietly, call)
            task.start()
    return task


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception:
        pass


def first_use(warm: Callable[[], object]) -> Callable[[], object]:
    """Register ``warm``, a call on throwaway input that pays a library's first-use costs (as a
    decorator, it returns ``warm``). It must be safe in any thread and have no lasting effect."""
    _first_uses.append(warm)
    return warm


class Meanwhile:
    """A check the caller needs done before it goes on, run once: in a thread beside the next
    ``beside`` call made in this thread inside its ``with`` block, else when the block ends. Its
    error is raised when the block ends, unless the block raised its own (which goes on instead;
    a later block raises the check's)."""

    def __init__(self, check, *args):
        self._call, self._ran, self._error, self._outer = (check, args), False, None, None

    @property
    def ran(self) -> bool:
        return self._ran

    def run(self) -> None:
        if self._ran:
            return
        self._ran = True
        try:
            self._call[0](*self._call[1])
        except Exception as exc:  # raised in the caller's thread, when its block ends
            self._error = exc

    def __enter__(self) -> Meanwhile:
        self._outer, _local.pending = getattr(_local, "pending", None), self
        return self

    def __exit__(self, kind, error, trace) -> None:
        _local.pending = self._outer
        self.run()  # where no ``beside`` ran it (``beside`` joins its thread before returning)
        if kind is None and self._error is not None:
            raise self._error


def beside(call: Callable[..., T], *args) -> T:
    """``call(*args)``, with the registered first uses (once per process: later calls run without
    them) and the caller's open ``Meanwhile`` check run in a thread meanwhile. Only for a call that
    releases the GIL: otherwise the two would take turns, and nothing is gained. Returns once both
    are done."""
    global _warmed
    pending = getattr(_local, "pending", None)
    warm = not _warmed and bool(_first_uses)
    if not warm and (pending is None or pending.ran):
        return call(*args)
    _warmed = _warmed or warm
    task = Task(_run_beside, warm, pending)
    task.start()
    try:
        return call(*args)
    finally:
        task.join()


def _run_beside(warm: bool, pending: Meanwhile | None) -> None:
    if pending is not None:
        pending.run()
    if warm:
        _run_first_uses()


def _run_first_uses() -> None:
    for warm in tuple(_first_uses):
        _quietly(warm)  # a warm-up only saves time: the real call will say what is wrong
