"""load_session: the one call a service needs to run a locked model.

The restored model only ever exists in memory, and session options that would write it (or a
compiled form, a profile, its shapes) to disk are refused. What is verified:

* by default (``verify="fast"``): the locked file against the key, by the Poly1305 tag the secret
  records (``binding``; keys written before it: by the SHA-256 in the key header), computed in a
  thread while the session is built (the session is discarded on a mismatch), and the key's authenticity
  (AES-GCM). Each tensor a method restores by a shortcut that is not its own restore code
  (advparams) is compared with the per-tensor digest recorded at lock time, in a thread that
  overlaps session creation (on a mismatch the session is discarded and the full path decides).
  Tensors confusion channels and sign flips touch are not re-hashed: their shortcuts are the
  passes' own code (``narrow_array``, ``flip_signs``) on bytes the file hash binds, with a secret
  the key's AES-GCM authenticates. Untouched tensors are bound by the file hash, since onnxruntime
  reads them from the file; an external data file by its tag (or hash) and size in the key.
* ``verify="full"``: the file hash before anything is parsed, then the whole model restored,
  serialized and compared with the restored-model hash the key records (the slow path).
Keys written before per-tensor digests, and secrets of methods the fast path does not know,
always take the full path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from .. import binding
from ..background import Meanwhile, ahead
from ..errors import KeyFormatError, ModelFormatError, ModelMismatchError, OnnxlockError
from ..filepair import settle
from ..guard import guarded
from ..key import SealedKey, X25519Identity, parse_key
from ..key.identity import identity_from_env
from ..validate import check_session_arguments
from . import fast
from .options import check_entries, check_safe
from .providers import Provider, cpu_only, requested_providers, select_providers, warn_on_fallback
from .restore import check_external, external_data, open_secret, restore_checked
from .source import Input, LockedSource, read_bytes
from .warmup import first_session

PASSPHRASE_ENV = "ONNXLOCK_PASSPHRASE"
VERIFY = ("fast", "full")
_TELEMETRY = threading.Lock()
_telemetry_off = False

Passphrase = str | Callable[[], str] | None
Identity = str | os.PathLike | bytes | X25519Identity | Callable[[], object] | None
# what onnxruntime raises when it cannot load or run a model (not a bug of ours: the model, or the machine)
ORT_ERRORS = (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException, ort_state.EPFail,
              ort_state.InvalidGraph, ort_state.NotImplemented, ort_state.EngineError)


def resolve_passphrase(passphrase: Passphrase, *, required: bool = True) -> str | None:
    """The passphrase from the argument, a callback, or ONNXLOCK_PASSPHRASE (None if not ``required``)."""
    if callable(passphrase):
        passphrase = passphrase()
    if passphrase is not None:
        if not isinstance(passphrase, str):
            raise OnnxlockError("the passphrase must be a string")
        return passphrase
    from_env = os.environ.get(PASSPHRASE_ENV)
    if not from_env and not required:
        return None
    if not from_env:
        raise OnnxlockError(f"no passphrase given (pass passphrase= or set {PASSPHRASE_ENV})")
    return from_env


def resolve_identity(identity: Identity, passphrase: Passphrase) -> object:
    """The identity from the argument or a callback; when neither an identity nor a passphrase is
    passed, from the environment (``identity_from_env``: ONNXLOCK_IDENTITY or ONNXLOCK_IDENTITY_FILE)."""
    if callable(identity):
        identity = identity()
        if identity is None:
            raise OnnxlockError("the identity callback returned None")
    elif identity is None and passphrase is None:
        identity = identity_from_env()
    return identity


def disable_telemetry() -> None:
    """Turn off onnxruntime's telemetry events for this process (once; the switch is global)."""
    global _telemetry_off
    with _TELEMETRY:
        if not _telemetry_off:
            ort.disable_telemetry_events()
            _telemetry_off = True


@guarded("loading {locked} with {key}")
def load_session(locked: Input, key: Input, *, passphrase: Passphrase = None,
                 providers: str | Sequence[Provider] | None = None,
                 sess_options: ort.SessionOptions | None = None, verify: str = "fast",
                 identity: Identity = None) -> ort.InferenceSession:
    """Open the key, restore the model in memory and return an onnxruntime InferenceSession.

    ``locked`` and ``key`` are paths, bytes or binary file objects. The key opens with
    ``identity`` (an identity file's path, bytes or text, or a callable returning one; a protected
    one takes ``passphrase``) or with ``passphrase``: a string, a callable returning one, or None
    for ONNXLOCK_PASSPHRASE. With neither given, an identity in ONNXLOCK_IDENTITY (its text) or
    ONNXLOCK_IDENTITY_FILE (its path) is used, with ONNXLOCK_PASSPHRASE if set.
    ``sess_options`` is copied, never changed (its attributes and the config entries in
    ``options.CARRIED_CONFIG_ENTRIES``). Thread-safe: concurrent calls share nothing but
    onnxruntime's environment. The first call in a process builds a one-node CPU session in a
    thread while the key opens (``warmup.py``: onnxruntime's start-up), joined before it returns.
    """
    if verify not in VERIFY:
        raise OnnxlockError(f"verify must be one of {', '.join(VERIFY)}")
    check_session_arguments(passphrase, sess_options)
    check_safe(sess_options, requested_providers(providers))
    chosen = select_providers(providers)
    disable_telemetry()
    starting = ahead(first_session)  # onnxruntime's start-up, while the key opens (the first load only)
    try:
        return _load(locked, key, passphrase, chosen, sess_options, verify, identity)
    finally:
        starting.join()


