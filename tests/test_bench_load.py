"""The load benchmark's 'KDF excluded': it takes out scrypt's own work, not its first-call costs."""

from __future__ import annotations

import sys
from pathlib import Path

from onnxlock.key import recipients

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import bench_load  # noqa: E402


def test_timed_kdf_derives_the_same_key_and_times_only_the_real_derivation(monkeypatch):
    real = recipients.Scrypt
    monkeypatch.setattr(recipients, "Scrypt", real)  # timed_kdf replaces it: undone after the test
    calls = []

    class Counting:  # (Scrypt cannot be subclassed)
        def __init__(self, **kwargs):
            self._kdf = real(**kwargs)

        def derive(self, key_material: bytes) -> bytes:
            calls.append(self)
            return self._kdf.derive(key_material)
    monkeypatch.setattr(bench_load.recipients, "Scrypt", Counting)
    spent = bench_load.timed_kdf()
    salt = bytes(range(16))
    key = recipients.Scrypt(salt=salt, length=32, n=2**4, r=8, p=1).derive(b"passphrase")
    assert key == real(salt=salt, length=32, n=2**4, r=8, p=1).derive(b"passphrase")
    assert len(calls) == 2  # the smallest derivation first (its first-call costs stay the loader's), then the real one
    assert len(spent) == 1 and spent[0][0] > 0  # only the real one is taken out
