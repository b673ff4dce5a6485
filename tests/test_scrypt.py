"""The passphrase KDF: the standard library's scrypt gives cryptography's bytes, and lets other
threads run while it works (a service's other threads are not stalled by a load)."""

from __future__ import annotations

import threading
import time

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

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
