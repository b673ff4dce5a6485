"""lock_model: the owner's side. Run a protection pass, bind the key to the locked bytes, seal it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx

from . import binding
from .errors import InvalidArgumentError, OnnxlockError, UnsupportedGraphError
from .filepair import NewFile, write_files
from .fileio import sha256_bytes
from .graph.external import attach, check_location, split, too_large
from .graph.io import load_model, parse_model
from .graph.normalize import normalize
from .graph.patch import sample_counterfeits, sample_values
from .graph.values import read_values
from .guard import guarded
from .key import check_passphrase, load_recipient, open_key, seal
from .passes import FlipSignsPass, MaskPass, PerturbWeightsPass, WidenChannelsPass, restore, secret_layers, stack_secrets
from .passes.advparams import DEFAULT_MAX_WEIGHTS
from .passes.base import PassResult
from .passes.confusion import DEFAULT_TRIES
from .passes.counterfeit import DEFAULT_STRATEGY
from .runtime.inplace import restore_serialized
from .runtime.restore import restored_digests
from .runtime.touches import tensor_digest
from .validate import check_calibration, check_lock_options, check_model_argument, check_path


FINGERPRINT_SIZE = 48


@dataclass
class LockedModel:
    """The locked model's bytes (safe to ship), the sealed key's bytes, and what the pass did; a
    model with external data also has its weights' bytes, to be written as ``data_name`` beside it."""

    model: bytes
    key: bytes
    report: dict
    data: bytes | None = None
    data_name: str | None = None

    def layer_report(self, method: str) -> dict | None:
        """The report of the pass ``method`` in this lock (None if it was not applied)."""
        return next((layer for layer in self.report.get("layers", [self.report]) if layer.get("method") == method),
                    None)


# the passes lock_model can stack, in the order they are applied (restored in reverse)
METHODS = ("confusion", "advparams", "signflip", "mask")
DEFAULT_METHOD = "mask"
# passes a stack may do without when they cannot apply to a model (the others still lock it);
# asked for alone, they fail with their reason
OPTIONAL_IN_STACK = ("confusion",)
KEYED = {keyed.method: keyed for keyed in (FlipSignsPass, MaskPass)}  # passes that XOR every weight with a keystream


