"""What binds a locked model's files to its key, fast: a Poly1305 tag per file, kept in the secret.

Every key's header holds the locked model's SHA-256 (every command checks it; ``verify="full"``
too). Keys written from this version on also carry, inside the encrypted secret, for the locked
model and for its external data file, a fresh random 32-byte Poly1305 key and that file's tag
under it (``MAC``). The fast loader checks those tags instead of the SHA-256: Poly1305 runs at
~2.7 GB/s on this project's CPU against ~250 MB/s for SHA-256, which on a 21 MiB model was as long
as onnxruntime's own session creation. Each Poly1305 key authenticates one file only, and key
and tag are readable only by whoever can open the secret (who could re-seal a key anyway); a
forgery attempt succeeds with probability below 2^-77 for files up to 1 GiB. Keys without the
field are checked by the SHA-256 as before.
"""

from __future__ import annotations

import hmac
import os

from cryptography.hazmat.primitives.poly1305 import Poly1305

from .background import first_use
from .fileio import file_chunks
from .key.fields import b64decode, b64encode

MAC = "mac"  # {"model": {"key", "tag"}, "data": {...}}: Poly1305 keys and tags, base64
_KEY_BYTES, _TAG_BYTES = 32, 16


def new_tags(**files: bytes | None) -> dict:
    """The MAC field for ``model=`` and ``data=`` (None: no such file): a fresh key per file."""
    field = {}
    for role, data in files.items():
        if data is not None:
            key = os.urandom(_KEY_BYTES)
            field[role] = {"key": b64encode(key), "tag": b64encode(tag_bytes(data, key))}
    return field


def expected(secret: dict | None, role: str) -> tuple[bytes, bytes] | None:
    """(key, tag) the secret records for the file of ``role``, or None (an older key, or none for it)."""
    field = secret.get(MAC) if isinstance(secret, dict) else None
    entry = field.get(role) if isinstance(field, dict) else None
    if not isinstance(entry, dict):
        return None
    try:
        key, tag = b64decode(entry["key"]), b64decode(entry["tag"])
    except (KeyError, TypeError, ValueError):
        return None
    return (key, tag) if len(key) == _KEY_BYTES and len(tag) == _TAG_BYTES else None


def tag_bytes(data, key: bytes) -> bytes:
    """The Poly1305 tag of ``data`` (bytes-like) under ``key``."""
    return Poly1305.generate_tag(key, data)


@first_use
def _first_tag() -> None:
    """Poly1305's first use in a process: 0.7-1.0 ms here."""
    Poly1305.generate_tag(bytes(_KEY_BYTES), b"")


def tag_file(path: str | os.PathLike, key: bytes) -> bytes:
    """The Poly1305 tag of the file at ``path`` under ``key``, read in chunks."""
    mac = Poly1305(key)
    for chunk in file_chunks(path):
        mac.update(chunk)
    return mac.finalize()


def matches(actual: bytes | None, wanted: tuple[bytes, bytes] | None) -> bool:
    """Whether a computed tag is the one recorded (in constant time)."""
    return actual is not None and wanted is not None and hmac.compare_digest(actual, wanted[1])
