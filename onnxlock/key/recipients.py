"""Recipient stanzas: each wraps the random file key for one kind of identity (as in age).

Two kinds: a passphrase (``scrypt``) and a device public key (``x25519``). A new kind is one
more ``Recipient`` subclass here; subclassing registers its stanza ``type`` so headers holding
it are validated, and the envelope never changes.
"""

from __future__ import annotations

import functools
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onnxlock.background import beside, first_use
from onnxlock.errors import InvalidArgumentError, KeyFormatError
from onnxlock.hkdf import hkdf_sha256
from onnxlock.key.fields import b64_field, b64decode, b64encode, exact_fields, field

if TYPE_CHECKING:  # annotations only: a load never imports it (``_x25519_keys``); making new keys does
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

FILE_KEY_SIZE = 32
NONCE_SIZE = 12
_WRAPPED_SIZE = FILE_KEY_SIZE + 16  # AES-GCM appends a 16-byte tag


class Recipient(ABC):
    """Wraps the file key into a JSON stanza, and unwraps stanzas meant for this identity."""

    type: ClassVar[str]
    _by_type: ClassVar[dict[str, type[Recipient]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:  # an identity subclass shares its recipient's stanza type
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


# n=2**17, r=8, p=1 is OWASP's scrypt minimum for password storage (128 MiB, about 1 s to open)
SCRYPT_DEFAULTS = {"n": 2**17, "r": 8, "p": 1}
MIN_PASSPHRASE_CHARS = 12
_SCRYPT_AAD = b"onnxlock-key/1 scrypt"
_SCRYPT_SALT_SIZE = 16
_SCRYPT_FIELDS = ("type", "salt", "n", "r", "p", "nonce", "wrapped")
_SCRYPT_MIN_N, _SCRYPT_MAX_N = 2**12, 2**20
_SCRYPT_MAX_R, _SCRYPT_MAX_P = 32, 16
_SCRYPT_MAX_MEMORY = 2**30  # scrypt needs 128 * n * r bytes; a hostile file must not exhaust RAM
_STDLIB_SCRYPT = getattr(hashlib, "scrypt", None)  # absent where Python's OpenSSL lacks it


def check_passphrase(passphrase: str) -> str:
    """Return ``passphrase`` if it is long enough to protect a key against offline guessing."""
    if not isinstance(passphrase, str):
        raise InvalidArgumentError(f"passphrase must be a string, got {type(passphrase).__name__}")
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise InvalidArgumentError(f"passphrase must have at least {MIN_PASSPHRASE_CHARS} characters "
                                   f"(a few random words will do)")
    return passphrase


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
    if n >= 1 << 16 * r:  # RFC 7914's bound (OpenSSL refuses it as "memory limit exceeded")
        return f"scrypt n={n} must be below 2**{16 * r} when r={r}"
    if 128 * n * r > _SCRYPT_MAX_MEMORY:
        return f"scrypt n={n}, r={r} would need more than 1 GiB of memory"
    return None


def scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    """scrypt (RFC 7914), 32 bytes. The standard library's (OpenSSL's) lets other threads run
    while it works (about a second at the defaults): cryptography's, used only where Python's
    OpenSSL has no scrypt, holds the GIL throughout, stalling a service's every other thread."""
    if _STDLIB_SCRYPT is None:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
        return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)
    # the memory OpenSSL's scrypt needs, exactly (its default limit is 32 MiB)
    return _STDLIB_SCRYPT(passphrase, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=128 * r * (n + p + 2))


@first_use
def _first_aead() -> None:
    """AES-GCM's first use in a process: 1.6-2.7 ms here (OpenSSL builds its cipher tables)."""
    AESGCM(bytes(FILE_KEY_SIZE)).encrypt(bytes(NONCE_SIZE), b"", None)


class ScryptRecipient(Recipient):
    """A passphrase: the file key is wrapped under a key derived with scrypt."""

    type = "scrypt"

    def __init__(self, passphrase: str, *, n: int = SCRYPT_DEFAULTS["n"], r: int = 8, p: int = 1,
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
        """The wrap key's cipher. The standard library's scrypt lets other threads run, so the
        process's first uses of the load's libraries run beside it (``background.beside``)."""
        if _STDLIB_SCRYPT is None:
            return AESGCM(scrypt(self._passphrase, salt, n, r, p))
        return AESGCM(beside(scrypt, self._passphrase, salt, n, r, p))

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


X25519_SIZE = 32
KID_SIZE = 8
_X25519_INFO = b"onnxlock-key x25519"
_X25519_FIELDS = ("type", "kid", "epk", "wrapped")
_ZERO_NONCE = bytes(NONCE_SIZE)  # each wrap key is fresh (new ephemeral key) and used once


def key_id(public: bytes) -> str:
    """The recipient key id in a stanza: the first 8 bytes of SHA-256(public key), in hex."""
    return hashlib.sha256(public).hexdigest()[:2 * KID_SIZE]


def _wrap_key(shared: bytes, epk: bytes, public: bytes) -> AESGCM:
    return AESGCM(hkdf_sha256(shared, _X25519_INFO, salt=epk + public))


_DIRECT_X25519 = True  # False: cryptography's public constructors (tests)


@functools.cache
def _x25519_keys(direct: bool) -> tuple[Callable[[bytes], X25519PrivateKey], Callable[[bytes], X25519PublicKey]]:
    """cryptography's X25519 key constructors (private, public) from raw bytes. ``direct``: its Rust
    binding's, which its public ones call after importing its whole OpenSSL backend module (10 ms in
    a fresh process, a third of an identity load there) to ask whether X25519 is allowed (not under
    FIPS): the same check, asked directly; and without importing its public x25519 module (5-8 ms
    with the serialization module it imports), which only wraps them. The public ones where
    cryptography's internals differ."""
    if direct:
        from cryptography.hazmat.bindings._rust import openssl as binding  # (its AEADs imported it)
        raw, fips = getattr(binding, "x25519", None), getattr(binding, "is_fips_enabled", None)
        if raw is not None and fips is not None and not fips():
            return raw.from_private_bytes, raw.from_public_bytes
    from cryptography.hazmat.primitives.asymmetric import x25519
    return x25519.X25519PrivateKey.from_private_bytes, x25519.X25519PublicKey.from_public_bytes


def _private_key(raw: bytes) -> X25519PrivateKey:
    return _x25519_keys(_DIRECT_X25519)[0](raw)


def _public_key(raw: bytes) -> X25519PublicKey:
    return _x25519_keys(_DIRECT_X25519)[1](raw)


def _new_private_key() -> X25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    return X25519PrivateKey.generate()


class X25519Recipient(Recipient):
    """A device public key (age-style): ECDH with a fresh ephemeral key, HKDF-SHA256, AES-256-GCM."""

    type = "x25519"

    def __init__(self, public: bytes, *, _ephemeral: bytes | None = None):
        if not isinstance(public, bytes) or len(public) != X25519_SIZE:
            raise ValueError("an X25519 public key is 32 bytes")
        self.public = public
        self.kid = key_id(public)
        self._ephemeral = _ephemeral

    def wrap(self, file_key: bytes) -> dict:
        ephemeral = _new_private_key() if self._ephemeral is None else _private_key(self._ephemeral)
        epk = ephemeral.public_key().public_bytes_raw()
        try:
            shared = ephemeral.exchange(_public_key(self.public))
        except ValueError:  # a low-order point: nothing could ever unwrap this
            raise ValueError("not a usable X25519 public key") from None
        wrapped = _wrap_key(shared, epk, self.public).encrypt(_ZERO_NONCE, file_key, None)
        return {"type": self.type, "kid": self.kid, "epk": b64encode(epk), "wrapped": b64encode(wrapped)}

    def unwrap(self, stanza: dict) -> bytes | None:
        return None  # a public key opens nothing; see X25519Identity

    @classmethod
    def check_stanza(cls, stanza: dict, where: str) -> None:
        exact_fields(stanza, _X25519_FIELDS, where)
        kid = field(stanza, "kid", str, where)
        if len(kid) != 2 * KID_SIZE or any(c not in "0123456789abcdef" for c in kid):
            raise KeyFormatError(f"{where} field 'kid' must be {2 * KID_SIZE} lowercase hex digits")
        b64_field(stanza, "epk", X25519_SIZE, where)
        b64_field(stanza, "wrapped", _WRAPPED_SIZE, where)


class X25519Identity(X25519Recipient):
    """The private half: opens the stanzas whose key id is its own."""

    def __init__(self, private: bytes):
        if not isinstance(private, bytes) or len(private) != X25519_SIZE:
            raise ValueError("an X25519 private key is 32 bytes")
        self._private = _private_key(private)
        super().__init__(self._private.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(_new_private_key().private_bytes_raw())

    @property
    def private(self) -> bytes:
        return self._private.private_bytes_raw()

    def unwrap(self, stanza: dict) -> bytes | None:
        if stanza.get("type") != self.type or stanza.get("kid") != self.kid:
            return None
        epk = b64decode(stanza["epk"])
        try:
            shared = self._private.exchange(_public_key(epk))
            return _wrap_key(shared, epk, self.public).decrypt(_ZERO_NONCE, b64decode(stanza["wrapped"]), None)
        except (ValueError, InvalidTag):  # a low-order point, or not wrapped for us
            return None
