"""scrypt's own work timed apart from a load, so that the benchmarks' "KDF excluded" figures leave
exactly the loader's work (imports only onnxlock's key module: bench_start.py times imports)."""

from __future__ import annotations

import time

from onnxlock.key import recipients


def timed_kdf() -> list[float]:
    """(wall, CPU) seconds of scrypt's own work in each derivation from now on in this process, so
    that 'KDF excluded' leaves exactly the loader's work.

    A process's first derivation also pays first-call costs (0.16-0.23 ms in a fresh process with
    the standard library's scrypt; 1.2-2.5 ms with cryptography's, which onnxlock used before),
    which are the loader's, not the work the KDF's parameters ask for. They are paid here, by a
    derivation at the smallest cost (n=2, r=1), timed, and taken off the first derivation's
    figure, so the loader is charged them as if it had paid them itself. (They used to be paid by
    that small derivation at the start of the load's first one: a load now runs its first uses in
    a thread beside the KDF, and a return from scrypt after microseconds, amid them, made the load
    wait for the GIL, which no real load does.) Earlier versions took out the first derivation
    whole, and so flattered the loader by that much on the small models (and, before that, also
    the AES-GCM unwrap's first use). The CPU time is the deriving thread's own: the first uses
    spend theirs in another thread, and stay in the loader's figure."""
    spent, real = [], recipients.scrypt
    begin, cpu = time.perf_counter(), time.thread_time()
    real(b"", bytes(16), 2, 1, 1)
    first_call = [(time.perf_counter() - begin, time.thread_time() - cpu)]  # until the first derivation takes it

    def timed(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
        begin, cpu = time.perf_counter(), time.thread_time()
        try:
            return real(passphrase, salt, n, r, p)
        finally:
            owed = first_call.pop() if first_call else (0.0, 0.0)
            spent.append((time.perf_counter() - begin - owed[0], time.thread_time() - cpu - owed[1]))
    recipients.scrypt = timed
    return spent