def _load(locked: Input, key: Input, passphrase: Passphrase, chosen: list, sess_options: ort.SessionOptions | None,
          verify: str, identity: Identity) -> ort.InferenceSession:
    if isinstance(key, (str, os.PathLike)):
        settle(key)  # finish or undo a lock that was interrupted while writing this pair
    sealed = parse_key(read_bytes(key, "key", KeyFormatError))  # parsed once: opened, then read for the binding
    identity = resolve_identity(identity, passphrase)
    credentials = Credentials(resolve_passphrase(passphrase, required=identity is None), identity,
                              Meanwhile(check_entries, sess_options) if sess_options is not None else None)
    source = LockedSource(locked, ModelFormatError, defer=verify == "fast")
    try:
        session = _create(source, sealed, credentials, chosen, sess_options, verify)
    except ORT_ERRORS as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxlockError(f"onnxruntime cannot load the locked model: {first}") from None
    finally:
        source.close()
    warn_on_fallback(chosen, session)
    return session


class Credentials:
    """What opens a key: a passphrase and/or an identity. ``checks``: what must pass before the
    secret is used, run beside the passphrase's KDF (its reads of onnxruntime's unset entries
    cost ~0.5 ms), or else once the key is open."""

    __slots__ = ("passphrase", "identity", "checks")

    def __init__(self, passphrase: str | None, identity: object = None, checks: Meanwhile | None = None):
        self.passphrase, self.identity, self.checks = passphrase, identity, checks

    def open(self, key: SealedKey, model_sha256: str | None) -> dict:
        with self.checks or nullcontext():
            return open_secret(key, self.passphrase, model_sha256, self.identity)


def _create(source: LockedSource, key: SealedKey, credentials: Credentials, providers: list,
            sess_options: ort.SessionOptions | None, verify: str) -> ort.InferenceSession:
    if verify == "fast":
        try:
            secret = credentials.open(key, None)
            prepared = fast.prepare(source, secret, sess_options, cpu_only(providers))
            session = None if prepared is None else _fast_session(source, prepared, providers, secret)
        except Exception:
            _check_binding(source, key)  # a key for another model, or an altered file, says so first
            raise
        if session is not None:
            verified = prepared.verified()  # digest checks overlapped creation
            del prepared
            _check_binding(source, key)  # after creation: hashing overlapped it
            if verified:
                return session
            del session  # a shortcut disagreed with its digest: the full path decides
    digest = source.sha256()
    secret = credentials.open(key, digest)
    _, data = restore_checked(bytes(source.buffer), secret, external_data(source, secret))
    if data is None:
        raise OnnxlockError("the restored model is over 2 GiB: load it with verify='fast'")
    return ort.InferenceSession(data, sess_options, providers=providers)


def _fast_session(source: LockedSource, prepared: fast.Prepared, providers: list, secret: dict) -> ort.InferenceSession:
    """The session from a prepared skeleton; its external data file's hash (computed in a thread
    while the session was built) is checked before the session is returned. If the weights lent
    in place were refused (a graph optimiser wanted to read one), it is created again with them
    copied in."""
    source.start_hash(binding.expected(secret, "model"))  # overlaps the creation, not the restore before it
    if prepared.data is not None:
        prepared.data.start_hash(binding.expected(secret, "data"))
    try:
        try:
            session = ort.InferenceSession(prepared.model, prepared.options, providers=providers)
            session._onnxlock_lent = prepared.lent  # onnxruntime computes with them: they live as long
        except ORT_ERRORS:
            if prepared.copied is None:
                raise
            model, options, during = prepared.copied()
            session = ort.InferenceSession(model, options, providers=providers)
            del during
        if prepared.data is not None:
            data = prepared.data
            _check_file(data, lambda actual: check_external(actual, len(data.buffer), secret),
                        "the locked model's external data file matches its key's SHA-256 but not the tag "
                        "the key's secret records (a key re-sealed with a wrong tag)")
        return session
    finally:
        if prepared.data is not None:
            prepared.data.close()


def _check_binding(source: LockedSource, key: SealedKey) -> None:
    """The locked file against the key (``_check_file``; the SHA-256 against the key header)."""
    def against_header(actual: str) -> None:
        expected = key.header["model_sha256"]
        if actual != expected:
            raise ModelMismatchError(f"key belongs to another model (key is for sha256 {expected[:8]}..., "
                                     f"this model is {actual[:8]}...), or the locked file was altered")
    _check_file(source, against_header, "the locked model matches its key's SHA-256 but not the tag the key's "
                "secret records (a key re-sealed with a wrong tag)")


def _check_file(source: LockedSource, check_sha256: Callable[[str], None], wrong_tag: str) -> None:
    """A file against its key: by the Poly1305 tag the secret records, if it was computed
    (``start_hash``); else, and to say what is wrong, by its SHA-256 through ``check_sha256``,
    which raises on a mismatch. A file whose SHA-256 matches but whose tag does not is refused
    with ``wrong_tag``."""
    matched = source.tag_matches()
    if matched:
        return
    check_sha256(source.sha256())
    if matched is False:
        raise ModelMismatchError(wrong_tag)
