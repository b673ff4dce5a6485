"""File helpers shared by keys and models: atomic writes and SHA-256 digests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator

_CHUNK = 1 << 20


def shown_path(path) -> str:
    """A path as it may appear in a message: data passed where a path belongs (a key's or an
    identity's text) is not echoed."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
    # keys and identities hold newlines, a key's payload line is longer than any sane path
    if not text or "\n" in text or len(text) > 255 or text.startswith(("onnxlock-key/", "onnxlock-identity/")):
        return "(data given as a path)"
    return text


def read_input(path: str | os.PathLike, what: str, error: type[Exception]) -> bytes:
    """The bytes of an input file, or ``error`` naming it (one line, no OSError traceback; data
    given in place of a path is not echoed)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise error(f"cannot read {what} {shown_path(path)}: {reason}") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same directory (so ``os.replace`` is an
    atomic rename on one filesystem), are fsynced, then renamed over ``path``. On any
    failure the temporary file is removed and an existing ``path`` is left untouched.
    ``mode`` defaults to owner-only because key files are secrets.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.NamedTemporaryFile(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp", delete=False
    )
    try:
        with tmp:
            os.chmod(tmp.name, mode)
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    fsync_directory(directory)


def fsync_directory(directory: str | os.PathLike) -> None:
    """fsync a folder so that renames and removals in it are durable (best effort: not every platform can)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_chunks(path: str | os.PathLike) -> Iterator[memoryview]:
    """The file at ``path`` in chunks, each read into one reused buffer (a view valid until the
    next): large models stay out of memory, and their pages out of the process's RSS."""
    chunk = bytearray(_CHUNK)
    view = memoryview(chunk)
    with open(path, "rb") as handle:
        while count := handle.readinto(chunk):
            yield view[:count]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()
