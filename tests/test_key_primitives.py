"""The key's primitives where the loader does not call cryptography's public API: scrypt and HKDF
from the standard library (the same bytes; scrypt lets other threads run while it works), and
cryptography's X25519 constructors without the backend import its public ones make first."""

from __future__ import annotations

import threading
import time

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from onnxlock.hkdf import hkdf_sha256
from onnxlock.key import recipients

SALT = bytes(range(16))
PASSPHRASE = "pass phrase é".encode()


@pytest.mark.parametrize("n, r, p", [(2**12, 1, 1), (2**12, 8, 16), (2**15, 1, 1), (2**13, 3, 5), (2**12, 32, 2)])
@pytest.mark.parametrize("stdlib", [True, False], ids=["stdlib", "fallback"])
def test_scrypt_is_rfc_7914_on_either_implementation(monkeypatch, n, r, p, stdlib):
    if not stdlib:  # a Python whose OpenSSL has no scrypt: cryptography's
        monkeypatch.setattr(recipients, "_STDLIB_SCRYPT", None)
    elif recipients._STDLIB_SCRYPT is None:
        pytest.skip("this Python's OpenSSL has no scrypt")
    expected = Scrypt(salt=SALT, length=32, n=n, r=r, p=p).derive(PASSPHRASE)
    assert recipients.scrypt(PASSPHRASE, SALT, n, r, p) == expected


def test_rfc_7914_test_vector():
    """RFC 7914 section 12, the third vector (its first 32 bytes)."""
    key = recipients.scrypt(b"pleaseletmein", b"SodiumChloride", 2**14, 8, 1)
    assert key.hex() == "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"


def test_other_threads_run_while_the_kdf_works():
    """A thread deriving a key must not stop this one for more than a fraction of the derivation
    (cryptography's scrypt, the fallback, holds the GIL throughout: the gap is the whole of it)."""
    if recipients._STDLIB_SCRYPT is None:
        pytest.skip("this Python's OpenSSL has no scrypt")
    recipients.scrypt(PASSPHRASE, SALT, 2**12, 1, 1)  # first-use costs out of the way
    spans = []

    def derive():
        begin = time.perf_counter()
        recipients.scrypt(PASSPHRASE, SALT, 2**15, 8, 1)
        spans.append((begin, time.perf_counter()))
    worker = threading.Thread(target=derive)
    stamps = [time.perf_counter()]
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
    worker.join()
    (begin, end), = spans
    during = [stamp for stamp in stamps if begin <= stamp <= end]
    edges = [begin] + during + [end]
    longest = max(after - before for before, after in zip(edges, edges[1:]))
    assert longest < (end - begin) / 2, f"stopped for {longest * 1e3:.0f} of the KDF's {(end - begin) * 1e3:.0f} ms"


def test_hkdf_is_rfc_5869():
    """RFC 5869 test cases 1 (salt and info) and 3 (neither): the first 32 bytes of their OKM."""
    secret = bytes([0x0B] * 22)
    okm = hkdf_sha256(secret, bytes(range(0xF0, 0xFA)), salt=bytes(range(13)))
    assert okm.hex() == "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
    assert hkdf_sha256(secret, b"").hex() == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"


ALICE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"  # RFC 7748, section 6.1
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "public-api"])
def test_x25519_is_rfc_7748_either_way(monkeypatch, direct):
    monkeypatch.setattr(recipients, "_DIRECT_X25519", direct)  # False: cryptography's public classes
    if direct and recipients._x25519_keys(True) == recipients._x25519_keys(False):
        pytest.skip("this cryptography has no direct X25519 constructors")
    alice = recipients._private_key(bytes.fromhex(ALICE))
    assert alice.public_key().public_bytes_raw().hex() == ALICE_PUBLIC
    assert alice.exchange(recipients._public_key(bytes.fromhex(BOB_PUBLIC))).hex() == SHARED


def test_an_identity_opens_what_was_sealed_for_it_either_way(monkeypatch):
    identity = recipients.X25519Identity(bytes.fromhex(ALICE))
    stanza = recipients.X25519Recipient(identity.public).wrap(bytes(range(32)))
    assert identity.unwrap(stanza) == bytes(range(32))
    monkeypatch.setattr(recipients, "_DIRECT_X25519", False)
    assert recipients.X25519Identity(bytes.fromhex(ALICE)).unwrap(stanza) == bytes(range(32))
    low_order = dict(stanza, epk="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")  # the all-zero point
    assert identity.unwrap(low_order) is None
