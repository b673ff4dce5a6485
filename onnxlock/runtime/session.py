"""load_session: the one call a service needs to run a locked model.

The restored model only ever exists in memory: onnxruntime gets the serialized bytes, and session
options that would write the model (or a compiled form of it) to disk are refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import onnxruntime as ort

from ..errors import KeyFormatError, ModelFormatError, OnnxlockError, UnsafeOptionError
from ..fileio import read_input
from .restore import unlock_bytes

PASSPHRASE_ENV = "ONNXLOCK_PASSPHRASE"
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
# provider options that persist a compiled model (which would be the restored weights) on disk
UNSAFE_PROVIDER_OPTIONS = ("trt_engine_cache_enable", "trt_dump_ep_context_model", "trt_timing_cache_enable")
UNSAFE_CONFIG_ENTRIES = ("ep.context_enable",)

Provider = str | tuple[str, dict]


def select_providers(requested: str | Sequence[Provider] | None = "auto") -> list[Provider]:
    """'auto'/None: CUDA when onnxruntime-gpu sees a GPU, else CPU; 'cpu'/'cuda' or an explicit list."""
    available = ort.get_available_providers()
    if requested in (None, "auto"):
        return [CUDA, CPU] if CUDA in available else [CPU]
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise OnnxlockError("CUDA requested but this onnxruntime has no CUDAExecutionProvider "
                                    "(install onnxruntime-gpu)")
        return [CUDA, CPU]
    return list(requested)


def check_safe(sess_options: ort.SessionOptions | None, providers: list[Provider]) -> None:
    """Refuse options that would write the restored model, or an engine compiled from it, to disk."""
    if sess_options is not None:
        if sess_options.optimized_model_filepath:
            raise UnsafeOptionError("SessionOptions.optimized_model_filepath would write the restored model to disk")
        for entry in UNSAFE_CONFIG_ENTRIES:
            if _config_entry(sess_options, entry) not in ("", "0"):
                raise UnsafeOptionError(f"session config '{entry}' would write the restored model to disk")
    for provider in providers:
        options = provider[1] if isinstance(provider, tuple) else {}
        for name in UNSAFE_PROVIDER_OPTIONS:
            if str(options.get(name, "")).lower() in ("1", "true"):
                raise UnsafeOptionError(f"provider option '{name}' would write a compiled model to disk")


def _config_entry(options: ort.SessionOptions, key: str) -> str:
    """A session config entry, '' when unset (onnxruntime raises for a missing key)."""
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:
        return ""


def resolve_passphrase(passphrase: str | None, *, required: bool = True) -> str | None:
    if passphrase is not None:
        return passphrase
    from_env = os.environ.get(PASSPHRASE_ENV)
    if not from_env and not required:
        return None
    if not from_env:
        raise OnnxlockError(f"no passphrase given (pass passphrase= or set {PASSPHRASE_ENV})")
    return from_env


def load_session(locked_path: str | os.PathLike, key_path: str | os.PathLike, *, passphrase: str | None = None,
                 providers: str | Sequence[Provider] | None = None,
                 sess_options: ort.SessionOptions | None = None, identity=None) -> ort.InferenceSession:
    """Decrypt the key, restore the model in memory and return an onnxruntime InferenceSession.

    The key opens with ``identity`` (an identity file's path or bytes; a protected one takes
    ``passphrase``) or with ``passphrase`` (else $ONNXLOCK_PASSPHRASE)."""
    chosen = select_providers(providers)
    check_safe(sess_options, chosen)
    locked = read_input(locked_path, "locked model", ModelFormatError)
    key = read_input(key_path, "key", KeyFormatError)
    restored = unlock_bytes(locked, key, resolve_passphrase(passphrase, required=identity is None),
                            identity=identity)
    return ort.InferenceSession(restored, sess_options, providers=chosen)
