"""Stealth counterfeits (the default stack): drawn to look ordinary, and still restored exactly."""

from __future__ import annotations

import numpy as np

from onnxlock.graph.channels import ParamEdit, Role
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnxlock.passes import WidenChannelsPass, restore
from onnxlock.passes.counterfeit import Counterfeiter, match_norms

from conftest import MODELS


class _Node:
    op, name = "Conv", "conv"


def _edit(role: Role) -> ParamEdit:
    return ParamEdit(_Node(), 1, 0, None, role)


def test_rows_take_the_norms_of_real_rows():
    rng = np.random.default_rng(0)
    existing = rng.normal(size=(16, 3, 3, 3)) * rng.uniform(0.5, 2.0, size=(16, 1, 1, 1))
    rows = match_norms(rng.normal(size=(5, 3, 3, 3)) * 10, existing, rng)
    real = np.linalg.norm(existing.reshape(16, -1), axis=1)
    for norm in np.linalg.norm(rows.reshape(5, -1), axis=1):
        assert np.isclose(real, norm).any()


def test_no_value_on_the_layer_bound():
    rng = np.random.default_rng(1)
    existing = rng.uniform(-0.05, 0.05, size=(8, 64)).astype(np.float32)  # far below He-normal's spread
    for stealth, expect_on_bound in ((False, True), (True, False)):
        fill = Counterfeiter("init", np.random.default_rng(2), stealth=stealth)
        fill.start_group(4)
        values = fill._he_normal(_edit(Role.OUT), existing, (4, 64))
        on_bound = np.isclose(np.abs(values), np.abs(existing).max()).any()
        assert on_bound == expect_on_bound


def test_stealth_lock_restores_exactly_and_differs_from_a_loud_one():
    original = normalize(load_model(MODELS / "digits_cnn.onnx"))
    stealthy = WidenChannelsPass(ratio=0.05, seed=0, tries=1, stealth=True)(original)
    loud = WidenChannelsPass(ratio=0.05, seed=0, tries=1)(original)
    before, after = initializer_arrays(original), initializer_arrays(restore(stealthy.model, stealthy.secret))
    assert all(before[n].tobytes() == after[n].tobytes() for n in before)
    assert initializer_arrays(stealthy.model).keys() == initializer_arrays(loud.model).keys()
    assert any(a.tobytes() != b.tobytes() for a, b in zip(initializer_arrays(stealthy.model).values(),
                                                          initializer_arrays(loud.model).values()))
