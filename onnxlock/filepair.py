"""Two files written as one: a locked model and its key are replaced together or not at all.

Guarantee: however ``write_files`` is interrupted (an exception, Ctrl-C, SIGKILL, a full disk, a
power cut on a filesystem that honours fsync), once ``recover`` has run for the anchor path (the
last file: the key) the final paths hold either every new file or none of them, never a mix, and
no temporary is left behind. Existing files are replaced only after every new file is complete
on disk, so ``--force`` never loses the old pair before the new one can take its place. Every
onnxlock command that reads or writes a pair runs ``recover`` first.

How: a journal beside the anchor, ``.NAME.onnxlock-journal``, records the plan.

1. journal ``writing``, naming one fresh temporary beside each final path;
2. every temporary written and fsynced;
3. journal ``committed``: the commit point;
4. each temporary renamed onto its final path, folders fsynced, journal removed.

Each journal update is atomic (``.NAME.onnxlock-journal.new``, fsynced, renamed). ``recover`` finds
a ``writing`` journal (or a lone ``.new``) and deletes its temporaries: the finals were never
touched. It finds a ``committed`` journal and redoes the renames whose temporary still exists:
the new files were complete. Writers and recoverers of one anchor folder exclude each other with
``flock`` on the folder, which the kernel releases when a process dies.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import OnnxlockError
from .fileio import fsync_directory

JOURNAL_SUFFIX = ".onnxlock-journal"
TEMP_SUFFIX = ".onnxlock-tmp"
_FORMAT = "onnxlock-journal"


class NewFile:
    """A file ``write_files`` writes: its path, bytes and permission bits."""

    __slots__ = ("path", "data", "mode")

    def __init__(self, path: Path, data: bytes, mode: int):
        self.path, self.data, self.mode = path, data, mode


def journal_path(anchor: str | os.PathLike) -> Path:
    anchor = Path(anchor).absolute()
    return anchor.with_name(f".{anchor.name}{JOURNAL_SUFFIX}")


def write_files(files: Sequence[NewFile], *, overwrite: bool) -> None:
    """Write ``files`` as one (see the module's guarantee); the journal sits beside the last one.

    Without ``overwrite``, an existing final path is refused before anything is written."""
    files = [NewFile(Path(f.path).absolute(), f.data, f.mode) for f in files]
    journal = journal_path(files[-1].path)
    with _folder_lock(journal.parent):
        _recover(journal)
        for f in files:
            if not overwrite and f.path.exists():
                raise OnnxlockError(f"{f.path} exists (use --force to overwrite)")
        plan = [(f, f.path.with_name(f".{f.path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")) for f in files]
        moves = [(temp, f.path) for f, temp in plan]
        committed = False
        try:
            _write_journal(journal, "writing", moves)
            for f, temp in plan:
                _write_new(temp, f.data, f.mode)
            _write_journal(journal, "committed", moves)
            committed = True
            _finish(journal, moves)
        except BaseException:
            # before the commit point nothing final was touched: undo; after it, every new file is
            # complete: finish the renames (if that fails too, the journal stays for the next command)
            with contextlib.suppress(OSError):
                (_finish if committed else _undo)(journal, moves)
            raise


def recover(anchor: str | os.PathLike) -> str | None:
    """Finish or undo an interrupted ``write_files`` whose last file is ``anchor``; say which, or None."""
    journal = journal_path(anchor)
    if not (_exists(journal) or _exists(_new(journal))):
        return None
    with _folder_lock(journal.parent):
        return _recover(journal)


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; False for a name the file system cannot hold (too long: no journal
    can be there, e.g. beside key data passed as a path), whose lookup raises."""
    try:
        return path.exists()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise


def settle(anchor: str | os.PathLike) -> str | None:
    """``recover`` for commands that only read the pair: a failure is one OnnxlockError naming the journal."""
    try:
        return recover(anchor)
    except OSError as exc:
        raise OnnxlockError(f"{anchor} was being written when a command was interrupted, and that write "
                            f"cannot be finished here ({exc.strerror or exc}); run onnxlock again where "
                            f"{journal_path(anchor).parent} is writable") from exc


def _recover(journal: Path) -> str | None:
    if not journal.exists():
        _new(journal).unlink(missing_ok=True)  # the first journal write never completed: nothing else exists
        return None
    state, moves = _read_journal(journal)
    finals = " and ".join(str(final) for _, final in moves)
    if state == "committed":
        _finish(journal, moves)
        return f"finished an interrupted write of {finals}"
    _undo(journal, moves)
    return f"removed an unfinished write of {finals} (the files there were not touched)"


def _finish(journal: Path, moves: list[tuple[Path, Path]]) -> None:
    for temp, final in moves:
        if temp.exists():
            os.replace(temp, final)
    for folder in {final.parent for _, final in moves}:
        fsync_directory(folder)
    _remove_journal(journal)


def _undo(journal: Path, moves: list[tuple[Path, Path]]) -> None:
    for temp, _ in moves:
        temp.unlink(missing_ok=True)
    _remove_journal(journal)


def _remove_journal(journal: Path) -> None:
    _new(journal).unlink(missing_ok=True)
    journal.unlink(missing_ok=True)
    fsync_directory(journal.parent)


def _write_journal(journal: Path, state: str, moves: list[tuple[Path, Path]]) -> None:
    record = {"format": _FORMAT, "version": 1, "state": state,
              "files": [{"temp": str(temp), "final": str(final)} for temp, final in moves]}
    _write_new(_new(journal), json.dumps(record).encode(), 0o600, exclusive=False)
    os.replace(_new(journal), journal)
    fsync_directory(journal.parent)


def _read_journal(journal: Path) -> tuple[str, list[tuple[Path, Path]]]:
    """The journal's state and moves; anything odd (a journal not written by us) is refused, not acted on."""
    try:
        record = json.loads(journal.read_bytes())
        state = record["state"]
        moves = [(Path(f["temp"]), Path(f["final"])) for f in record["files"]]
        ours = record["format"] == _FORMAT and state in ("writing", "committed") and all(
            temp.parent == final.parent and temp.name.startswith(f".{final.name}.") and temp.name.endswith(TEMP_SUFFIX)
            for temp, final in moves)
    except (ValueError, KeyError, TypeError):
        ours = False
    if not ours:
        raise OnnxlockError(f"{journal} is not a journal onnxlock wrote; remove it to go on")
    return state, moves


def _write_new(path: Path, data: bytes, mode: int, *, exclusive: bool = True) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, mode)
    try:
        os.chmod(path, mode)  # exact permissions, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _new(journal: Path) -> Path:
    return journal.with_name(journal.name + ".new")


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive flock on the folder itself: no lock file to leave behind, released if the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent writers of one pair are then not excluded
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
