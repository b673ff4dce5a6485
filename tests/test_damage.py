"""The damage measure that steers where confusion channels go, and the synthetic calibration inputs."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxlock.evaluate.damage import damage, plausible, synthetic_feeds


def test_synthetic_feeds_fill_dynamic_dims_including_minus_one():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "h", 48])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x, ids], [y])
    feeds = synthetic_feeds(helper.make_model(graph), batch=4)
    assert feeds["x"].shape == (4, 3, 32, 48) and feeds["x"].dtype == np.float32
    assert feeds["ids"].shape == (4, 5) and feeds["ids"].dtype == np.int64


def test_damage_of_class_scores_is_top1_disagreement():
    ref = np.eye(4, dtype=np.float32)
    assert damage([ref], [ref]) == 0.0
    assert damage([ref], [np.roll(ref, 1, axis=1)]) == 1.0


def test_damage_of_maps_is_one_minus_abs_correlation():
    ref = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    assert damage([ref], [ref * 2]) < 1e-9
    assert damage([ref], [1 - ref]) < 1e-9  # an inverted map still carries the information


def test_implausible_outputs_count_as_no_damage():
    ref = np.eye(4, dtype=np.float32)
    flipped = np.roll(ref, 1, axis=1)
    assert not plausible(ref, flipped * np.nan)
    assert damage([ref], [flipped * 100]) == 0.0  # wild values would betray the lock
    assert damage([ref], [flipped * 1e-3]) == 0.0  # so would a dead output
    assert plausible(ref, flipped * 3)
