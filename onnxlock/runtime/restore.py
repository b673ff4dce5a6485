"""Bytes in, restored ModelProto out: the key is checked against the locked file and opened in memory.

This is the whole-model ("slow") path: parse the locked model, restore it, serialize it. The loader
uses it for ``verify="full"`` and for anything the fast path (``fast.py``) does not take.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from ..errors import ModelMismatchError
from ..fileio import sha256_bytes
from ..graph.io import parse_model
from ..guard import guarded
from ..key import open_key
from ..passes import restore
from ..validate import check_bytes, check_passphrase
from .touches import tensor_digest, touched_tensors

RESTORED_SHA256 = "restored_sha256"  # the restored model's serialization (every key has it)
RESTORED_TENSORS = "restored_tensors"  # {name: tensor_digest} of each touched initializer (newer keys)
_ALTERED = "the restored model does not match the original (key or model altered)"


def open_secret(key: bytes, passphrase: str | None, model_sha256: str | None, identity=None) -> dict:
    """The key's secret; the one place a key is opened (with ``identity`` and/or ``passphrase``).
    ``model_sha256`` None: the caller checks the locked file's hash against the key header itself
    (see ``session.load_session``)."""
    return open_key(key, passphrase=passphrase, identity=identity, model_sha256=model_sha256)


def restored_digests(model: onnx.ModelProto, secret: dict) -> dict[str, str] | None:
    """Digests of the initializers ``secret`` touches, read from the restored ``model``;
    None when a layer's method does not say what it touches."""
    touched = touched_tensors(secret)
    if touched is None:
        return None
    return {t.name: tensor_digest(numpy_helper.to_array(t)) for t in model.graph.initializer if t.name in touched}


def check_digest(name: str, array, secret: dict) -> None:
    """Compare a restored tensor with the digest the key recorded for it."""
    if tensor_digest(array) != secret[RESTORED_TENSORS].get(name):
        raise ModelMismatchError(_ALTERED)


def restore_checked(locked: bytes, secret: dict) -> tuple[onnx.ModelProto, bytes]:
    """The restored model and its serialized bytes, checked against every digest the key records."""
    model = restore(parse_model(locked, source="locked model"), secret, in_place=True)
    data = model.SerializeToString()
    expected = secret.get(RESTORED_SHA256)
    if expected is not None and sha256_bytes(data) != expected:
        raise ModelMismatchError(_ALTERED)
    if isinstance(secret.get(RESTORED_TENSORS), dict):
        digests = restored_digests(model, secret) or {}
        if digests != secret[RESTORED_TENSORS]:
            raise ModelMismatchError(_ALTERED)
    return model, data


def _restore(locked: bytes, key: bytes, passphrase: str | None, identity=None) -> tuple[onnx.ModelProto, bytes]:
    return restore_checked(locked, open_secret(key, passphrase, sha256_bytes(locked), identity))


@guarded("restoring a locked model ({locked})")
def restore_model(locked: bytes, key: bytes, passphrase: str | None = None, *, identity=None) -> onnx.ModelProto:
    """Open ``key`` (with ``identity``: a path, identity bytes or X25519Identity, and/or
    ``passphrase``) for the ``locked`` file's bytes and return the exact original model."""
    check_bytes("locked", locked)
    check_bytes("key", key)
    check_passphrase(passphrase, optional=identity is not None)
    return _restore(locked, key, passphrase, identity)[0]


def unlock_bytes(locked: bytes, key: bytes, passphrase: str | None = None, *, identity=None) -> bytes:
    """The restored model, serialized once: what onnxruntime is handed on the slow path."""
    return _restore(locked, key, passphrase, identity)[1]
