"""Bytes in, restored ModelProto out: the key is checked against the locked file and opened in memory.

This is the whole-model ("slow") path: parse the locked model, restore it, serialize it. The loader
uses it for ``verify="full"`` and for anything the fast path (``fast.py``) does not take.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModelFormatError, ModelMismatchError
from ..fileio import sha256_bytes
from ..graph.external import attach, locations, path_needed, read_data, too_large
from ..graph.io import parse_model
from ..guard import guarded
from ..key import SealedKey, open_key
from ..passes.restorers import restore
from ..proto import ModelProto, to_array
from ..validate import check_bytes, check_passphrase
from .touches import tensor_digest, touched_tensors

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

RESTORED_SHA256 = "restored_sha256"  # the restored model's serialization (every key has it)
RESTORED_TENSORS = "restored_tensors"  # {name: tensor_digest} of each touched initializer (newer keys)
EXTERNAL_DATA = "external_data"  # {location, sha256, bytes} of a locked model's external data file
_ALTERED = "the restored model does not match the original (key or model altered)"


def open_secret(key: bytes | SealedKey, passphrase: str | None, model_sha256: str | None, identity=None) -> dict:
    """The key's secret; the one place a key is opened (with ``identity`` and/or ``passphrase``;
    ``key``: its bytes, or the key already parsed by ``parse_key``).
    ``model_sha256`` None: the caller checks the locked file's hash against the key header itself
    (see ``session.load_session``)."""
    return open_key(key, passphrase=passphrase, identity=identity, model_sha256=model_sha256)


def restored_digests(model: onnx.ModelProto, secret: dict) -> dict[str, str] | None:
    """Digests of the initializers ``secret`` touches, read from the restored ``model``;
    None when a layer's method does not say what it touches."""
    touched = touched_tensors(secret)
    if touched is None:
        return None
    return {t.name: tensor_digest(to_array(t)) for t in model.graph.initializer if t.name in touched}


def check_digest(name: str, array, secret: dict) -> None:
    """Compare a restored tensor with the digest the key recorded for it."""
    if tensor_digest(array) != secret[RESTORED_TENSORS].get(name):
        raise ModelMismatchError(_ALTERED)


def check_external(sha256: str, size: int, secret: dict) -> None:
    """Compare an external data file's hash and size with what the key records."""
    expected = secret.get(EXTERNAL_DATA)
    if not isinstance(expected, dict) or expected.get("sha256") != sha256 or expected.get("bytes") != size:
        raise ModelMismatchError("the locked model's external data file does not match its key (altered or "
                                 "from another lock)")


def external_data(source, secret: dict) -> bytes | None:
    """The whole external data file of the locked model in ``source`` (a LockedSource), if the key
    says it has one."""
    expected = secret.get(EXTERNAL_DATA)
    if expected is None:
        return None
    if not source.path:
        raise path_needed(expected.get("location"))
    return read_data(source.path, expected.get("location"))


def restore_checked(locked: bytes, secret: dict, data: bytes | None = None,
                    kind: type = ModelProto) -> tuple[onnx.ModelProto, bytes]:
    """The restored model (of message class ``kind``) and its serialized bytes (None past
    protobuf's 2 GiB), checked against every digest the key records; ``data``: the locked model's
    external data file, if the key names one."""
    model = parse_model(locked, source="locked model", kind=kind)
    expected = secret.get(EXTERNAL_DATA)
    if expected is not None:
        if data is None:
            raise ModelFormatError(f"this locked model keeps its weights in {expected.get('location')}: "
                                   "give its data too")
        check_external(sha256_bytes(data), len(data), secret)
        attach(model, data, expected["location"])
    elif locations(model):
        raise ModelMismatchError("the locked model points to external data its key does not name")
    model = restore(model, secret, in_place=True)
    data = None if too_large(model) else model.SerializeToString()  # None: over protobuf's limit
    expected = secret.get(RESTORED_SHA256)
    if expected is not None and sha256_bytes(data) != expected:
        raise ModelMismatchError(_ALTERED)
    if isinstance(secret.get(RESTORED_TENSORS), dict):
        digests = restored_digests(model, secret) or {}
        if digests != secret[RESTORED_TENSORS]:
            raise ModelMismatchError(_ALTERED)
    return model, data


def _restore(locked: bytes, key: bytes, passphrase: str | None, identity=None,
             data: bytes | None = None, kind: type = ModelProto) -> tuple[onnx.ModelProto, bytes]:
    return restore_checked(locked, open_secret(key, passphrase, sha256_bytes(locked), identity), data, kind)


@guarded("restoring a locked model ({locked})")
def restore_model(locked: bytes, key: bytes, passphrase: str | None = None, *, identity=None,
                  data: bytes | None = None) -> onnx.ModelProto:
    """Open ``key`` (with ``identity``: a path, identity bytes or X25519Identity, and/or
    ``passphrase``) for the ``locked`` file's bytes and return the exact original model;
    ``data``: the bytes of the locked model's external data file, if it has one."""
    check_bytes("locked", locked)
    check_bytes("key", key)
    if data is not None:
        check_bytes("data", data)
    check_passphrase(passphrase, optional=identity is not None)
    import onnx  # the caller asked for onnx's ModelProto
    return _restore(locked, key, passphrase, identity, data, onnx.ModelProto)[0]


def unlock_bytes(locked: bytes, key: bytes, passphrase: str | None = None, *, identity=None) -> bytes:
    """The restored model, serialized once: what onnxruntime is handed on the slow path."""
    return _restore(locked, key, passphrase, identity)[1]
