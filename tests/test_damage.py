"""The damage measure that steers where confusion channels go, and the synthetic calibration inputs."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxlock.evaluate.damage import all_plausible, damage, pearson, plausible, synthetic_feeds


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


def test_plausible_means_finite_and_peak_within_quarter_to_four_times():
    ref = np.eye(4, dtype=np.float32)
    flipped = np.roll(ref, 1, axis=1)
    assert plausible(ref, flipped * 3) and plausible(ref, flipped * 0.3)
    assert not plausible(ref, flipped * 100)  # wild values would betray the lock
    assert not plausible(ref, flipped * 1e-3)  # so would a dead output
    assert not plausible(ref, flipped * np.nan)
    assert not plausible(ref, np.where(flipped > 0, np.inf, 0).astype(np.float32))
    assert not all_plausible([ref, ref], [flipped, flipped * 5e8])


def test_plausible_only_asks_finite_where_the_original_is():
    ref = np.array([[0.5, -np.inf, 2.0]], dtype=np.float32)  # e.g. a masked logit
    assert plausible(ref, np.array([[1.0, -np.inf, -3.0]], dtype=np.float32))
    assert not plausible(ref, np.array([[np.nan, -np.inf, 1.0]], dtype=np.float32))


def test_damage_is_bounded_on_huge_and_nan_outputs():
    ref = np.linspace(-1, 1, 40, dtype=np.float32).reshape(4, 10)
    flipped = np.roll(ref, 3, axis=1)
    for out in (ref * 5e8, flipped * 5e8, np.full_like(ref, np.finfo(np.float32).max), ref * np.nan,
                np.full_like(ref, np.inf)):
        score = damage([ref], [out])
        assert 0.0 <= score <= 1.0
    assert damage([ref], [ref * 5e8]) == 0.0  # huge but same decisions: no damage, not a failure
    assert damage([ref], [flipped * 5e8]) == 1.0
    assert damage([ref], [ref * np.nan]) == 1.0  # NaN rows agree with nothing


def test_damage_of_maps_counts_non_finite_values_as_changed():
    ref = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    broken = ref.copy()
    broken[0, 0, :4] = np.nan
    assert 0.49 < damage([ref], [broken]) <= 0.51  # half the map lost; the rest still correlates
    huge = np.float32(3e38) * ref
    assert abs(pearson(ref, huge) - 1.0) < 1e-9  # scaled first: no overflow at float32's top
    assert damage([ref], [huge]) < 1e-9
