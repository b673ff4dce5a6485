"""Bytes in, restored ModelProto out: the key is checked against the locked file and opened in memory."""

from __future__ import annotations

import onnx

from ..errors import ModelMismatchError
from ..fileio import sha256_bytes
from ..graph.io import parse_model
from ..key import open_key
from ..passes import restore


def _restore(locked: bytes, key: bytes, passphrase: str | None, identity=None) -> tuple[onnx.ModelProto, bytes]:
    """The restored model and its serialized bytes (checked against the hash the key records)."""
    digest = sha256_bytes(locked)
    secret = open_key(key, passphrase=passphrase, identity=identity, model_sha256=digest)
    model = restore(parse_model(locked, source="locked model"), secret, in_place=True)
    data = model.SerializeToString()
    expected = secret.get("restored_sha256")
    if expected is not None and sha256_bytes(data) != expected:
        raise ModelMismatchError("the restored model does not match the original (key or model altered)")
    return model, data


def restore_model(locked: bytes, key: bytes, passphrase: str | None = None, *, identity=None) -> onnx.ModelProto:
    """Open ``key`` (with ``identity``: a path, identity bytes or X25519Identity, and/or
    ``passphrase``) for the ``locked`` file's bytes and return the exact original model."""
    return _restore(locked, key, passphrase, identity)[0]


def unlock_bytes(locked: bytes, key: bytes, passphrase: str | None = None, *, identity=None) -> bytes:
    """The restored model, serialized once: what onnxruntime is handed."""
    return _restore(locked, key, passphrase, identity)[1]
