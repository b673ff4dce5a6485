"""lock_model: the owner's side. Run a protection pass, bind the key to the locked bytes, seal it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import OnnxlockError
from .fileio import atomic_write_bytes, sha256_bytes
from .graph.io import load_model, parse_model
from .graph.normalize import normalize
from .key import seal
from .passes import PerturbWeightsPass, WidenChannelsPass, restore, stack_secrets
from .passes.advparams import DEFAULT_MAX_WEIGHTS
from .passes.confusion import DEFAULT_TRIES
from .passes.counterfeit import DEFAULT_STRATEGY
from .runtime.restore import restore_model


@dataclass
class LockedModel:
    """The locked model's bytes (safe to ship), the sealed key's bytes, and what the pass did."""

    model: bytes
    key: bytes
    report: dict


METHODS = ("confusion", "advparams")


def parse_methods(method: str) -> list[str]:
    """``"confusion,advparams"`` -> the passes in application order; unknown or repeated ones refused."""
    methods = [m.strip() for m in method.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or len(set(methods)) != len(methods) or not methods:
        raise OnnxlockError(f"method must be one or more of {', '.join(METHODS)}, comma-separated, each once")
    return methods


def lock_model(model: onnx.ModelProto | str | os.PathLike, *, passphrase: str, ratio: float = 0.02,
               strategy: str = DEFAULT_STRATEGY, seed: int | None = None,
               calibration: dict[str, np.ndarray] | None = None, kdf_params: dict | None = None,
               tries: int | None = DEFAULT_TRIES, progress: bool = False, method: str = "confusion",
               max_weights: int = DEFAULT_MAX_WEIGHTS, labels: np.ndarray | None = None) -> LockedModel:
    """Lock ``model`` with the passes named in ``method`` (applied in that order, e.g.
    ``"confusion,advparams"``) and seal their stacked secret under ``passphrase``."""
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    methods = parse_methods(method)
    current, secrets, reports = model, [], []
    for name in methods:
        if name == "confusion":
            result = WidenChannelsPass(ratio=ratio, strategy=strategy, seed=seed, calibration=calibration,
                                       tries=tries, progress=progress)(current)
        else:  # chosen on the original, so that stripping an earlier lock leaves this one in place
            advparams = PerturbWeightsPass(max_weights=max_weights, calibration=calibration, labels=labels,
                                           seed=seed, progress=progress)
            result = advparams(model, onto=normalize(current) if secrets else None, earlier=secrets)
        current = result.model
        secrets.append(result.secret)
        reports.append(result.report)
    locked = current.SerializeToString()
    secret = dict(secrets[0]) if len(secrets) == 1 else stack_secrets(secrets)
    secret["restored_sha256"] = sha256_bytes(
        restore(parse_model(locked), secret, in_place=True).SerializeToString())
    key = seal(secret, model_sha256=sha256_bytes(locked), method=",".join(methods),
               passphrase=passphrase, kdf_params=kdf_params)
    restore_model(locked, key, passphrase)  # the key must open before anything is written
    report = reports[0] if len(reports) == 1 else {"method": method, "layers": reports}
    return LockedModel(locked, key, report)


def write_locked(locked: LockedModel, model_path: str | os.PathLike, key_path: str | os.PathLike,
                 *, force: bool = False) -> None:
    """Write model and key atomically; a key is never silently overwritten (it may be the only copy)."""
    model_path, key_path = Path(model_path), Path(key_path)
    if model_path.resolve() == key_path.resolve():
        raise OnnxlockError("the locked model and the key must be different files")
    for path in (model_path, key_path):
        if path.exists() and not force:
            raise OnnxlockError(f"{path} exists (use --force to overwrite)")
    atomic_write_bytes(model_path, locked.model, mode=0o644)
    try:
        atomic_write_bytes(key_path, locked.key, mode=0o600)
    except BaseException:
        model_path.unlink(missing_ok=True)
        raise
