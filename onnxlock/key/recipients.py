"""Recipient stanzas: each wraps the random file key for one kind of identity (as in age).

A new kind (e.g. X25519) is one more ``Recipient`` subclass here; subclassing registers
its stanza ``type`` so headers holding it are validated, and the envelope never changes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from onnxlock.errors import KeyFormatError
from onnxlock.key.fields import b64_field, b64decode, b64encode, exact_fields, field

FILE_KEY_SIZE = 32
NONCE_SIZE = 12
_WRAPPED_SIZE = FILE_KEY_SIZE + 16  # AES-GCM appends a 16-byte tag


class Recipient(ABC):
    """Wraps the file key into a JSON stanza, and unwraps stanzas meant for this identity."""

    type: ClassVar[str]
    _by_type: ClassVar[dict[str, type[Recipient]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Recipient._by_type[cls.type] = cls

    @abstractmethod
    def wrap(self, file_key: bytes) -> dict:
        """Return a stanza from which this identity can recover ``file_key``."""

    @abstractmethod
    def unwrap(self, stanza: dict) -> bytes | None:
        """Return the file key, or None if the stanza is not for this identity (or fails to open)."""

    @classmethod
    @abstractmethod
    def check_stanza(cls, stanza: dict, where: str) -> None:
        """Validate the structure of a stanza of this type read from a file; raise KeyFormatError."""


def check_stanza(stanza: object, where: str) -> None:
    """Validate one stanza from a header without any secret."""
    if type(stanza) is not dict:
        raise KeyFormatError(f"{where} is not a JSON object")
    kind = field(stanza, "type", str, where)
    recipient_class = Recipient._by_type.get(kind)
    # Unknown types are kept, not rejected: a file may also be sealed to identities
    # that a newer onnxlock understands, and the other stanzas still open it.
    if recipient_class is not None:
        recipient_class.check_stanza(stanza, f"{where} ({kind})")


SCRYPT_DEFAULTS = {"n": 2**15, "r": 8, "p": 1}
_SCRYPT_AAD = b"onnxlock-key/1 scrypt"
_SCRYPT_SALT_SIZE = 16
_SCRYPT_FIELDS = ("type", "salt", "n", "r", "p", "nonce", "wrapped")
_SCRYPT_MIN_N, _SCRYPT_MAX_N = 2**12, 2**20
_SCRYPT_MAX_R, _SCRYPT_MAX_P = 32, 16
_SCRYPT_MAX_MEMORY = 2**30  # scrypt needs 128 * n * r bytes; a hostile file must not exhaust RAM


def scrypt_params_problem(n: int, r: int, p: int) -> str | None:
    """Describe why scrypt parameters are unacceptable, or return None."""
    if any(type(v) is not int for v in (n, r, p)):
        return "scrypt parameters n, r, p must be integers"
    if n < _SCRYPT_MIN_N or n > _SCRYPT_MAX_N or n & (n - 1):
        return f"scrypt n={n} must be a power of two from 2**12 to 2**20"
    if not 1 <= r <= _SCRYPT_MAX_R:
        return f"scrypt r={r} must be from 1 to {_SCRYPT_MAX_R}"
    if not 1 <= p <= _SCRYPT_MAX_P:
        return f"scrypt p={p} must be from 1 to {_SCRYPT_MAX_P}"
    if 128 * n * r > _SCRYPT_MAX_MEMORY:
        return f"scrypt n={n}, r={r} would need more than 1 GiB of memory"
    return None


class ScryptRecipient(Recipient):
    """A passphrase: the file key is wrapped under a key derived with scrypt."""

    type = "scrypt"

    def __init__(self, passphrase: str, *, n: int = 2**15, r: int = 8, p: int = 1,
                 _salt: bytes | None = None, _nonce: bytes | None = None):
        if not isinstance(passphrase, str):
            raise TypeError("passphrase must be a str")
        problem = scrypt_params_problem(n, r, p)
        if problem:
            raise ValueError(problem)
        self._passphrase = passphrase.encode("utf-8")
        self._params = {"n": n, "r": r, "p": p}
        self._salt = _salt
        self._nonce = _nonce

    def _kek(self, salt: bytes, n: int, r: int, p: int) -> AESGCM:
        kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(self._passphrase)
        return AESGCM(kek)

    def wrap(self, file_key: bytes) -> dict:
        if not self._passphrase:
            raise ValueError("passphrase must not be empty")
        salt = self._salt if self._salt is not None else os.urandom(_SCRYPT_SALT_SIZE)
        nonce = self._nonce if self._nonce is not None else os.urandom(NONCE_SIZE)
        if len(salt) != _SCRYPT_SALT_SIZE or len(nonce) != NONCE_SIZE:
            raise ValueError("scrypt salt must be 16 bytes and nonce 12 bytes")
        wrapped = self._kek(salt, **self._params).encrypt(nonce, file_key, _SCRYPT_AAD)
        return {"type": self.type, "salt": b64encode(salt), **self._params,
                "nonce": b64encode(nonce), "wrapped": b64encode(wrapped)}

    def unwrap(self, stanza: dict) -> bytes | None:
        if stanza.get("type") != self.type:
            return None
        aead = self._kek(b64decode(stanza["salt"]), stanza["n"], stanza["r"], stanza["p"])
        try:
            return aead.decrypt(b64decode(stanza["nonce"]), b64decode(stanza["wrapped"]), _SCRYPT_AAD)
        except InvalidTag:
            return None

    @classmethod
    def check_stanza(cls, stanza: dict, where: str) -> None:
        exact_fields(stanza, _SCRYPT_FIELDS, where)
        b64_field(stanza, "salt", _SCRYPT_SALT_SIZE, where)
        b64_field(stanza, "nonce", NONCE_SIZE, where)
        b64_field(stanza, "wrapped", _WRAPPED_SIZE, where)
        problem = scrypt_params_problem(*(field(stanza, k, int, where) for k in ("n", "r", "p")))
        if problem:
            raise KeyFormatError(f"{where}: {problem}")
