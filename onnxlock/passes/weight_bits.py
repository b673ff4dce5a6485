"""AdvParams's secret: the original float32 bits of each perturbed weight at its flat index, and
writing them back (the restore). Kept apart from the search in ``advparams.py``, so that loading a
model imports none of the lock-time machinery."""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING

import numpy as np

from ..errors import KeyFormatError, ModelMismatchError
from ..proto import TensorProto

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

METHOD = "advparams"
SECRET_VERSION = 1
MAX_SECRET_WEIGHTS = 1 << 16


def float_bits(value: float) -> int:
    """The float32 bit pattern of ``value`` as an unsigned int (what the key stores)."""
    return struct.unpack("<I", struct.pack("<f", value))[0]


def write_bits(tensor: onnx.TensorProto, edits: list[tuple[int, int]]) -> None:
    """Set float32 elements of ``tensor`` (flat index, bits) in its own storage (raw or float_data),
    so that writing the original bits back gives the original serialisation."""
    if tensor.data_type != TensorProto.FLOAT:
        raise ModelMismatchError(f"the key does not fit this model (tensor {tensor.name} is not float32)")
    size = math.prod(tensor.dims)
    if tensor.HasField("raw_data") and len(tensor.raw_data) == 4 * size:
        raw = np.frombuffer(tensor.raw_data, dtype="<u4").copy()
        indices, bits = zip(*edits) if edits else ((), ())
        raw[list(indices)] = bits
        tensor.raw_data = raw.tobytes()
    elif len(tensor.float_data) == size:
        for index, bits in edits:
            tensor.float_data[index] = struct.unpack("<f", struct.pack("<I", bits))[0]
    else:
        raise ModelMismatchError(f"the key does not fit this model (tensor {tensor.name} has no inline data)")


def _checked_edits(model: onnx.ModelProto, secret: dict) -> dict[str, list[tuple[int, int]]]:
    """Tensor name -> [(index, bits)] from ``secret``, every field checked against ``model``."""
    if secret.get("version") != SECRET_VERSION:
        raise KeyFormatError(f"advparams key version {secret.get('version')!r} is not supported")
    weights = secret.get("weights")
    if not isinstance(weights, list) or len(weights) > MAX_SECRET_WEIGHTS:
        raise KeyFormatError("advparams key 'weights' must be a list")
    named = {entry[0] for entry in weights if isinstance(entry, list) and entry and isinstance(entry[0], str)}
    sizes = {t.name: (t.data_type, math.prod(t.dims)) for t in model.graph.initializer if t.name in named}
    edits: dict[str, list[tuple[int, int]]] = {}
    for entry in weights:
        if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                or any(type(v) is not int for v in entry[1:]) or not 0 <= entry[2] < 1 << 32):
            raise KeyFormatError("advparams key entries must be [tensor, index, float32 bits]")
        name, index, bits = entry
        if name not in sizes:
            raise ModelMismatchError("the key does not fit this model (a perturbed tensor is missing)")
        dtype, size = sizes[name]
        if dtype != TensorProto.FLOAT or not 0 <= index < size:
            raise ModelMismatchError("the key does not fit this model (a perturbed weight is out of place)")
        edits.setdefault(name, []).append((index, bits))
    return edits


def restore_weights(model: onnx.ModelProto, secret: dict, *, in_place: bool = False) -> onnx.ModelProto:
    """The inverse pass: write back the original bits of every perturbed weight."""
    edits = _checked_edits(model, secret)
    restored = model if in_place else type(model)()
    if not in_place:
        restored.CopyFrom(model)
    for tensor in restored.graph.initializer:
        if tensor.name in edits:
            write_bits(tensor, edits[tensor.name])
    return restored
