"""Arrays in and out of .npz files: match a file's arrays to a model's inputs, write outputs atomically."""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputDataError
from ..fileio import atomic_write_bytes
from ..proto import is_message, numpy_dtype

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

Dim = int | str | None

# onnxruntime NodeArg.type -> numpy dtype
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


class TensorSpec:
    """A graph input or output: name, shape (int, symbolic name or None per axis) and dtype."""

    __slots__ = ("name", "shape", "dtype")

    def __init__(self, name: str, shape: tuple[Dim, ...] | None, dtype: np.dtype | None):
        self.name, self.shape, self.dtype = name, shape, dtype

    def describe(self) -> str:
        dtype = "?" if self.dtype is None else self.dtype.name
        return f"{dtype} {format_shape(self.shape)}"


def format_shape(shape: Iterable[Dim] | None) -> str:
    """[batch, 1, 8, 8]; '?' for an unknown axis, '[?]' for an unknown rank."""
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def specs_from_values(values: Iterable[onnx.ValueInfoProto], skip: Iterable[str] = ()) -> list[TensorSpec]:
    """Specs of ONNX value infos (graph inputs or outputs), leaving out names in ``skip``."""
    skip = set(skip)
    specs = []
    for value in values:
        if value.name in skip:
            continue
        tensor_type = value.type.tensor_type
        shape = None
        if tensor_type.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                          for d in tensor_type.shape.dim)
        dtype = numpy_dtype(tensor_type.elem_type) if tensor_type.elem_type else None
        specs.append(TensorSpec(value.name, shape, dtype))
    return specs


def input_specs(source) -> list[TensorSpec]:
    """Input specs of an onnxruntime session, an ``onnx.ModelProto``, or a list of TensorSpec."""
    if is_message(source, "ModelProto"):
        initializers = (t.name for t in source.graph.initializer)
        return specs_from_values(source.graph.input, skip=initializers)
    if hasattr(source, "get_inputs"):
        return [TensorSpec(arg.name, None if arg.shape is None else tuple(arg.shape),
                           None if arg.type not in _ORT_TYPES else np.dtype(_ORT_TYPES[arg.type]))
                for arg in source.get_inputs()]
    return list(source)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read eagerly; anything unreadable is an InputDataError."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise InputDataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, EOFError, zipfile.BadZipFile):  # numpy fell through to pickle, or an empty file
        raise InputDataError(f"{path} is not an .npz archive") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputDataError(f"{path} is not an .npz archive (a single .npy array?)")
    try:
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputDataError(f"cannot read the arrays in {path}: {exc}") from exc


def check_feeds(arrays: dict[str, np.ndarray], inputs, *, source: str = "input data"
                ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Pick one array per model input, checked against its spec; also return the names left unused."""
    specs = input_specs(inputs)
    feeds = {}
    for spec in specs:
        if spec.name not in arrays:
            have = ", ".join(sorted(arrays)) or "no arrays"
            raise InputDataError(f"{source} has no array for input '{spec.name}' (it has: {have})")
        feeds[spec.name] = check_array(spec, arrays[spec.name])
    unused = sorted(set(arrays) - set(feeds))
    return feeds, unused


def check_array(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """Return ``array`` if its dtype, rank and static dims fit ``spec``, else raise InputDataError."""
    fits_dtype = spec.dtype is None or array.dtype == spec.dtype
    fits_shape = spec.shape is None or (
        array.ndim == len(spec.shape)
        # a symbolic, unknown or negative dim (some exporters write -1) is dynamic
        and all(not isinstance(want, int) or want < 0 or want == got for want, got in zip(spec.shape, array.shape)))
    if not (fits_dtype and fits_shape):
        raise InputDataError(f"input '{spec.name}' expects {spec.describe()}, "
                             f"got {array.dtype.name} {format_shape(array.shape)}")
    return array


def read_feeds(path: str | os.PathLike, inputs) -> tuple[dict[str, np.ndarray], list[str]]:
    """Feeds for ``inputs`` (session, ModelProto or specs) from the .npz at ``path``, and unused array names."""
    return check_feeds(load_npz(path), inputs, source=str(path))


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz, atomically (built in memory, then renamed into place)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue(), mode=0o644)
