"""Identity files (a device's X25519 private key) and public key files, as written by ``keygen``.

Identity file (UTF-8, two '\\n'-terminated lines)::

    onnxlock-identity/1
    {"format":"onnxlock-identity","version":1,"type":"x25519","public":"<b64>","private":"<b64>"}

or, passphrase-protected, ``"protected": <scrypt stanza wrapping the 32-byte private key>`` in
place of ``"private"``. Public key file: one line ``onnxlock-pub/1 x25519 <b64>``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from onnxlock.errors import InvalidArgumentError, KeyAuthError, KeyFormatError, OnnxlockError
from onnxlock.fileio import atomic_write_bytes, read_input
from onnxlock.key.fields import b64_field, b64decode, b64encode, exact_fields, field, json_object
from onnxlock.key.recipients import (
    X25519_SIZE, ScryptRecipient, X25519Identity, X25519Recipient, check_passphrase, check_stanza,
)

IDENTITY_FORMAT = "onnxlock-identity"
IDENTITY_MAGIC = b"onnxlock-identity/1"
_IDENTITY_LINE = IDENTITY_MAGIC.decode()  # how an identity's text begins
IDENTITY_ENV = "ONNXLOCK_IDENTITY"  # an identity file's text, as a secrets manager passes it
IDENTITY_FILE_ENV = "ONNXLOCK_IDENTITY_FILE"  # an identity file's path
PUBLIC_PREFIX = "onnxlock-pub/1 x25519 "
_MAX_IDENTITY_BYTES = 4096
_WHERE = "identity"
_PUBLIC_LINE = re.compile(r"onnxlock-pub/1 x25519 ([A-Za-z0-9+/]{43}=)")


def keygen(path: str | os.PathLike, *, passphrase: str | None = None, kdf_params: dict | None = None,
           force: bool = False) -> X25519Recipient:
    """Write a new identity to ``path`` (owner-only; passphrase-protected if given) and its public
    key to ``path``.pub; return the public key (a recipient for ``lock_model``)."""
    path = os.fspath(path)
    public_path = path + ".pub"
    for target in (path, public_path):
        if os.path.exists(target) and not force:
            raise OnnxlockError(f"{target} exists (use --force to overwrite)")
    identity = X25519Identity.generate()
    atomic_write_bytes(path, identity_bytes(identity, passphrase, kdf_params=kdf_params), mode=0o600)
    atomic_write_bytes(public_path, (public_text(identity) + "\n").encode("ascii"), mode=0o644)
    return X25519Recipient(identity.public)


def identity_bytes(identity: X25519Identity, passphrase: str | None = None, *,
                   kdf_params: dict | None = None) -> bytes:
    """The identity file for ``identity``; with ``passphrase``, the private key is scrypt-wrapped."""
    body = {"format": IDENTITY_FORMAT, "version": 1, "type": identity.type, "public": b64encode(identity.public)}
    if passphrase is None:
        body["private"] = b64encode(identity.private)
    else:
        body["protected"] = ScryptRecipient(check_passphrase(passphrase), **(kdf_params or {})).wrap(identity.private)
    return IDENTITY_MAGIC + b"\n" + json.dumps(body, separators=(",", ":")).encode("ascii") + b"\n"


def public_text(recipient: X25519Recipient) -> str:
    """The one-line public key (what ``--recipient`` takes, and what NAME.pub holds)."""
    return PUBLIC_PREFIX + b64encode(recipient.public)


def parse_identity(data: bytes, passphrase: str | None = None) -> X25519Identity:
    """The identity in an identity file's bytes; a protected one needs its ``passphrase``."""
    if len(data) > _MAX_IDENTITY_BYTES:
        raise KeyFormatError("identity file is too large")
    first, _, rest = bytes(data).partition(b"\n")
    if first != IDENTITY_MAGIC:
        raise KeyFormatError("not an onnxlock identity (bad first line)")
    line, _, tail = rest.partition(b"\n")
    if tail:
        raise KeyFormatError("identity file has data after its second line")
    body = json_object(line, "identity")
    if field(body, "format", str, _WHERE) != IDENTITY_FORMAT or field(body, "version", int, _WHERE) != 1:
        raise KeyFormatError("unsupported identity format or version")
    if field(body, "type", str, _WHERE) != X25519Recipient.type:
        raise KeyFormatError(f"unsupported identity type {body['type']!r}")
    protected = "protected" in body
    exact_fields(body, ("format", "version", "type", "public", "protected" if protected else "private"), _WHERE)
    public = b64_field(body, "public", X25519_SIZE, _WHERE)
    private = _unprotect(body["protected"], passphrase) if protected else b64_field(body, "private", X25519_SIZE, _WHERE)
    identity = X25519Identity(private)
    if identity.public != public:
        raise KeyFormatError("identity's public key does not match its private key")
    return identity


