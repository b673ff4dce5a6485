"""lock_model: the owner's side. Run a protection pass, bind the key to the locked bytes, seal it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import OnnxlockError
from .fileio import atomic_write_bytes, sha256_bytes
from .graph.io import load_model, parse_model
from .key import open_key, seal
from .passes import WidenChannelsPass, restore
from .passes.confusion import DEFAULT_TRIES
from .passes.counterfeit import DEFAULT_STRATEGY


@dataclass
class LockedModel:
    """The locked model's bytes (safe to ship), the sealed key's bytes, and what the pass did."""

    model: bytes
    key: bytes
    report: dict


def lock_model(model: onnx.ModelProto | str | os.PathLike, *, passphrase: str, ratio: float = 0.02,
               strategy: str = DEFAULT_STRATEGY, seed: int | None = None,
               calibration: dict[str, np.ndarray] | None = None, kdf_params: dict | None = None,
               tries: int | None = DEFAULT_TRIES, progress: bool = False) -> LockedModel:
    """Lock ``model`` with confusion channels and seal the secret under ``passphrase``."""
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    result = WidenChannelsPass(ratio=ratio, strategy=strategy, seed=seed, calibration=calibration,
                               tries=tries, progress=progress)(model)
    locked = result.model.SerializeToString()
    result.model = None  # the bytes are all we keep: a large model is held once, not twice
    secret = dict(result.secret)
    restored = restore(parse_model(locked), result.secret, in_place=True).SerializeToString()  # the only restore
    secret["restored_sha256"] = sha256_bytes(restored)
    del restored
    key = seal(secret, model_sha256=sha256_bytes(locked), method=result.secret["method"],
               passphrase=passphrase, kdf_params=kdf_params)
    # the key must open, for these bytes, to this secret before anything is written
    if open_key(key, passphrase=passphrase, model_sha256=sha256_bytes(locked)) != json.loads(json.dumps(secret)):
        raise OnnxlockError("the sealed key does not open to its secret")
    return LockedModel(locked, key, result.report)


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
