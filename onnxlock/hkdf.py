"""HKDF-SHA256 (RFC 5869), 32 bytes, on the standard library's HMAC: the same bytes as
cryptography's HKDF, whose first use in a process costs several times as much (its KDF lookup in
OpenSSL), and the loader pays it on every start."""

from __future__ import annotations

import hmac

_NO_SALT = bytes(32)  # RFC 5869: no salt is a hash-length string of zeros


def hkdf_sha256(secret: bytes, info: bytes, salt: bytes = b"") -> bytes:
    """HKDF-SHA256 of ``secret`` with ``info`` and ``salt``: one HMAC to extract, one to expand."""
    prk = hmac.digest(salt or _NO_SALT, secret, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")