def _unprotect(stanza: object, passphrase: str | None) -> bytes:
    check_stanza(stanza, "identity protection")
    if stanza.get("type") != ScryptRecipient.type:
        raise KeyFormatError("identity protection must be a scrypt stanza")
    if passphrase is None:
        raise KeyAuthError("this identity is passphrase-protected: give its passphrase")
    private = ScryptRecipient(passphrase).unwrap(stanza)
    if private is None:
        raise KeyAuthError("wrong passphrase or corrupted identity")
    return private


def load_identity(source: str | os.PathLike | bytes | X25519Identity,
                  passphrase: str | None = None) -> X25519Identity:
    """An identity from a path, an identity file's bytes or text, or an identity object."""
    if isinstance(source, X25519Identity):
        return source
    return parse_identity(identity_data(source), passphrase)


def identity_data(source: str | os.PathLike | bytes) -> bytes:
    """An identity file's bytes, from its path, its bytes or its text (a ``str`` that starts with
    the identity's first line; surrounding whitespace, as a shell's ``$(cat ...)`` leaves it, is dropped)."""
    if isinstance(source, str) and source.lstrip().startswith(_IDENTITY_LINE):
        return source.strip().encode("utf-8")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgumentError("an identity must be a path, an identity file's bytes or text, or an "
                                   f"X25519Identity, not {type(source).__name__}")
    return read_input(source, "identity", KeyFormatError)


def identity_from_env() -> str | Path | None:
    """The identity the environment gives (None if it gives none): ONNXLOCK_IDENTITY, an identity
    file's text, or ONNXLOCK_IDENTITY_FILE, its path (always read as a path); setting both is an error."""
    text, path = os.environ.get(IDENTITY_ENV) or None, os.environ.get(IDENTITY_FILE_ENV) or None
    if text and path:
        raise OnnxlockError(f"both {IDENTITY_ENV} and {IDENTITY_FILE_ENV} are set: set one")
    if text and not text.lstrip().startswith(_IDENTITY_LINE):
        raise KeyFormatError(f"{IDENTITY_ENV} does not hold an onnxlock identity (for a path, set {IDENTITY_FILE_ENV})")
    return text or (Path(path) if path else None)


def parse_public(text: str) -> X25519Recipient:
    """A recipient from its one-line public key text."""
    match = _PUBLIC_LINE.fullmatch(text.strip())
    if not match:
        raise KeyFormatError(f"not an onnxlock public key (expected '{PUBLIC_PREFIX}<base64>')")
    try:
        return X25519Recipient(b64decode(match[1]))
    except ValueError:
        raise KeyFormatError("not a usable X25519 public key") from None


def load_recipient(source: str | os.PathLike | bytes | X25519Recipient) -> X25519Recipient:
    """A recipient from a public key file's path, its text, or a recipient object."""
    if isinstance(source, X25519Recipient):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, str) and source.startswith(PUBLIC_PREFIX):
        data = source.encode("ascii")
    else:
        data = read_input(source, "public key", KeyFormatError)
    if len(data) > _MAX_IDENTITY_BYTES:
        raise KeyFormatError("public key file is too large")
    try:
        return parse_public(data.decode("ascii"))
    except UnicodeDecodeError:
        raise KeyFormatError("not an onnxlock public key") from None
