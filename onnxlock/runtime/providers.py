"""Execution providers: only names onnxruntime knows, CUDA by default when present, one warning on fallback."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import onnxruntime as ort

from ..errors import InvalidArgumentError, OnnxlockError

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
SHORT_NAMES = {"cpu": [CPU], "cuda": [CUDA, CPU]}
CHOICES = ("auto", *SHORT_NAMES)

Provider = str | tuple[str, dict]


class ProviderFallbackWarning(UserWarning):
    """The session was asked for CUDA but runs on the CPU."""


def _name(provider: Provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def cpu_only(providers: Sequence[Provider]) -> bool:
    """Whether every provider is onnxruntime's CPU provider."""
    return all(_name(provider) == CPU for provider in providers)


def requested_providers(requested: str | Sequence[Provider] | None = "auto") -> list[Provider]:
    """The providers asked for, as a list: 'auto'/None (CUDA when this onnxruntime offers it),
    'cpu', 'cuda', one full provider name, or a list of names and (name, options) pairs.
    Names onnxruntime does not know are an error (no silent fallback)."""
    if requested is None or requested == "auto":
        return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]
    if isinstance(requested, str):
        requested = SHORT_NAMES.get(requested.lower(), [requested])
    if not isinstance(requested, (list, tuple)) or not requested:
        raise InvalidArgumentError("providers must be 'auto', 'cpu', 'cuda', a provider name or a list of them")
    for provider in requested:
        if isinstance(provider, tuple) and not (len(provider) == 2 and isinstance(provider[1], dict)):
            raise InvalidArgumentError("a provider with options is a (name, dict) pair")
        name = _name(provider)
        if not isinstance(name, str) or name not in ort.get_all_providers():
            raise InvalidArgumentError(f"unknown execution provider {str(name)[:64]!r} "
                                f"(use {', '.join(CHOICES)} or one of onnxruntime's provider names)")
    return list(requested)


def select_providers(requested: str | Sequence[Provider] | None = "auto") -> list[Provider]:
    """``requested_providers``, each of which this onnxruntime must offer."""
    chosen = requested_providers(requested)
    available = ort.get_available_providers()
    for name in map(_name, chosen):
        if name not in available:
            hint = " (install onnxruntime-gpu: pip install 'onnxlock[gpu]')" if name == CUDA else ""
            raise OnnxlockError(f"{name} requested but this onnxruntime does not offer it{hint}")
    return chosen


def warn_on_fallback(chosen: list[Provider], session: ort.InferenceSession) -> None:
    """One warning line when the first provider asked for is not the one the session got."""
    wanted, got = _name(chosen[0]), session.get_providers()[0]
    if wanted != got:
        warnings.warn(f"onnxlock: {wanted} unavailable, running on {got}", ProviderFallbackWarning, stacklevel=3)
