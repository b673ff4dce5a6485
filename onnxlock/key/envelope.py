"""The key file: a secret dict sealed with AES-256-GCM under a random file key.

Layout (UTF-8 text, three '\\n'-terminated lines)::

    onnxlock-key/1
    {"format":"onnxlock-key","version":1,...}    <- header, authenticated as AAD
    <base64 of AES-GCM(zlib(JSON secret))>

The file key is wrapped once per recipient stanza in the header (see ``recipients``).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onnxlock.errors import KeyAuthError, KeyExpiredError, KeyFormatError, ModelMismatchError
from onnxlock.key.fields import b64_field, b64decode, b64encode, exact_fields, field
from onnxlock.key.recipients import (
    FILE_KEY_SIZE, NONCE_SIZE, SCRYPT_DEFAULTS, Recipient, ScryptRecipient, check_stanza,
)

FORMAT = "onnxlock-key"
VERSION = 1
MAGIC = f"{FORMAT}/{VERSION}".encode("ascii")

_HEADER = "key header"
_HEADER_FIELDS = ("format", "version", "model_sha256", "method", "created", "expires",
                  "recipients", "nonce")
_MAX_RECIPIENTS = 16  # each passphrase stanza costs a scrypt run when opening
_MAX_SECRET_BYTES = 64 << 20
_TAG_SIZE = 16
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_AUTH_FAILED = "wrong passphrase or corrupted key"


def seal(secret: dict, *, model_sha256: str, method: str, passphrase: str,
         kdf_params: dict | None = None, expires: datetime | None = None,
         _salt: bytes | None = None, _nonce: bytes | None = None,
         _file_key: bytes | None = None, _created: datetime | None = None) -> bytes:
    """Seal ``secret`` under ``passphrase`` and return the key file bytes.

    ``kdf_params`` overrides scrypt's n, r, p. The underscored arguments pin the random
    values (and creation time) for known-answer tests; ``_nonce`` pins both the payload
    and the stanza nonce, which is harmless because they are used under different keys.
    """
    params = dict(SCRYPT_DEFAULTS)
    if kdf_params:
        unknown = set(kdf_params) - set(params)
        if unknown:
            raise ValueError(f"unknown scrypt parameter {sorted(unknown)[0]!r}")
        params.update(kdf_params)
    recipient = ScryptRecipient(passphrase, **params, _salt=_salt, _nonce=_nonce)
    return seal_for([recipient], secret, model_sha256=model_sha256, method=method,
                    expires=expires, _nonce=_nonce, _file_key=_file_key, _created=_created)


def seal_for(recipients: Iterable[Recipient], secret: dict, *, model_sha256: str, method: str,
             expires: datetime | None = None, _nonce: bytes | None = None,
             _file_key: bytes | None = None, _created: datetime | None = None) -> bytes:
    """Seal ``secret`` so that any one of ``recipients`` can open it."""
    if not isinstance(secret, dict):
        raise TypeError("secret must be a dict")
    if not isinstance(model_sha256, str) or not _SHA256_HEX.fullmatch(model_sha256):
        raise ValueError("model_sha256 must be 64 lowercase hex digits")
    if not isinstance(method, str) or not method:
        raise ValueError("method must be a non-empty string")
    file_key = _file_key if _file_key is not None else os.urandom(FILE_KEY_SIZE)
    nonce = _nonce if _nonce is not None else os.urandom(NONCE_SIZE)
    if len(file_key) != FILE_KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("file key must be 32 bytes and nonce 12 bytes")
    stanzas = [r.wrap(file_key) for r in recipients]
    if not 1 <= len(stanzas) <= _MAX_RECIPIENTS:
        raise ValueError(f"a key needs 1 to {_MAX_RECIPIENTS} recipients")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model_sha256": model_sha256,
        "method": method,
        "created": _timestamp(_created or datetime.now(timezone.utc)),
        "expires": None if expires is None else _timestamp(expires),
        "recipients": stanzas,
        "nonce": b64encode(nonce),
    }
    header_line = json.dumps(header, separators=(",", ":")).encode("ascii")
    plaintext = zlib.compress(
        json.dumps(secret, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8"), 9
    )
    payload = AESGCM(file_key).encrypt(nonce, plaintext, header_line)
    return b"\n".join([MAGIC, header_line, b64encode(payload).encode("ascii")]) + b"\n"


def read_header(data: bytes) -> dict:
    """Parse and validate a key file's structure and return its header; needs no secret."""
    return _parse(data).header


def open_key(data: bytes, *, passphrase: str, model_sha256: str | None = None) -> dict:
    """Return the secret sealed in ``data``; see ``open_with`` for the checks and errors."""
    return open_with([ScryptRecipient(passphrase)], data, model_sha256=model_sha256)


