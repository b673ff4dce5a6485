"""lock_model: the owner's side. Run a protection pass, bind the key to the locked bytes, seal it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx

from .errors import OnnxlockError
from .fileio import atomic_write_bytes, sha256_bytes
from .graph.io import load_model, parse_model
from .graph.patch import sample_counterfeits
from .key import check_passphrase, load_recipient, seal
from .passes import WidenChannelsPass, restore
from .passes.confusion import DEFAULT_TRIES
from .passes.counterfeit import DEFAULT_STRATEGY
from .runtime.restore import restore_model


FINGERPRINT_SIZE = 48


@dataclass
class LockedModel:
    """The locked model's bytes (safe to ship), the sealed key's bytes, and what the pass did."""

    model: bytes
    key: bytes
    report: dict


def lock_model(model: onnx.ModelProto | str | os.PathLike, *, passphrase: str | None = None,
               recipients: Iterable = (), expires: datetime | None = None, licensee: str | None = None,
               ratio: float = 0.02, strategy: str = DEFAULT_STRATEGY, seed: int | None = None,
               calibration: dict[str, np.ndarray] | None = None, kdf_params: dict | None = None,
               tries: int | None = DEFAULT_TRIES, progress: bool = False) -> LockedModel:
    """Lock ``model`` with confusion channels and seal the secret for ``passphrase`` and/or public
    ``recipients`` (paths, public key text or X25519Recipient), any one of which opens it.

    ``expires`` (timezone-aware) ends the key's validity; ``licensee`` records whose copy this is
    in the authenticated header (each call draws a fresh secret, so give no ``seed``)."""
    recipients = [load_recipient(r) for r in recipients]
    if passphrase is None and not recipients:
        raise OnnxlockError("give a passphrase or at least one recipient")
    if passphrase is not None:
        check_passphrase(passphrase)
    if licensee is not None and seed is not None:
        raise OnnxlockError("a licensee's lock must come from a fresh secret: give no seed")
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    result = WidenChannelsPass(ratio=ratio, strategy=strategy, seed=seed, calibration=calibration,
                               tries=tries, progress=progress)(model)
    locked = result.model.SerializeToString()
    secret = dict(result.secret)
    secret["restored_sha256"] = sha256_bytes(
        restore(parse_model(locked), result.secret, in_place=True).SerializeToString())
    # a sample of this lock's counterfeit values, for 'onnxlock trace' on a leaked copy
    secret["fingerprint"] = sample_counterfeits(result.model, result.secret["groups"], FINGERPRINT_SIZE,
                                                np.random.default_rng())
    key = seal(secret, model_sha256=sha256_bytes(locked), method=result.secret["method"],
               passphrase=passphrase, recipients=recipients, kdf_params=kdf_params, expires=expires,
               licensee=licensee)
    if passphrase is not None:
        restore_model(locked, key, passphrase)  # the key must open before anything is written
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
