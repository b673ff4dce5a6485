"""The key file: a secret dict sealed with AES-256-GCM under a random file key.

Layout (UTF-8 text, three '\\n'-terminated lines)::

    onnxlock-key/2
    {"format":"onnxlock-key","version":2,...}    <- header, authenticated as AAD
    <base64 of AES-GCM(zlib(JSON secret))>

The file key is wrapped once per recipient stanza in the header (see ``recipients``).
Version 1 files (no ``licensee`` field) are still read. docs/key-format.md is the full spec.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from datetime import datetime, timedelta, timezone
from typing import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onnxlock.errors import KeyAuthError, KeyExpiredError, KeyFormatError, ModelMismatchError, OnnxlockError
from onnxlock.key.fields import b64_field, b64decode, b64encode, exact_fields, field, json_object
from onnxlock.key.identity import load_identity
from onnxlock.key.recipients import (
    FILE_KEY_SIZE, NONCE_SIZE, SCRYPT_DEFAULTS, Recipient, ScryptRecipient, X25519Recipient, check_stanza,
)

FORMAT = "onnxlock-key"
VERSION = 2
MAGIC = f"{FORMAT}/{VERSION}".encode("ascii")
_MAGICS = {f"{FORMAT}/{v}".encode("ascii"): v for v in (1, 2)}

_HEADER = "key header"
_V1_FIELDS = ("format", "version", "model_sha256", "method", "created", "expires", "recipients", "nonce")
_HEADER_FIELDS = {1: _V1_FIELDS, 2: _V1_FIELDS + ("licensee",)}
# Caps checked before any cryptography, so a hostile file costs at most one scrypt run.
MAX_RECIPIENTS = 16
MAX_SCRYPT_STANZAS = 1
MAX_KEY_BYTES = 16 << 20
MAX_HEADER_BYTES = 16 << 10
MAX_LICENSEE_CHARS = 100
_MAX_SECRET_BYTES = 64 << 20
_TAG_SIZE = 16
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_AUTH_FAILED = "wrong passphrase or corrupted key"
_AUTH_FAILED_IDENTITY = "the key is not for this identity or passphrase, or it is corrupted"
_KEEP = object()


def seal(secret: dict, *, model_sha256: str, method: str, passphrase: str | None = None,
         recipients: Iterable[X25519Recipient] = (), kdf_params: dict | None = None,
         expires: datetime | None = None, licensee: str | None = None,
         _salt: bytes | None = None, _nonce: bytes | None = None,
         _file_key: bytes | None = None, _created: datetime | None = None) -> bytes:
    """Seal ``secret`` for ``passphrase`` and/or public ``recipients``; any one of them opens it.

    ``kdf_params`` overrides scrypt's n, r, p. The underscored arguments pin the random
    values (and creation time) for known-answer tests; ``_nonce`` pins both the payload
    and the stanza nonce, which is harmless because they are used under different keys.
    """
    stanzas: list[Recipient] = []
    if passphrase is not None:
        params = dict(SCRYPT_DEFAULTS)
        if kdf_params:
            unknown = set(kdf_params) - set(params)
            if unknown:
                raise ValueError(f"unknown scrypt parameter {sorted(unknown)[0]!r}")
            params.update(kdf_params)
        stanzas.append(ScryptRecipient(passphrase, **params, _salt=_salt, _nonce=_nonce))
    stanzas.extend(recipients)
    return seal_for(stanzas, secret, model_sha256=model_sha256, method=method, expires=expires,
                    licensee=licensee, _nonce=_nonce, _file_key=_file_key, _created=_created)


def seal_for(recipients: Iterable[Recipient], secret: dict, *, model_sha256: str, method: str,
             expires: datetime | None = None, licensee: str | None = None, _nonce: bytes | None = None,
             _file_key: bytes | None = None, _created: datetime | None = None) -> bytes:
    """Seal ``secret`` so that any one of ``recipients`` can open it."""
    if not isinstance(secret, dict):
        raise TypeError("secret must be a dict")
    if not isinstance(model_sha256, str) or not _SHA256_HEX.fullmatch(model_sha256):
        raise ValueError("model_sha256 must be 64 lowercase hex digits")
    if not isinstance(method, str) or not method:
        raise ValueError("method must be a non-empty string")
    if licensee is not None and _licensee_problem(licensee):
        raise ValueError(_licensee_problem(licensee))
    file_key = _file_key if _file_key is not None else os.urandom(FILE_KEY_SIZE)
    nonce = _nonce if _nonce is not None else os.urandom(NONCE_SIZE)
    if len(file_key) != FILE_KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("file key must be 32 bytes and nonce 12 bytes")
    stanzas = [r.wrap(file_key) for r in recipients]
    if not 1 <= len(stanzas) <= MAX_RECIPIENTS:
        raise ValueError(f"a key needs 1 to {MAX_RECIPIENTS} recipients")
    if sum(s["type"] == ScryptRecipient.type for s in stanzas) > MAX_SCRYPT_STANZAS:
        raise ValueError("a key holds at most one passphrase")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model_sha256": model_sha256,
        "method": method,
        "created": _timestamp(_created or datetime.now(timezone.utc)),
        "expires": None if expires is None else _timestamp(expires),
        "licensee": licensee,
        "recipients": stanzas,
        "nonce": b64encode(nonce),
    }
    header_line = json.dumps(header, separators=(",", ":")).encode("ascii")
    if len(header_line) > MAX_HEADER_BYTES:
        raise ValueError("key header too large")
    plaintext = zlib.compress(
        json.dumps(secret, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8"), 9
    )
    payload = AESGCM(file_key).encrypt(nonce, plaintext, header_line)
    return b"\n".join([MAGIC, header_line, b64encode(payload).encode("ascii")]) + b"\n"


def rekey(data: bytes, identities: Iterable[Recipient], recipients: Iterable[Recipient], *,
          expires: datetime | None | object = _KEEP) -> bytes:
    """The same secret, binding and licensee sealed afresh (new file key) for ``recipients``.

    ``data`` must open with one of ``identities``; ``expires`` replaces the expiry (None: never).
    """
    secret = open_with(identities, data)
    header = read_header(data)  # authentic: it was the AAD of the payload that just opened
    old_expiry = _parse_time(header["expires"], "expires") if header["expires"] else None
    return seal_for(recipients, secret, model_sha256=header["model_sha256"], method=header["method"],
                    expires=old_expiry if expires is _KEEP else expires,
                    licensee=header.get("licensee"), _created=_parse_time(header["created"], "created"))


def read_header(data: bytes) -> dict:
    """Parse and validate a key file's structure and return its header; needs no secret."""
    return _parse(data).header