def open_with(identities: Iterable[Recipient], data: bytes, *,
              model_sha256: str | None = None) -> dict:
    """Return the secret sealed in ``data`` if one of ``identities`` unwraps its file key.

    Checks run in order: structure (KeyFormatError), model hash (ModelMismatchError),
    expiry (KeyExpiredError), then decryption (KeyAuthError). The first two read the
    header before it is authenticated; that is safe because the header is the AAD, so
    tampering with it can make opening fail but never succeed.
    """
    parsed = _parse(data)
    key_sha = parsed.header["model_sha256"]
    if model_sha256 is not None and model_sha256.lower() != key_sha:
        raise ModelMismatchError(
            f"key belongs to another model (key is for sha256 {key_sha[:8]}..., "
            f"this model is {model_sha256.lower()[:8]}...), or the locked file was altered"
        )
    if parsed.expires is not None and datetime.now(timezone.utc) >= parsed.expires:
        raise KeyExpiredError(f"key expired on {parsed.header['expires']}")
    file_key = _unwrap(identities, parsed.header["recipients"])
    try:
        plaintext = AESGCM(file_key).decrypt(parsed.nonce, parsed.ciphertext, parsed.header_line)
    except InvalidTag:
        raise KeyAuthError(_AUTH_FAILED) from None
    return _decode_secret(plaintext)


@dataclass(frozen=True)
class _Parsed:
    header: dict
    header_line: bytes
    nonce: bytes
    ciphertext: bytes
    expires: datetime | None


def _parse(data: bytes) -> _Parsed:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("key data must be bytes")
    data = bytes(data)
    header_line, payload_line = _split_lines(data)
    header = _load_header(header_line)
    nonce = b64_field(header, "nonce", NONCE_SIZE, _HEADER)
    try:
        ciphertext = b64decode(payload_line.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise KeyFormatError("payload is not valid base64") from None
    if len(ciphertext) < _TAG_SIZE:
        raise KeyFormatError("payload is too short to be a sealed secret")
    expires = header["expires"]
    return _Parsed(header, header_line, nonce, ciphertext,
                   None if expires is None else _parse_time(expires, "expires"))


def _split_lines(data: bytes) -> tuple[bytes, bytes]:
    if not data:
        raise KeyFormatError("key file is empty")
    first, newline, rest = data.partition(b"\n")
    if first != MAGIC:
        if not newline and MAGIC.startswith(first):
            raise KeyFormatError("key file truncated")
        other = re.fullmatch(rb"onnxlock-key/(\d{1,9})", first)
        if other:
            raise KeyFormatError(_unsupported(other[1].decode("ascii")))
        raise KeyFormatError("not an onnxlock key (bad first line)")
    lines = rest.split(b"\n")
    if len(lines) < 3:
        raise KeyFormatError("key file truncated")
    if len(lines) > 3 or lines[2]:
        raise KeyFormatError("key file has data after the payload line")
    return lines[0], lines[1]


def _load_header(line: bytes) -> dict:
    try:
        header = json.loads(line.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise KeyFormatError("key header is not valid JSON") from None
    if type(header) is not dict:
        raise KeyFormatError("key header is not a JSON object")
    fmt = field(header, "format", str, _HEADER)
    if fmt != FORMAT:
        raise KeyFormatError(f"key header field 'format' is {fmt!r}, expected {FORMAT!r}")
    version = field(header, "version", int, _HEADER)
    if version != VERSION:
        raise KeyFormatError(_unsupported(version))
    exact_fields(header, _HEADER_FIELDS, _HEADER)
    if not _SHA256_HEX.fullmatch(field(header, "model_sha256", str, _HEADER)):
        raise KeyFormatError("key header field 'model_sha256' is not a lowercase hex SHA-256")
    field(header, "method", str, _HEADER)
    _parse_time(field(header, "created", str, _HEADER), "created")
    field(header, "expires", (str, type(None)), _HEADER)
    recipients = field(header, "recipients", list, _HEADER)
    if not 1 <= len(recipients) <= _MAX_RECIPIENTS:
        raise KeyFormatError(f"key header must list 1 to {_MAX_RECIPIENTS} recipients, "
                             f"got {len(recipients)}")
    for i, stanza in enumerate(recipients):
        check_stanza(stanza, f"key recipient {i}")
    return header


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    result = {}
    for name, value in pairs:
        if name in result:
            raise KeyFormatError(f"key header has duplicate field '{name}'")
        result[name] = value
    return result


def _unsupported(version: object) -> str:
    return f"unsupported key version {version} (this onnxlock reads version {VERSION})"


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse_time(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise KeyFormatError(f"key header field '{name}' is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise KeyFormatError(f"key header field '{name}' has no UTC offset")
    return moment


def _unwrap(identities: Iterable[Recipient], stanzas: list[dict]) -> bytes:
    for identity in identities:
        for stanza in stanzas:
            file_key = identity.unwrap(stanza)
            if file_key is not None:
                return file_key
    raise KeyAuthError(_AUTH_FAILED)


def _decode_secret(plaintext: bytes) -> dict:
    # The payload is authentic by now, so a problem here is a malformed key, not an attack
    # on the passphrase; the size bound still guards against a decompression bomb.
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(plaintext, _MAX_SECRET_BYTES)
    except zlib.error:
        raise KeyFormatError("key payload is not valid zlib data") from None
    if inflater.unconsumed_tail:
        raise KeyFormatError("key payload is larger than 64 MiB")
    if not inflater.eof:
        raise KeyFormatError("key payload is not valid zlib data")
    try:
        secret = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise KeyFormatError("key payload is not valid JSON") from None
    if type(secret) is not dict:
        raise KeyFormatError("key payload is not a JSON object")
    return secret
