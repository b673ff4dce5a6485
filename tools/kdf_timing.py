"""scrypt's own work timed apart from a load, so that the benchmarks' "KDF excluded" figures leave
exactly the loader's work (imports only onnxlock's key module: bench_start.py times imports)."""

from __future__ import annotations

import time

from onnxlock.key import recipients


def timed_kdf() -> list[float]:
    """(wall, CPU) seconds of scrypt's own work in each derivation from now on in this process, so
    that 'KDF excluded' leaves exactly the loader's work. The process's first derivation is
    preceded by one at the smallest cost (n=2, r=1), timed as the loader's: it pays the first-call
    costs (OpenSSL's start-up, the KDF's lookup: 1.2-2.5 ms in a fresh process, which the AES-GCM
    baseline pays as well), so only the work the KDF's parameters ask for is taken out. Earlier
    versions took out the first derivation whole, and so flattered the loader by that much on the
    small models (and, before that, also the AES-GCM unwrap's first use)."""
    spent, real, started = [], recipients.Scrypt, []

    class Timed:
        def __init__(self, *args, **kwargs):
            self._kdf, self._salt = real(*args, **kwargs), kwargs.get("salt", bytes(16))

        def derive(self, key_material: bytes) -> bytes:
            if not started:  # first-call costs: not taken out
                real(salt=self._salt, length=32, n=2, r=1, p=1).derive(key_material)
                started.append(True)
            begin, cpu = time.perf_counter(), time.process_time()
            try:
                return self._kdf.derive(key_material)
            finally:
                spent.append((time.perf_counter() - begin, time.process_time() - cpu))
    recipients.Scrypt = Timed
    return spent
