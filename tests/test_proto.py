"""onnxlock.proto: ONNX's messages built from the vendored descriptor agree with onnx's own."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxlock import proto
from onnxlock.onnx_ml_descriptor import SERIALIZED

from conftest import MODELS


def test_the_vendored_descriptor_means_what_the_installed_onnx_means():
    """Every message and field it knows has the same number, type and label in onnx's own (a newer
    onnx may add fields: parsing keeps them as unknown fields and writes them back)."""
    from google.protobuf import descriptor_pb2
    vendored = descriptor_pb2.FileDescriptorProto.FromString(SERIALIZED)
    installed = descriptor_pb2.FileDescriptorProto.FromString(onnx.onnx_ml_pb2.DESCRIPTOR.serialized_pb)

    def fields(file):
        out = {}

        def walk(messages, prefix):
            for message in messages:
                name = f"{prefix}.{message.name}"
                out.update({(name, f.name): (f.number, f.type, f.label, f.type_name) for f in message.field})
                walk(message.nested_type, name)
        walk(file.message_type, file.package)
        return out
    ours, theirs = fields(vendored), fields(installed)
    assert len(ours) > 100
    assert {key: ours[key] for key in ours} == {key: theirs.get(key) for key in ours}


def test_a_model_parses_and_serializes_to_the_same_bytes():
    data = (MODELS / "digits_cnn.onnx").read_bytes()
    model = proto.ModelProto.FromString(data)
    assert model.SerializeToString() == onnx.ModelProto.FromString(data).SerializeToString() == data
    assert proto.convert(model, onnx.ModelProto) == onnx.ModelProto.FromString(data)
    assert proto.convert(model, proto.ModelProto) is model
    assert proto.is_message(model, "ModelProto") and proto.is_message(onnx.ModelProto(), "ModelProto")
    assert not proto.is_message(model.graph, "ModelProto") and not proto.is_message(b"", "ModelProto")


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, -2], dtype=np.int64),
                                   np.array([True, False]), np.float16([0.5, -1]), np.zeros((0, 3), np.float32)])
@pytest.mark.parametrize("raw", [True, False])
def test_to_array_gives_what_numpy_helper_gives(array, raw):
    tensor = numpy_helper.from_array(array, "t")
    if not raw:  # the typed fields (float_data, int64_data...) instead of raw_data
        tensor = helper.make_tensor("t", tensor.data_type, array.shape, array.reshape(-1).tolist())
    ours = proto.convert(tensor, proto.TensorProto)
    expected = numpy_helper.to_array(tensor)
    got = proto.to_array(ours)
    assert got.dtype == expected.dtype and got.shape == expected.shape and np.array_equal(got, expected)


def test_the_native_dtypes_are_onnx_s():
    for data_type in range(1, 26):
        native = proto.native_dtype(data_type)
        try:
            expected = np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
        except (KeyError, ValueError, TypeError):
            assert native is None
            continue
        assert native is None or native == expected
        assert proto.numpy_dtype(data_type) == expected
    bfloat16 = numpy_helper.from_array(np.array([1.5], dtype=helper.tensor_dtype_to_np_dtype(onnx.TensorProto.BFLOAT16)))
    assert proto.to_array(proto.convert(bfloat16, proto.TensorProto)).tobytes() == numpy_helper.to_array(bfloat16).tobytes()