def parse_key(data: bytes) -> SealedKey:
    """A key file's structure, parsed and validated (its header and sealed payload): what
    ``open_key`` takes in place of bytes when the caller reads the header too."""
    return _parse(data)


def open_key(data: bytes | SealedKey, *, passphrase: str | None = None, identity=None,
             model_sha256: str | None = None) -> dict:
    """Return the secret sealed in ``data`` for an ``identity`` (path, identity file bytes or
    X25519Identity; a protected one is opened with ``passphrase``) or for ``passphrase``.
    See ``open_with`` for the checks and errors."""
    if passphrase is None and identity is None:
        raise OnnxlockError("no passphrase or identity given to open the key")
    parsed = _check(data, model_sha256)
    identities: list[Recipient] = []
    if identity is not None:
        identities.append(load_identity(identity, passphrase))
    if passphrase is not None:
        identities.append(ScryptRecipient(passphrase))
    return _open(identities, parsed)


def open_with(identities: Iterable[Recipient], data: bytes, *,
              model_sha256: str | None = None) -> dict:
    """Return the secret sealed in ``data`` if one of ``identities`` unwraps its file key.

    Checks run in order: structure (KeyFormatError), model hash (ModelMismatchError),
    expiry (KeyExpiredError), then decryption (KeyAuthError). The first two read the
    header before it is authenticated; that is safe because the header is the AAD, so
    tampering with it can make opening fail but never succeed.
    """
    return _open(identities, _check(data, model_sha256))


def _check(data: bytes | SealedKey, model_sha256: str | None) -> SealedKey:
    parsed = data if isinstance(data, SealedKey) else _parse(data)
    key_sha = parsed.header["model_sha256"]
    if model_sha256 is not None and model_sha256.lower() != key_sha:
        raise ModelMismatchError(
            f"key belongs to another model (key is for sha256 {key_sha[:8]}..., "
            f"this model is {model_sha256.lower()[:8]}...), or the locked file was altered"
        )
    if parsed.expires is not None and datetime.now(timezone.utc) >= parsed.expires:
        raise KeyExpiredError(f"key expired on {parsed.header['expires']}")
    return parsed


def _open(identities: Iterable[Recipient], parsed: SealedKey) -> dict:
    file_key = _unwrap(identities, parsed.header["recipients"])
    try:
        plaintext = AESGCM(file_key).decrypt(parsed.nonce, parsed.ciphertext, parsed.header_line)
    except InvalidTag:
        raise KeyAuthError(_AUTH_FAILED) from None
    return _decode_secret(plaintext)


class SealedKey:
    """A parsed key file: its header (validated, authenticated only once opened) and payload."""

    __slots__ = ("header", "header_line", "nonce", "ciphertext", "expires")

    def __init__(self, header: dict, header_line: bytes, nonce: bytes, ciphertext: bytes, expires: datetime | None):
        self.header, self.header_line, self.nonce = header, header_line, nonce
        self.ciphertext, self.expires = ciphertext, expires