def parse_methods(method: str) -> list[str]:
    """``"signflip,confusion"`` -> the passes in application order (METHODS order); unknown or
    repeated ones refused."""
    methods = [m.strip() for m in str(method).split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or len(set(methods)) != len(methods) or not methods:
        raise InvalidArgumentError(f"method must be one or more of {', '.join(METHODS)}, comma-separated, each once")
    return sorted(methods, key=METHODS.index)


@dataclass
class LockOptions:
    """What the passes need besides the model."""

    ratio: float | None
    strategy: str
    seed: int | None
    calibration: dict[str, np.ndarray] | None
    tries: int | None
    progress: bool
    max_weights: int
    labels: np.ndarray | None
    stealth: bool  # signs flipped or values masked too: counterfeits need not be loud, only ordinary-looking
    peel_guard: bool = True  # advparams stacked on confusion: checked against the blind peel


def _run_pass(name: str, original: onnx.ModelProto, current: onnx.ModelProto, earlier: list[dict],
              options: LockOptions) -> PassResult:
    """Apply pass ``name`` to ``current`` (``original`` already locked by the ``earlier`` secrets)."""
    if name == "confusion":
        return WidenChannelsPass(ratio=options.ratio, strategy=options.strategy, seed=options.seed,
                                 calibration=options.calibration, tries=options.tries,
                                 progress=options.progress, stealth=options.stealth)(current)
    if name == "advparams":  # chosen on the original, so that stripping an earlier lock leaves this one
        advparams = PerturbWeightsPass(max_weights=options.max_weights, calibration=options.calibration,
                                       labels=options.labels, seed=options.seed, progress=options.progress,
                                       peel_guard=options.peel_guard)
        return advparams(original, onto=normalize(current) if earlier else None, earlier=earlier)
    return KEYED[name]()(normalize(current) if not earlier else current, in_place=True)  # a copy of our own


def _plan_keyed(name: str, model: onnx.ModelProto) -> tuple[PassResult, bool]:
    """Keyed pass ``name`` on its own: planned on the normalised model, which is returned unlocked
    with True when every tensor to lock holds raw bytes (the XOR is then applied to the serialized
    model, ``_apply_serialized``: no second copy of the weights in protobuf's arena), else locked here."""
    normalized = normalize(model)
    keyed = KEYED[name]()
    secret, report = keyed.plan(normalized)
    raw = {t.name for t in normalized.graph.initializer if t.HasField("raw_data")}
    if raw.issuperset(secret["tensors"]):
        return PassResult(normalized, secret, report), True
    return PassResult(keyed.restore(normalized, secret, in_place=True), secret, report), False


def _apply_serialized(original: bytes, data: bytearray | None, location: str | None,
                      secret: dict) -> tuple[bytes, bytearray | None, list]:
    """The serialized ``original`` (and its external ``data``) locked by the keyed ``secret``, whose
    XOR is its own restore, and the lock's fingerprint."""
    inside = restore_serialized(original, secret, data, in_place=True)  # split's bytearray: XORed as it is
    if inside is None:  # (plain raw bytes were checked: the scanner met a layout it leaves alone)
        model = restore(_parsed(original, data, location), secret, in_place=True)
        locked, data = split(model, location) if location else (model.SerializeToString(), None)
        return locked, data, _fingerprint(model, [secret])
    model, weights, arrays = inside
    fingerprint = sample_values(arrays, secret["tensors"], FINGERPRINT_SIZE, np.random.default_rng())
    return bytes(model), weights, fingerprint


def _fingerprint(locked: onnx.ModelProto, layers: list[dict]) -> list | None:
    """A sample of values only this lock has, for 'onnxlock trace' on a leaked copy: its counterfeit
    values, else its masked or sign-flipped ones (None when the lock has neither)."""
    rng = np.random.default_rng()
    for layer in layers:
        if layer["method"] == WidenChannelsPass.method:
            return sample_counterfeits(locked, layer["groups"], FINGERPRINT_SIZE, rng)
    keyed = [name for layer in layers if layer["method"] in KEYED for name in layer["tensors"]]
    if not keyed:
        return None
    inits = {t.name: t for t in locked.graph.initializer}
    return sample_values({name: read_values(inits[name]) for name in keyed}, keyed, FINGERPRINT_SIZE, rng)


@guarded("locking {model}")
def lock_model(model: onnx.ModelProto | str | os.PathLike, *, passphrase: str | None = None,
               recipients: Iterable = (), expires: datetime | None = None, licensee: str | None = None,
               method: str = DEFAULT_METHOD, ratio: float | None = None, strategy: str = DEFAULT_STRATEGY,
               seed: int | None = None, calibration: dict[str, np.ndarray] | None = None,
               kdf_params: dict | None = None, tries: int | None = DEFAULT_TRIES, progress: bool = False,
               max_weights: int = DEFAULT_MAX_WEIGHTS, labels: np.ndarray | None = None,
               external_data: str | None = None, peel_guard: bool = True) -> LockedModel:
    """Lock ``model`` with the passes named in ``method`` (e.g. ``"confusion,signflip"``, applied in
    METHODS order) and seal their stacked secret for ``passphrase`` and/or public ``recipients``
    (paths, public key text or X25519Recipient), any one of which opens it.

    ``expires`` (timezone-aware) ends the key's validity; ``licensee`` records whose copy this is
    in the authenticated header (each call draws a fresh secret, so give no ``seed``).
    ``external_data``: a file name beside the locked model for its weights (ONNX external data;
    needed when the locked model would pass protobuf's 2 GiB limit); the key binds its SHA-256.
    ``peel_guard=False`` skips checking ``advparams`` stacked on ``confusion`` against the thief's
    blind peel (passes/peel_guard.py), which can take minutes on a large model."""
    check_model_argument(model)
    if external_data is not None:
        check_location(external_data)
    check_lock_options(ratio=ratio, strategy=strategy, seed=seed, tries=tries, kdf_params=kdf_params)
    methods = parse_methods(method)
    recipients = [load_recipient(r) for r in recipients]
    if passphrase is None and not recipients:
        raise InvalidArgumentError("passphrase or recipients: give a passphrase or at least one recipient")
    if passphrase is not None:
        check_passphrase(passphrase)
    if licensee is not None and seed is not None:
        raise InvalidArgumentError("a licensee's lock must come from a fresh secret: give no seed")
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    options = LockOptions(ratio, strategy, seed, check_calibration(calibration, model), tries, progress,
                          max_weights, labels, stealth=bool(KEYED.keys() & set(methods)), peel_guard=peel_guard)
    current, secrets, reports, skipped = model, [], [], []
    deferred = False  # a keyed pass left to apply to the serialized model (``_apply_serialized``)
    for name in methods:
        try:
            if len(methods) == 1 and name in KEYED:
                result, deferred = _plan_keyed(name, model)
            else:
                result = _run_pass(name, model, current, secrets, options)
        except UnsupportedGraphError as exc:
            if len(methods) == 1:
                raise
            if name not in OPTIONAL_IN_STACK:  # say which pass of the stack cannot lock the model
                raise UnsupportedGraphError(f"{name}: {exc}") from exc
            skipped.append({"method": name, "reason": str(exc)})  # the rest of the stack still locks
            continue
        current = result.model
        secrets.append(result.secret)
        reports.append(result.report)
    if not secrets:
        raise UnsupportedGraphError("; ".join(f"{s['method']}: {s['reason']}" for s in skipped))
    del model, result  # the original is not needed any more: not held while the lock is serialised
    applied = [report["method"] for report in reports]
    secret = dict(secrets[0]) if len(secrets) == 1 else stack_secrets(secrets)
    fingerprint = None if deferred else _fingerprint(current, secret_layers(secret))
    if external_data is None and too_large(current):
        raise InvalidArgumentError("the locked model would pass protobuf's 2 GiB limit: give external_data, "
                                   "a file name for its weights (the CLI does)")
    locked, data = split(current, external_data) if external_data else (current.SerializeToString(), None)
    del current  # the bytes are all we keep: a large model is held once, not twice
    if deferred:
        locked, data, fingerprint = _apply_serialized(locked, data, external_data, secret)
    restored_sha256, digests = _restored_facts(locked, data, external_data, secret)
    if data is None:
        secret["restored_sha256"] = restored_sha256
    else:  # the graph file's hash binds the rest; the key the data file's
        secret["external_data"] = {"location": external_data, "sha256": sha256_bytes(data), "bytes": len(data)}
    if digests is not None:  # per touched tensor: what the fast loader checks
        secret["restored_tensors"] = digests
    if fingerprint is not None:
        secret["fingerprint"] = fingerprint
    secret[binding.MAC] = binding.new_tags(model=locked, data=data)  # what the fast loader checks
    key = seal(secret, model_sha256=sha256_bytes(locked), method=",".join(applied),
               passphrase=passphrase, recipients=recipients, kdf_params=kdf_params, expires=expires,
               licensee=licensee)
    # the key must open, for these bytes, to this secret before anything is written
    if passphrase is not None and open_key(key, passphrase=passphrase, model_sha256=sha256_bytes(locked)) \
            != json.loads(json.dumps(secret)):
        raise OnnxlockError("the sealed key does not open to its secret")
    report = reports[0] if len(reports) == 1 and not skipped else {"method": ",".join(applied), "layers": reports}
    if skipped:
        report["skipped"] = skipped
    return LockedModel(locked, key, report, data, external_data if data is not None else None)


def _restored_facts(locked: bytes, data: bytes | None, location: str | None,
                    secret: dict) -> tuple[str | None, dict[str, str] | None]:
    """The lock's one restore: the restored model's SHA-256 (None with external data) and the
    digests of the tensors ``secret`` touches (None if a method does not say which). Inside the
    serialized bytes where the key allows it (``restore_serialized``), else on the parsed model."""
    inside = restore_serialized(locked, secret, data)
    if inside is not None:
        model, _, arrays = inside
        return None if data is not None else sha256_bytes(model), {n: tensor_digest(a) for n, a in arrays.items()}
    restored = restore(_parsed(locked, data, location), secret, in_place=True)
    return None if data is not None else sha256_bytes(restored.SerializeToString()), restored_digests(restored, secret)


def _parsed(serialized: bytes, data: bytes | None, location: str | None) -> onnx.ModelProto:
    """The serialized model parsed, with its external ``data`` put back in when it has some."""
    model = parse_model(serialized)
    return model if data is None else attach(model, data, location)


@guarded("writing {model_path} and {key_path}")
def write_locked(locked: LockedModel, model_path: str | os.PathLike, key_path: str | os.PathLike,
                 *, force: bool = False) -> None:
    """Write model and key (and the model's external data file, if any, beside it) as one
    (``filepair``: all or none, even if killed); a key is never silently overwritten (it may be
    the only copy), and with ``force`` the old files stay whole until the new ones are complete."""
    if not isinstance(locked, LockedModel):
        raise InvalidArgumentError(f"locked must be the LockedModel lock_model returned, got {type(locked).__name__}")
    check_path("model_path", model_path)
    check_path("key_path", key_path)
    if Path(model_path).resolve() == Path(key_path).resolve():
        raise OnnxlockError("the locked model and the key must be different files")
    files = [NewFile(model_path, locked.model, 0o644)]
    if locked.data is not None:
        data_path = Path(model_path).parent / check_location(locked.data_name)
        if data_path.resolve() in (Path(model_path).resolve(), Path(key_path).resolve()):
            raise OnnxlockError(f"the external data file {data_path} would overwrite the model or the key")
        files.append(NewFile(data_path, locked.data, 0o644))
    write_files(files + [NewFile(key_path, locked.key, 0o600)], overwrite=force)
