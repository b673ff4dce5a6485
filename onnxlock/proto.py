"""ONNX's protobuf messages for the loader, without importing onnx.

``import onnx`` takes 150-200 ms here, most of what onnxlock would add to a service's start
(reports/bench_start.json). The loader needs only the messages: they are built from
onnx-ml.proto's descriptor (vendored in onnx_ml_descriptor.py) in a descriptor pool of their own,
apart from onnx's, so that onnx imports beside them in any order. Both kinds of message hold the
same bytes; ``convert`` turns one into the other where onnx's own helpers are wanted (and only
then imports onnx). Code shared by the lock and the loader builds new messages with
``type(model)()``, so that each keeps its caller's kind.
"""

from __future__ import annotations

import math

import numpy as np
from google.protobuf import descriptor_pool, message_factory

from .onnx_ml_descriptor import SERIALIZED

_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(SERIALIZED)


def _message(name: str) -> type:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"onnx.{name}"))


ModelProto = _message("ModelProto")
GraphProto = _message("GraphProto")
NodeProto = _message("NodeProto")
TensorProto = _message("TensorProto")
AttributeProto = _message("AttributeProto")

# the numpy dtype of each ONNX tensor type numpy holds natively (the others: onnx.helper, via ml_dtypes)
_NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8,
          TensorProto.UINT16: np.uint16, TensorProto.INT16: np.int16, TensorProto.INT32: np.int32,
          TensorProto.INT64: np.int64, TensorProto.BOOL: np.bool_, TensorProto.FLOAT16: np.float16,
          TensorProto.DOUBLE: np.float64, TensorProto.UINT32: np.uint32, TensorProto.UINT64: np.uint64,
          TensorProto.COMPLEX64: np.complex64, TensorProto.COMPLEX128: np.complex128}


def is_message(value, name: str) -> bool:
    """Whether ``value`` is ONNX's message ``name`` (e.g. "ModelProto") of either kind."""
    descriptor = getattr(type(value), "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", None) == f"onnx.{name}"


def native_dtype(data_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX tensor type numpy holds natively, else None."""
    return np.dtype(_NUMPY[data_type]) if data_type in _NUMPY else None


def numpy_dtype(data_type: int) -> np.dtype:
    """The numpy dtype of an ONNX tensor type (``onnx.helper.tensor_dtype_to_np_dtype``)."""
    native = native_dtype(data_type)
    if native is not None:
        return native
    from onnx import helper  # bfloat16, float8, int4...: their dtypes come from ml_dtypes
    return np.dtype(helper.tensor_dtype_to_np_dtype(data_type))


def convert(message, kind: type):
    """``message`` as a message of class ``kind`` (itself if it is one already)."""
    return message if isinstance(message, kind) else kind.FromString(message.SerializeToString())


def to_array(tensor) -> np.ndarray:
    """A tensor's values, as ``onnx.numpy_helper.to_array`` gives them: a read-only view of plain
    raw bytes, else what that function gives for a copy of onnx's kind."""
    dtype = native_dtype(tensor.data_type)
    if dtype is not None and tensor.data_location == TensorProto.DEFAULT and tensor.HasField("raw_data") \
            and not tensor.HasField("segment") and np.little_endian:
        raw = tensor.raw_data  # (read once: each read of a bytes field is a copy)
        if len(raw) == math.prod(tensor.dims) * dtype.itemsize:
            return np.frombuffer(raw, dtype=dtype).reshape(tuple(tensor.dims))
    import onnx
    from onnx import numpy_helper
    return numpy_helper.to_array(convert(tensor, onnx.TensorProto))