def _parse(data: bytes) -> SealedKey:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("key data must be bytes")
    data = bytes(data)
    if len(data) > MAX_KEY_BYTES:
        raise KeyFormatError(f"key file is larger than {MAX_KEY_BYTES >> 20} MiB")
    version, header_line, payload_line = _split_lines(data)
    header = _load_header(header_line, version)
    nonce = b64_field(header, "nonce", NONCE_SIZE, _HEADER)
    try:
        ciphertext = b64decode(payload_line.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise KeyFormatError("payload is not valid base64") from None
    if len(ciphertext) < _TAG_SIZE:
        raise KeyFormatError("payload is too short to be a sealed secret")
    expires = header["expires"]
    return SealedKey(header, header_line, nonce, ciphertext,
                   None if expires is None else _parse_time(expires, "expires"))


def _split_lines(data: bytes) -> tuple[int, bytes, bytes]:
    if not data:
        raise KeyFormatError("key file is empty")
    first, newline, rest = data.partition(b"\n")
    if first not in _MAGICS:
        if not newline and any(magic.startswith(first) for magic in _MAGICS):
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
    if len(lines[0]) > MAX_HEADER_BYTES:
        raise KeyFormatError(f"key header is longer than {MAX_HEADER_BYTES} bytes")
    return _MAGICS[first], lines[0], lines[1]


def _load_header(line: bytes, magic_version: int) -> dict:
    header = json_object(line, "key header", object_pairs_hook=_no_duplicates)
    fmt = field(header, "format", str, _HEADER)
    if fmt != FORMAT:
        raise KeyFormatError(f"key header field 'format' is {fmt!r}, expected {FORMAT!r}")
    version = field(header, "version", int, _HEADER)
    if version not in _HEADER_FIELDS:
        raise KeyFormatError(_unsupported(version))
    if version != magic_version:
        raise KeyFormatError(f"key header version {version} does not match the first line")
    exact_fields(header, _HEADER_FIELDS[version], _HEADER)
    if not _SHA256_HEX.fullmatch(field(header, "model_sha256", str, _HEADER)):
        raise KeyFormatError("key header field 'model_sha256' is not a lowercase hex SHA-256")
    field(header, "method", str, _HEADER)
    _parse_time(field(header, "created", str, _HEADER), "created")
    field(header, "expires", (str, type(None)), _HEADER)
    if version >= 2:
        licensee = field(header, "licensee", (str, type(None)), _HEADER)
        if licensee is not None and _licensee_problem(licensee):
            raise KeyFormatError(f"key header field 'licensee': {_licensee_problem(licensee)}")
    recipients = field(header, "recipients", list, _HEADER)
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise KeyFormatError(f"key header must list 1 to {MAX_RECIPIENTS} recipients, "
                             f"got {len(recipients)}")
    for i, stanza in enumerate(recipients):
        check_stanza(stanza, f"key recipient {i}")
    if sum(stanza["type"] == ScryptRecipient.type for stanza in recipients) > MAX_SCRYPT_STANZAS:
        raise KeyFormatError(f"key header may hold at most {MAX_SCRYPT_STANZAS} scrypt recipient")
    return header


def _licensee_problem(name: str) -> str | None:
    if not 1 <= len(name) <= MAX_LICENSEE_CHARS or not name.isprintable():
        return f"a licensee name is 1 to {MAX_LICENSEE_CHARS} printable characters"
    return None


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    result = {}
    for name, value in pairs:
        if name in result:
            raise KeyFormatError(f"key header has duplicate field '{name}'")
        result[name] = value
    return result


def _unsupported(version: object) -> str:
    return f"unsupported key version {version} (this onnxlock reads versions 1 and {VERSION})"


def parse_expires(text: str) -> datetime:
    """A user's expiry: a date (the key opens through the end of that day, UTC) or an ISO-8601
    time with a UTC offset."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.fromisoformat(text).replace(tzinfo=timezone.utc) + timedelta(days=1)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OnnxlockError(f"expiry {text!r} is not a date (YYYY-MM-DD) or an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise OnnxlockError(f"expiry {text!r} needs a UTC offset (e.g. +00:00), or give a date")
    return moment


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
    identities = list(identities)
    for identity in identities:
        for stanza in stanzas:
            file_key = identity.unwrap(stanza)
            if file_key is not None:
                return file_key
    passphrases_only = all(isinstance(i, ScryptRecipient) for i in identities)
    raise KeyAuthError(_AUTH_FAILED if passphrases_only else _AUTH_FAILED_IDENTITY)


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
    return json_object(raw, "key payload")
