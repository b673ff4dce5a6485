"""Graph rules added for the zoo, each on a small inline graph: grouped convolutions, window-partition
reshapes, a run-time read of the channel count (blocked, op named), Expand and Gather on other axes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxlock.graph.channels import IndexMap, ParamEdit
from onnxlock.graph.groups import find_groups
from onnxlock.graph.normalize import import_graph, normalize
from test_crash_repro import assert_locks_exactly

RNG = np.random.default_rng(11)


def model_of(nodes, inits: dict, x_shape: list, y_shape: list, ints: dict | None = None) -> onnx.ModelProto:
    tensors = [numpy_helper.from_array(RNG.standard_normal(s).astype(np.float32), n) for n, s in inits.items()]
    tensors += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (ints or {}).items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def groups(model: onnx.ModelProto) -> dict:
    return {g.name: g for g in find_groups(import_graph(normalize(model)))}


def test_grouped_conv_widens_every_group_alike():
    model = model_of([
        helper.make_node("Conv", ["x", "wa"], ["a"]),
        helper.make_node("Relu", ["a"], ["ra"]),
        helper.make_node("Conv", ["ra", "wb"], ["b"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["rb"]),
        helper.make_node("Conv", ["rb", "wc"], ["y"]),
    ], {"wa": (8, 3, 1, 1), "wb": (8, 4, 3, 3), "wc": (4, 8, 1, 1)}, [1, 3, 6, 6], [1, 4, 6, 6])
    found = groups(model)
    group = found["b"]
    assert group.widenable and group.channels == 4  # one group's channels, repeated in both groups
    edits = {(e.node.op, e.index, e.axis): e.imap for e in group.edits if isinstance(e, ParamEdit)}
    assert edits[("Conv", 1, 0)] == IndexMap(copies=2, period=4)
    assert "a" not in found  # the 1x1 conv before it widens in the same group
    assert_locks_exactly(model)


def test_window_partition_reshape_keeps_channels_last():
    model = model_of([
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Reshape", ["h", "windows"], ["win"]),  # [1, 16, 6] -> [4, 4, 6]
        helper.make_node("Relu", ["win"], ["r"]),
        helper.make_node("Reshape", ["r", "tokens"], ["back"]),  # and back to [1, 16, 6]
        helper.make_node("MatMul", ["back", "w2"], ["y"]),
    ], {"w1": (8, 6), "w2": (6, 3)}, [1, 16, 8], [1, 16, 3], {"windows": [4, 4, 6], "tokens": [1, 16, 6]})
    assert groups(model)["h"].widenable
    assert_locks_exactly(model)


def test_channel_count_read_at_run_time_blocks_with_op_named():
    model = model_of([
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"], name="size_of_r"),
        helper.make_node("Reshape", ["r", "s"], ["same"]),
        helper.make_node("Conv", ["same", "w2"], ["y"]),
    ], {"w1": (4, 3, 3, 3), "w2": (2, 4, 1, 1)}, ["N", 3, "H", "W"], ["N", 2, "H", "W"])
    group = groups(model)["c"]
    assert group.blocked == "Shape node 'size_of_r': the widened axis's size is read at run time (by Reshape 'Reshape_3')"


def test_expand_and_gather_on_other_axes_pass_channels():
    model = model_of([
        helper.make_node("MatMul", ["x", "w1"], ["h"]),  # [1, 4, 6]
        helper.make_node("Expand", ["h", "shape"], ["wide"]),  # [2, 4, 6]
        helper.make_node("Gather", ["wide", "idx"], ["first"], axis=1),  # token 0: [2, 6]
        helper.make_node("MatMul", ["first", "w2"], ["y"]),
    ], {"w1": (5, 6), "w2": (6, 3)}, [1, 4, 5], [2, 3], {"shape": [2, 1, 1], "idx": 0})
    assert groups(model)["h"].widenable
    assert_locks_exactly(model)
