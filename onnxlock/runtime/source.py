"""Inputs of load_session: a path, bytes or a file object; a locked model is memory-mapped and
hashed in a background thread (hashlib releases the GIL) while the session is being built (a
small one at once)."""

from __future__ import annotations

import os

import numpy as np

from .. import binding
from ..background import Task
from ..errors import OnnxlockError
from ..fileio import read_input, sha256_bytes, sha256_file, shown_path

MAPPED_BYTES = 4 << 20  # smaller files are read whole: the inline route copies a mapping to bytes anyway
THREADED_BYTES = 64 << 10  # smaller models are hashed at once: a thread's start (~40 us) costs more
Input = str | os.PathLike | bytes | bytearray | memoryview


def read_bytes(source: Input, what: str, error: type[OnnxlockError]) -> bytes:
    """The bytes of ``source``: a path, bytes-like, or a binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise error(f"the {what} file object must be opened in binary mode")
        return data
    if not isinstance(source, (str, os.PathLike)):
        raise error(f"the {what} must be a path, bytes or a binary file object, not {type(source).__name__}")
    return read_input(source, what, error)


class LockedSource:
    """The locked model's bytes (an mmap of the file, or the bytes given) and their SHA-256, or
    their Poly1305 tag under the key the secret records with the tag (``binding.expected``),
    computed in a thread from ``start_hash()`` (at once unless ``defer``: the loader starts it
    when the session's creation begins, so it does not compete with the restore for the cores);
    ``sha256()`` and ``tag_matches()`` wait for it. One under THREADED_BYTES is hashed (SHA-256) at once."""

    def __init__(self, source: Input, error: type[OnnxlockError], what: str = "locked model", defer: bool = False):
        self.path: str | None = None
        self.what = what
        self._map = None
        if isinstance(source, (str, os.PathLike)) and not hasattr(source, "read"):
            self.path = os.path.abspath(os.fsdecode(source))
            self.buffer = self._map_or_read(source, error)
            # a large file is hashed by reading it, so its mapped pages do not add to the RSS
            large = len(self.buffer) >= MAPPED_BYTES
            target, args = (self._hash_file, (self.path,)) if large else (self._hash_bytes, (self.buffer,))
        else:
            self.buffer = read_bytes(source, what, error)
            target, args = self._hash_bytes, (self.buffer,)
        if not len(self.buffer):
            raise error(f"the {what} is empty")
        self._digest: str | None = None
        self._tag: bytes | None = None
        self._wanted: tuple[bytes, bytes] | None = None  # (Poly1305 key, tag) the tag is checked against
        self._failure: BaseException | None = None
        self._thread = None
        self._sha256 = (target, args)
        if len(self.buffer) < THREADED_BYTES:
            self._run("_digest", target, *args)  # quicker than starting a thread
            return
        self._thread = Task(self._run, "_digest", target, *args)
        if not defer:
            self._thread.start()

    def start_hash(self, wanted: tuple[bytes, bytes] | None = None) -> None:
        """Start hashing in the background (once): the Poly1305 tag under the key of ``wanted`` (key,
        tag) if given, which is ten times quicker, else the SHA-256 (a small file's SHA-256 is there
        already)."""
        if self._thread is None or self._thread.started:
            return
        if wanted is not None:
            source = (binding.tag_file, self.path) if self._map is not None else (binding.tag_bytes, self.buffer)
            self._wanted, self._thread = wanted, Task(self._run, "_tag", source[0], source[1], wanted[0])
        self._thread.start()

    def _map_or_read(self, path, error):
        """The file mapped, or read whole when small (one copy where a mapping costs a copy later)."""
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < MAPPED_BYTES:
                    return handle.read()
                import mmap  # (0.6 ms to import: only a large model pays it)
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                return self._map
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise error(f"cannot read {self.what} {shown_path(path)}: {reason}") from None

    def _run(self, attribute: str, function, *args) -> None:
        try:
            setattr(self, attribute, function(*args))
        except BaseException as exc:  # re-raised in the caller's thread by sha256() or tag_matches()
            self._failure = exc

    _hash_file = staticmethod(sha256_file)  # (a large file: read, not mapped, so its pages stay out of the RSS)
    _hash_bytes = staticmethod(sha256_bytes)

    def read(self, start: int, end: int) -> np.ndarray:
        """A writable copy of ``buffer[start:end]``: read from the file for a mapped one (no mapped
        page is faulted in, and the read releases the GIL: half the time of copying from the map
        on a large model), copied from the bytes given otherwise."""
        if self.path is None:
            return np.frombuffer(self.buffer, dtype=np.uint8, count=end - start, offset=start).copy()
        out = np.empty(end - start, dtype=np.uint8)
        view, done = memoryview(out), 0
        with open(self.path, "rb", buffering=0) as handle:
            handle.seek(start)
            while done < len(out):
                count = handle.readinto(view[done:])
                if not count:
                    raise OnnxlockError(f"the {self.what} changed while it was being read (truncated)")
                done += count
        return out

    def sha256(self) -> str:
        """The SHA-256 (hex); computed here if the tag was computed instead (an error's message wants it)."""
        self._settled()
        if self._digest is None:
            self._run("_digest", self._sha256[0], *self._sha256[1])
            self._settled()
        return self._digest

    def tag_matches(self) -> bool | None:
        """Whether the Poly1305 tag ``start_hash`` was asked for is the one wanted (in constant
        time); None if the SHA-256 was computed instead."""
        self._settled()
        return None if self._tag is None else binding.matches(self._tag, self._wanted)

    def _settled(self) -> None:
        self._join()
        if self._failure is not None:
            raise OnnxlockError(f"cannot hash the {self.what}: {self._failure}") from self._failure

    def _join(self) -> None:
        if self._thread is not None:
            self.start_hash()
            self._thread.join()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()  # a hash never started is not started now
        if self._map is not None:
            self._map.close()
