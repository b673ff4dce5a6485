"""graph/values.py: the raw-bytes shortcut reads and writes exactly what numpy_helper does."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock.graph.values import read_values, write_values

DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES)
def test_raw_tensors_round_trip_as_numpy_helper_writes_them(dtype):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((3, 4, 2)) * 50).astype(dtype)
    tensor = numpy_helper.from_array(values, "w")
    read = read_values(tensor)
    assert read.dtype == values.dtype and read.shape == values.shape and read.tobytes() == values.tobytes()
    smaller = values[:, 1:3]
    write_values(tensor, smaller)
    assert tensor.SerializeToString() == numpy_helper.from_array(np.ascontiguousarray(smaller), "w").SerializeToString()


def test_typed_fields_and_unusual_types_go_through_numpy_helper():
    typed = helper.make_tensor("t", TensorProto.FLOAT, [2, 2], [1.0, -2.0, 3.0, -4.0])  # float_data, no raw bytes
    assert read_values(typed).tolist() == [[1.0, -2.0], [3.0, -4.0]]
    write_values(typed, np.array([5.0, 6.0], dtype=np.float32))
    assert numpy_helper.to_array(typed).tolist() == [5.0, 6.0]
    bf16 = helper.make_tensor("b", TensorProto.BFLOAT16, [3], [1.0, -2.0, 0.5])
    assert numpy_helper.to_array(bf16).astype(np.float32).tolist() == \
        read_values(bf16).astype(np.float32).tolist() == [1.0, -2.0, 0.5]


def test_raw_bytes_of_the_wrong_length_are_not_read_as_they_are():
    tensor = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    tensor.raw_data = tensor.raw_data[:-4]
    with pytest.raises(ValueError):  # numpy_helper's own error, not a silently short view
        read_values(tensor).reshape(2, 3)


def test_float64_values_into_a_typed_tensor_are_not_taken_for_raw_bytes():
    typed = helper.make_tensor("d", TensorProto.DOUBLE, [2], [1.5, -2.5])  # double_data, no raw bytes
    values = np.array([3.0, 4.0, 5.0])
    write_values(typed, values)
    assert typed.SerializeToString() == numpy_helper.from_array(values, "d").SerializeToString()
