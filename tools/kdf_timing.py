"""scrypt's own work timed apart from a load, so that the benchmarks' "KDF excluded" figures leave
exactly the loader's work (imports only onnxlock's key module: bench_start.py times imports)."""

from __future__ import annotations

import time

from onnxlock.key import recipients


def timed_kdf() -> list[float]:
    """(wall, CPU) seconds of scrypt's own work in each derivation from now on in this process, so
    that 'KDF excluded' leaves exactly the loader's work. The process's first derivation is
    preceded by one at the smallest cost (n=2, r=1), timed as the loader's: it pays the KDF's
    first-call costs (0.16-0.23 ms in a fresh process with the standard library's scrypt; 1.2-2.5
    ms with cryptography's, which onnxlock used before), so only the work the KDF's parameters ask
    for is taken out. Earlier versions took out the first derivation whole, and so flattered the
    loader by that much on the small models (and, before that, also the AES-GCM unwrap's first use).
    The CPU time is the deriving thread's own: the first uses a load runs beside the KDF
    (``onnxlock.background``) spend theirs in another thread, and stay in the loader's figure."""
    spent, real, started = [], recipients.scrypt, []

    def timed(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
        if not started:  # first-call costs: not taken out
            real(passphrase, salt, 2, 1, 1)
            started.append(True)
        begin, cpu = time.perf_counter(), time.thread_time()
        try:
            return real(passphrase, salt, n, r, p)
        finally:
            spent.append((time.perf_counter() - begin, time.thread_time() - cpu))
    recipients.scrypt = timed
    return spent
