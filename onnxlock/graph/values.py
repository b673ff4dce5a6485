"""An initializer's values read and written through its raw bytes where they allow it (numeric
data in raw_data on a little-endian machine): a view and one copy, where numpy_helper decodes and
rebuilds the whole TensorProto. Anything else goes through numpy_helper (``proto.to_array``)."""

from __future__ import annotations

import functools
import math
import sys

import numpy as np

from ..proto import TensorProto, convert, native_dtype, to_array


@functools.cache
def _plain_dtype(data_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX numeric type whose raw bytes numpy reads as they are, else None
    (bfloat16, float8 and the like are not: numpy holds them through ml_dtypes)."""
    dtype = native_dtype(data_type)
    if sys.byteorder != "little" or dtype is None:
        return None
    return dtype if dtype.kind in "biuf" else None


def raw_dtype(tensor: TensorProto, raw: bytes | None = None) -> np.dtype | None:
    """The numpy dtype of ``tensor``'s raw bytes, or None when they cannot be read as they are;
    ``raw``: those bytes, if the caller has read them (each read of the field is a copy)."""
    dtype = _plain_dtype(tensor.data_type)
    if dtype is None or not tensor.HasField("raw_data"):
        return None
    return dtype if len(tensor.raw_data if raw is None else raw) == math.prod(tensor.dims) * dtype.itemsize else None


def read_values(tensor: TensorProto) -> np.ndarray:
    """``tensor``'s values (a read-only view of its raw bytes when it has them)."""
    return to_array(tensor)


def write_values(tensor: TensorProto, values: np.ndarray) -> None:
    """Set ``tensor``'s values (and shape) to ``values`` of its own dtype, as numpy_helper would
    (raw bytes replaced as they are, without reading the old ones: a copy)."""
    dtype = _plain_dtype(tensor.data_type) if tensor.HasField("raw_data") else None
    if dtype is not None and dtype == values.dtype:  # (np.dtype("float64") == None is True)
        tensor.raw_data = np.ascontiguousarray(values).tobytes()
        del tensor.dims[:]
        tensor.dims.extend(values.shape)
        return
    from onnx import numpy_helper  # (an unusual tensor: imported only here)
    tensor.CopyFrom(convert(numpy_helper.from_array(values, tensor.name), type(tensor)))
