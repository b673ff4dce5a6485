"""lock_model: the owner's side. Run a protection pass, bind the key to the locked bytes, seal it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx

from .errors import InvalidArgumentError, OnnxlockError
from .filepair import NewFile, write_files
from .fileio import sha256_bytes
from .graph.io import load_model, parse_model
from .graph.patch import sample_counterfeits
from .guard import guarded
from .key import check_passphrase, load_recipient, seal
from .passes import WidenChannelsPass, restore
from .passes.confusion import DEFAULT_TRIES
from .passes.counterfeit import DEFAULT_STRATEGY
from .runtime.restore import restore_model, restored_digests
from .validate import check_calibration, check_lock_options, check_model_argument, check_path


FINGERPRINT_SIZE = 48


@dataclass
class LockedModel:
    """The locked model's bytes (safe to ship), the sealed key's bytes, and what the pass did."""

    model: bytes
    key: bytes
    report: dict


@guarded("locking {model}")
def lock_model(model: onnx.ModelProto | str | os.PathLike, *, passphrase: str | None = None,
               recipients: Iterable = (), expires: datetime | None = None, licensee: str | None = None,
               ratio: float = 0.02, strategy: str = DEFAULT_STRATEGY, seed: int | None = None,
               calibration: dict[str, np.ndarray] | None = None, kdf_params: dict | None = None,
               tries: int | None = DEFAULT_TRIES, progress: bool = False) -> LockedModel:
    """Lock ``model`` with confusion channels and seal the secret for ``passphrase`` and/or public
    ``recipients`` (paths, public key text or X25519Recipient), any one of which opens it.

    ``expires`` (timezone-aware) ends the key's validity; ``licensee`` records whose copy this is
    in the authenticated header (each call draws a fresh secret, so give no ``seed``)."""
    check_model_argument(model)
    check_lock_options(ratio=ratio, strategy=strategy, seed=seed, tries=tries, kdf_params=kdf_params)
    recipients = [load_recipient(r) for r in recipients]
    if passphrase is None and not recipients:
        raise InvalidArgumentError("passphrase or recipients: give a passphrase or at least one recipient")
    if passphrase is not None:
        check_passphrase(passphrase)
    if licensee is not None and seed is not None:
        raise InvalidArgumentError("a licensee's lock must come from a fresh secret: give no seed")
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    calibration = check_calibration(calibration, model)
    result = WidenChannelsPass(ratio=ratio, strategy=strategy, seed=seed, calibration=calibration,
                               tries=tries, progress=progress)(model)
    locked = result.model.SerializeToString()
    secret = dict(result.secret)
    restored = restore(parse_model(locked), result.secret, in_place=True)
    secret["restored_sha256"] = sha256_bytes(restored.SerializeToString())
    digests = restored_digests(restored, result.secret)  # per touched tensor: what the fast loader checks
    if digests is not None:
        secret["restored_tensors"] = digests
    # a sample of this lock's counterfeit values, for 'onnxlock trace' on a leaked copy
    secret["fingerprint"] = sample_counterfeits(result.model, result.secret["groups"], FINGERPRINT_SIZE,
                                                np.random.default_rng())
    key = seal(secret, model_sha256=sha256_bytes(locked), method=result.secret["method"],
               passphrase=passphrase, recipients=recipients, kdf_params=kdf_params, expires=expires,
               licensee=licensee)
    if passphrase is not None:
        restore_model(locked, key, passphrase)  # the key must open before anything is written
    return LockedModel(locked, key, result.report)


@guarded("writing {model_path} and {key_path}")
def write_locked(locked: LockedModel, model_path: str | os.PathLike, key_path: str | os.PathLike,
                 *, force: bool = False) -> None:
    """Write model and key as one (``filepair``: both or neither, even if killed); a key is never
    silently overwritten (it may be the only copy), and with ``force`` the old pair stays whole
    until the new one is complete."""
    if not isinstance(locked, LockedModel):
        raise InvalidArgumentError(f"locked must be the LockedModel lock_model returned, got {type(locked).__name__}")
    check_path("model_path", model_path)
    check_path("key_path", key_path)
    if Path(model_path).resolve() == Path(key_path).resolve():
        raise OnnxlockError("the locked model and the key must be different files")
    write_files([NewFile(model_path, locked.model, 0o644), NewFile(key_path, locked.key, 0o600)], overwrite=force)
