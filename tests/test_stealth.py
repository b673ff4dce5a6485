"""Stealth counterfeits (the default stack): drawn to look ordinary, and still restored exactly."""

from __future__ import annotations

import numpy as np

from onnxlock.graph.channels import ParamEdit, Role
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnxlock.passes import WidenChannelsPass, restore
from onnxlock.passes.confusion import MAX_AUTO_RATIO, spread
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
    bound = np.abs(existing).max()
    loud = Counterfeiter("init", np.random.default_rng(2))
    loud.start_group(4)
    assert np.isclose(np.abs(loud._he_normal(_edit(Role.OUT), existing, (4, 64))), bound).any()
    for strategy in ("init", "samp", "mixed"):
        fill = Counterfeiter(strategy, np.random.default_rng(2), stealth=True)
        fill.start_group(400)
        values = fill(_edit(Role.OUT), existing, 400)
        assert np.abs(values).max() < bound and not np.isin(values, existing).any()


def test_stealth_rows_share_the_magnitude_pattern_of_real_rows():
    """Trained rows share where their large weights sit (an input channel that matters to every
    filter); a stealth counterfeit row does too, so its rank order does not stand apart."""
    rng = np.random.default_rng(3)
    pattern = np.exp(rng.normal(0.0, 1.0, size=96))  # per-position scale, shared by the real rows
    existing = rng.normal(size=(32, 96)) * pattern
    fill = Counterfeiter("init", np.random.default_rng(4), stealth=True)
    fill.start_group(64)
    for role in (Role.OUT, Role.IN):
        rows = fill(_edit(role), existing, 64)
        corr = np.corrcoef(np.abs(rows).mean(axis=0), pattern)[0, 1]
        assert corr > 0.9, role
        real = np.linalg.norm(existing, axis=1)
        assert all(np.isclose(real, n).any() for n in np.linalg.norm(rows, axis=1))


def test_stealth_lock_restores_exactly_and_differs_from_a_loud_one():
    original = normalize(load_model(MODELS / "digits_cnn.onnx"))
    stealthy = WidenChannelsPass(ratio=0.05, seed=0, tries=1, stealth=True)(original)
    loud = WidenChannelsPass(ratio=0.05, seed=0, tries=1)(original)
    before, after = initializer_arrays(original), initializer_arrays(restore(stealthy.model, stealthy.secret))
    assert all(before[n].tobytes() == after[n].tobytes() for n in before)
    assert initializer_arrays(stealthy.model).keys() == initializer_arrays(loud.model).keys()
    assert any(a.tobytes() != b.tobytes() for a, b in zip(initializer_arrays(stealthy.model).values(),
                                                          initializer_arrays(loud.model).values()))


def _widenable(name: str):
    from onnxlock.graph.groups import find_groups
    from onnxlock.graph.normalize import import_graph
    from onnxlock.passes.confusion import share_weights

    graph = import_graph(normalize(load_model(MODELS / f"{name}.onnx")))
    share_weights(graph)
    return [g for g in find_groups(graph) if g.widenable]


def test_spread_widens_every_group_it_can_afford_cheapest_first():
    groups = _widenable("digits_cnn")
    costs = sorted(g.params_per_channel() for g in groups)
    plan = spread(groups, budget=costs[0] + costs[1])  # two groups' worth
    assert sorted(groups_cost(groups, plan)) == costs[:2] and set(plan.channels.values()) == {1}
    generous = spread(groups, budget=10 * sum(costs))
    assert set(generous.channels) == {g.name for g in groups}
    shares = [generous.channels[g.name] / g.channels for g in groups]
    assert max(shares) - min(shares) <= max(1 / g.channels for g in groups)  # equal shares, to a channel


def groups_cost(groups, plan):
    return [g.params_per_channel() for g in groups if g.name in plan.channels]


def test_default_stealth_budget_reaches_every_group():
    """A stealth lock (confusion stacked with signflip or mask) widens every layer group of each
    digits model, so no width tells which, within its budget cap."""
    for name in ("digits_cnn", "digits_mlp", "digits_transformer"):
        result = WidenChannelsPass(seed=0, tries=2, stealth=True)(load_model(MODELS / f"{name}.onnx"))
        assert result.report["groups_widened"] == len(_widenable(name)), name
        assert result.report["params_added"] <= MAX_AUTO_RATIO * result.report["params_original"], name
    loud = WidenChannelsPass(seed=0, tries=2)(load_model(MODELS / "digits_cnn.onnx"))
    assert loud.report["params_added"] <= 0.02 * loud.report["params_original"]  # loud keeps ratio 0.02


def test_flipped_stealth_rows_do_not_stand_apart_by_shared_rank():
    """The leak found on Silero VAD: with every sign flipped, a He-normal row's highest rank
    correlation with another row of its layer is lower than a trained row's (trained rows share a
    magnitude pattern); stealth rows share it too, so the thief's shared-rank score is at chance."""
    from onnxlock.evaluate.attacks.scoring import roc_auc
    from onnxlock.evaluate.attacks.weights import row_ranks

    rng = np.random.default_rng(0)

    def shared_rank_auc(stealth: bool) -> float:
        scores, labels = [], []
        for trial in range(20):
            real = rng.normal(size=(64, 192)) * np.exp(rng.normal(size=192))
            fill = Counterfeiter("init", np.random.default_rng(trial), stealth=stealth)
            fill.start_group(4)
            rows = np.concatenate([real, fill(_edit(Role.OUT), real, 4)]) * rng.choice([-1, 1], size=(68, 192))
            corr = np.corrcoef(row_ranks(rows))
            np.fill_diagonal(corr, -1.0)
            scores.append(corr.max(axis=1))
            labels.append(np.arange(68) >= 64)
        return roc_auc(np.concatenate(scores), np.concatenate(labels))

    assert shared_rank_auc(stealth=False) < 0.4  # He-normal counterfeits stand apart
    assert 0.4 < shared_rank_auc(stealth=True) < 0.6
