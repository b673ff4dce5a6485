"""ONNX external data for locked models too large for one protobuf (2 GiB).

``split`` moves every large initializer's bytes into one data blob (each tensor at an offset
aligned to ALIGN, so onnxruntime can map it) and leaves a graph whose tensors point there by a
location relative to the model's folder, as ``onnx.save(..., save_as_external_data=True)`` does.
``attach`` puts such bytes back into the graph, in memory, for a whole-model restore.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from google.protobuf.message import EncodeError

from ..errors import InvalidArgumentError, ModelFormatError
from ..fileio import read_input
from ..proto import TensorProto

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

PROTOBUF_LIMIT = 2**31 - 1  # a serialized ModelProto cannot be larger
INLINE_LIMIT = PROTOBUF_LIMIT - (64 << 20)  # above this, a locked model's weights go to a data file
AUTO_BYTES = 10**9  # the CLI stores a locked model's weights externally from this input size (1 GB) on
MIN_EXTERNAL_BYTES = 1024  # smaller initializers stay in the graph
ALIGN = 4096


def check_location(location: str) -> str:
    """A data file name beside the model: no folders, nothing hidden, not '.' or '..'."""
    if (not isinstance(location, str) or not location or location != os.path.basename(location)
            or location in (".", "..") or "\\" in location or "\0" in location):
        raise InvalidArgumentError(f"external data must be a plain file name beside the model, got {location!r}")
    return location


def data_path(model_path: str | os.PathLike, location: str) -> str:
    """Where a model's external data file ``location`` lies: beside the model."""
    return os.path.join(os.path.dirname(os.fspath(model_path)), check_location(location))


def read_data(model_path: str | os.PathLike, location: str) -> bytes:
    """The whole external data file ``location`` of the model at ``model_path``."""
    return read_input(data_path(model_path, location), "external data file", ModelFormatError)


def path_needed(location: str) -> ModelFormatError:
    """The error for a model with external data given as bytes."""
    return ModelFormatError(f"a locked model with external data must be loaded from its path "
                            f"(its weights are in {location} beside it)")


def too_large(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is too close to (or past) protobuf's limit to be serialised in one piece."""
    try:
        return serialized_bound(model) > INLINE_LIMIT
    except EncodeError:  # what protobuf says past 2 GiB
        return True


def serialized_bound(model: onnx.ModelProto) -> int:
    """An upper bound of ``model.ByteSize()`` that does not encode the weights (upb's ByteSize
    encodes the whole message: 0.7-1.5 s and a transient copy on a 384 MiB model): a raw-data
    initializer counts its bytes and a generous bound of its other fields, the rest what it encodes to."""
    size = _fields_bound(model, skip="graph") + _fields_bound(model.graph, skip="initializer") + 16
    for tensor in model.graph.initializer:
        if not tensor.HasField("raw_data"):
            size += tensor.ByteSize() + 16
            continue
        entries = sum(len(e.key.encode()) + len(e.value.encode()) + 24 for e in tensor.external_data)
        size += (len(tensor.raw_data) + len(tensor.name.encode()) + len(tensor.doc_string.encode())
                 + 11 * len(tensor.dims) + entries + 64)
    return size


def _fields_bound(message, skip: str) -> int:
    """What ``message``'s set fields but ``skip`` encode to, each with 16 bytes for tags and lengths."""
    total = 0
    for field, value in message.ListFields():
        if field.name == skip:
            continue
        for item in value if hasattr(value, "extend") else [value]:  # repeated fields have extend
            if isinstance(item, str):
                item = item.encode()
            total += (len(item) if isinstance(item, bytes) else item.ByteSize() if hasattr(item, "ByteSize") else 0) + 16
    return total


def split(model: onnx.ModelProto, location: str) -> tuple[bytes, bytearray]:
    """The model's graph serialized with its large initializers' bytes moved to one blob (returned
    too, not copied again: a bytearray) at ``location``; ``model`` is changed in place (its raw
    data moved out)."""
    check_location(location)
    data = bytearray()
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            raise ModelFormatError(f"initializer {tensor.name} still points to external data")
        if len(tensor.raw_data) < MIN_EXTERNAL_BYTES:
            continue
        data += bytes(-len(data) % ALIGN)
        offset, length = len(data), len(tensor.raw_data)
        data += tensor.raw_data
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return model.SerializeToString(), data


def external_entries(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def locations(model: onnx.ModelProto) -> set[str]:
    """The data files the model's initializers point to."""
    return {external_entries(t).get("location", "") for t in model.graph.initializer
            if t.data_location == TensorProto.EXTERNAL}


def attach(model: onnx.ModelProto, data, location: str) -> onnx.ModelProto:
    """Put the bytes of every initializer stored at ``location`` back from ``data`` (bytes or a
    map of the file), in place; a reference outside ``data`` is a ModelFormatError."""
    for tensor in model.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = external_entries(tensor)
        if entries.get("location") != location:
            raise ModelFormatError(f"initializer {tensor.name} points to {entries.get('location')!r}, "
                                   f"not the locked model's data file {location!r}")
        try:
            offset, length = int(entries.get("offset", 0)), int(entries["length"])
        except (KeyError, ValueError):
            raise ModelFormatError(f"initializer {tensor.name} has no valid external offset and length") from None
        if offset < 0 or length < 0 or offset + length > len(data):
            raise ModelFormatError(f"initializer {tensor.name} lies outside the data file (truncated?)")
        tensor.raw_data = bytes(data[offset:offset + length])
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]
    return model
