"""The attack suite finds what it should: on a lock that leaves fingerprints, detection separates
counterfeit from genuine channels, peeling without labels removes them, pruning and fine-tuning
run and are scored; the CLI reports the same with the truth from the key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxlock import lock_model, write_locked
from onnxlock.evaluate.attacks import Peeling, accuracy, detect, peel, truth_from_secret
from onnxlock.evaluate.attacks.health import health
from onnxlock.evaluate.attacks.activity import tensor_values
from onnxlock.evaluate.attacks.prune import PRUNERS, activation, prune
from onnxlock.evaluate.attacks.scoring import average_ranks, logistic_cv, roc_auc
from onnxlock.evaluate.attacks.suite import Data, run_detect_pooled, run_prune
from onnxlock.graph.io import load_model
from onnxlock.passes import WidenChannelsPass

from conftest import CHEAP_KDF, MODELS
from test_groups import concat_model

BLIND_SAMPLES = 64


@pytest.fixture(scope="module")
def digits_data():
    with np.load(MODELS / "digits_calib.npz") as calib, np.load(MODELS / "digits_test.npz") as test:
        return ({"pixels": calib["pixels"]}, calib["labels"]), ({"pixels": test["pixels"]}, test["labels"])


@pytest.fixture(scope="module")
def obvious_lock(digits_data):
    """digits_cnn under today's default counterfeits (aligned, amplified, clipped): easy to spot."""
    (calib, _), _ = digits_data
    original = load_model(MODELS / "digits_cnn.onnx")
    result = WidenChannelsPass(ratio=0.02, seed=0, tries=4, calibration=calib)(original)
    return original, result.model, truth_from_secret(result.model, result.secret)


def blind(feeds):
    return {k: v[:BLIND_SAMPLES] for k, v in feeds.items()}


def test_roc_auc_and_ranks():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == 0.75
    assert roc_auc(np.array([1.0, 1.0]), np.array([0, 1], bool)) == 0.5  # ties count half
    assert roc_auc(np.array([1.0, 2.0]), np.array([1, 1], bool)) is None
    np.testing.assert_allclose(average_ranks(np.array([3, 1, 1, np.nan, 5.0]))[[1, 2, 3]], [2 / 3, 2 / 3, 2.0])


def test_logistic_fit_learns_an_informative_score():
    rng = np.random.default_rng(0)
    positive = rng.random(300) < 0.1
    scores = {"informative": positive + rng.normal(0, 0.5, 300), "noise": rng.normal(0, 1, 300)}
    assert logistic_cv(scores, positive) > 0.9
    assert roc_auc(scores["noise"], positive) < 0.7


def test_truth_names_the_counterfeits(obvious_lock):
    _, locked, truth = obvious_lock
    assert len(truth.counterfeits) >= 2
    assert sum(truth.widened().values()) == len(truth.counterfeits)
    groups = Peeling.start(locked).alive
    assert all(c.position < len(groups[c.group]) for c in truth.counterfeits)


def test_detection_separates_obvious_counterfeits(obvious_lock, digits_data):
    _, locked, truth = obvious_lock
    (calib, _), _ = digits_data
    result = detect(locked, blind(calib), ablation=False).evaluate(truth.counterfeits)
    assert result["best_single_auc"] >= 0.95
    assert result["rank_average_auc"] >= 0.9
    assert result["auc"]["alignment"] >= 0.9  # the alignment step's rank order, found again


def test_health_tells_locked_from_original(obvious_lock, digits_data):
    original, locked, _ = obvious_lock
    (calib, _), _ = digits_data
    before, after = health(original, blind(calib)), health(locked, blind(calib))
    assert before["diversity"] > 0.9 and after["diversity"] < before["diversity"] - 0.05
    assert before["batchnorm"] > 0.9 and after["batchnorm"] < before["batchnorm"] - 0.3


def test_a_model_answering_nan_has_no_health_and_the_peel_stops(digits_data):
    """NaN health compares as neither better nor worse: without the floor the peel never stopped."""
    from onnx import numpy_helper

    from onnxlock.evaluate.attacks.health import health_score

    (calib, _), _ = digits_data
    model = load_model(MODELS / "digits_mlp.onnx")
    first = model.graph.initializer[0]
    values = numpy_helper.to_array(first).copy()
    values[...] = np.nan
    first.CopyFrom(numpy_helper.from_array(values, first.name))
    assert health_score(model, blind(calib)) == 0.0
    assert len(peel(model, blind(calib), max_steps=5).removed) == 0


def test_the_peel_skips_a_deletion_onnxruntime_refuses(obvious_lock, digits_data, monkeypatch):
    import importlib

    import onnxruntime as ort

    peel_module = importlib.import_module("onnxlock.evaluate.attacks.peel")  # the package re-exports peel()

    original, locked, truth = obvious_lock
    (calib, _), _ = digits_data
    real, calls = peel_module.health_score, []

    def refusing(model, feeds, measure="auto"):
        calls.append(model)
        if len(calls) == 2:  # the first trial's model: as a Split the deletion broke
            raise ort.capi.onnxruntime_pybind11_state.Fail("Mismatch between the sum of 'split' (63) and 64")
        return real(model, feeds, measure)

    monkeypatch.setattr(peel_module, "health_score", refusing)
    result = peel(locked, blind(calib), max_steps=1)
    assert len(calls) > 2 and len(result.removed) == 1


def test_peel_without_labels_restores_the_obvious_lock(obvious_lock, digits_data):
    original, locked, truth = obvious_lock
    (calib, _), (test, labels) = digits_data
    result = peel(locked, blind(calib))
    assert set(result.removed) == set(truth.counterfeits)  # all of them, and nothing genuine
    assert accuracy(result.peeling.model, test, labels) >= accuracy(original, test, labels) - 0.01
    assert accuracy(locked, test, labels) < 0.5


@pytest.mark.parametrize("pruner", PRUNERS)
def test_pruners_delete_the_rate_of_every_group(obvious_lock, digits_data, pruner):
    _, locked, _ = obvious_lock
    (calib, _), (test, _) = digits_data
    start = Peeling.start(locked)
    after = prune(locked, blind(calib), pruner, 0.25)
    for name, alive in start.alive.items():
        assert len(after.alive[name]) == len(alive) - int(0.25 * len(alive))
    assert np.isfinite(accuracy(after.model, test, np.zeros(len(test["pixels"]), int)))


def test_activation_importance_reads_only_the_groups_channels():
    """Where a group's channels last reach unchanged is a Concat (YOLO necks): its output holds the
    other branch's channels too, so the importance is read where they are made."""
    model = concat_model()
    start = Peeling.start(model)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    groups = [start.groups[name] for name in start.alive]
    made = tensor_values(model, feeds, ["c1", "c2"])
    for group, importance in zip(groups, activation(start, groups, feeds)):
        np.testing.assert_allclose(importance, np.abs(made[group.name]).mean(axis=(0, 2, 3)), rtol=1e-6)
    assert {g.name for g in groups} == {"c1", "c2"}


def test_prune_report_scores_against_the_truth(obvious_lock, digits_data):
    _, locked, truth = obvious_lock
    (calib, labels), (test, test_labels) = digits_data
    data = Data(blind(calib), labels[:BLIND_SAMPLES], test, test_labels)
    report = run_prune(locked, data, truth, pruners=["weight_norm"], rates=[0.1])
    row = report["results"][0]
    assert row["removed_counterfeit"] + row["removed_genuine"] == row["removed"] > 0
    assert 0 <= row["agreement"] <= 1 and report["before"]["accuracy"] < 0.5


def test_finetune_locked_weights_beat_scratch_on_a_weak_lock(digits_data):
    pytest.importorskip("torch")
    from onnxlock.evaluate.attacks.finetune import finetune_attack

    (calib, labels), (test, test_labels) = digits_data
    original = load_model(MODELS / "digits_mlp.onnx")
    locked = WidenChannelsPass(ratio=0.02, seed=0, tries=1, calibration=calib)(original).model
    [row] = finetune_attack(locked, calib["pixels"], labels, test["pixels"], test_labels, fractions=[0.1], steps=30)
    assert row["samples"] == 26 and row["steps"] == 30
    assert row["accuracy_finetuned"] >= 0.8  # every original weight is still in the file
    assert row["advantage"] > 0.2


def test_learning_signs_keeps_each_magnitude(digits_data):
    """The signs-learned start: every weight is |w| x tanh(theta), theta random at first (about
    half the signs right); with theta of the original's signs, the original model comes back."""
    torch = pytest.importorskip("torch")
    from onnxlock.evaluate.attacks.finetune import learn_signs, to_torch, torch_accuracy

    _, (test, test_labels) = digits_data
    module = to_torch(load_model(MODELS / "digits_mlp.onnx"))
    before = torch_accuracy(module, test["pixels"], test_labels)
    weights = {(id(o), n): p.detach().clone() for o in module.modules()
               for n, p in o.named_parameters(recurse=False) if p.ndim >= 2}
    learn_signs(module, seed=0)
    learned = [(o, n) for o in module.modules() for n in getattr(o, "parametrizations", {})]
    assert len(learned) == len(weights) > 0
    for owner, name in learned:
        original, now = weights[id(owner), name], getattr(owner, name).detach()
        live = original != 0  # (the MLP's weights from always-blank pixels are zero)
        right = float((now[live].sign() == original[live].sign()).float().mean())
        assert torch.all(now.abs() <= original.abs()) and 0.4 < right < 0.6
        with torch.no_grad():
            owner.parametrizations[name].original.copy_(20 * original.sign())
        assert torch.allclose(getattr(owner, name), original, rtol=1e-6, atol=0)
    assert torch_accuracy(module, test["pixels"], test_labels) == before


def test_cli_detect_scores_with_the_key(cli, passphrase_env, tmp_path):
    locked = tmp_path / "m.onnx", tmp_path / "m.key"
    write_locked(lock_model(MODELS / "digits_mlp.onnx", passphrase=passphrase_env, kdf_params=CHEAP_KDF,
                            method="confusion,signflip"), *locked)
    result = cli("attack", "detect", locked[0], "--data", MODELS / "digits_calib.npz", "--labels", "labels",
                 "--key", locked[1], "--no-ablation", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["counterfeits"] >= 1 and report["channels"] > report["counterfeits"]
    assert 0 <= report["best_single_auc"] <= 1 and len(report["top_suspects"]) == 10


def test_cli_detect_blind_lists_suspects_without_scores(cli, locked_mlp):
    result = cli("attack", "detect", locked_mlp.model, "--data", MODELS / "digits_calib.npz", "--labels", "labels",
                 "--no-ablation", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert "best_single_auc" not in report and len(report["top_suspects"]) == 10


def test_cli_search_needs_the_key(cli, locked_mlp):
    result = cli("attack", "search", locked_mlp.model, "--data", MODELS / "digits_calib.npz", "--labels", "labels")
    assert result.code == 1 and "--key" in result.err


def test_cli_unknown_labels_array(cli, locked_mlp):
    result = cli("attack", "peel", locked_mlp.model, "--data", MODELS / "digits_calib.npz", "--labels", "nope")
    assert result.code == 1 and "nope" in result.err


def test_pooled_detection_counts_every_lock_and_has_a_chance_baseline(obvious_lock, digits_data):
    original, locked, truth = obvious_lock
    (calib, calib_labels), _ = digits_data
    second = WidenChannelsPass(ratio=0.02, seed=1, tries=4, calibration=calib)(original)
    locks = [(locked, truth), (second.model, truth_from_secret(second.model, second.secret))]
    result = run_detect_pooled(locks, Data(blind(calib), None, calib, calib_labels), ablation=False)
    assert result["locks"] == 2
    assert result["counterfeits"] == sum(len(t.counterfeits) for _, t in locks)
    assert result["channels"] == sum(len(detect(m, blind(calib), ablation=False).channels) for m, _ in locks)
    assert result["best_single_auc"] >= 0.95  # loud counterfeits stay obvious when pooled
    assert result["chance"]["counterfeits"] == result["counterfeits"]
    assert result["chance"]["rank_average_auc"] < 0.8  # random genuine channels are not singled out


def test_pruning_at_several_rates_matches_one_rate_at_a_time(obvious_lock, digits_data):
    from onnxlock.evaluate.attacks.prune import prune_at

    _, locked, _ = obvious_lock
    (calib, _), _ = digits_data
    together = prune_at(locked, blind(calib), "weight_norm", [0.1, 0.5])
    alone = [prune(locked, blind(calib), "weight_norm", rate) for rate in (0.1, 0.5)]
    assert [sorted(p.channels()) for p in together] == [sorted(p.channels()) for p in alone]
    assert len(together[1].channels()) < len(together[0].channels())


def test_shared_shape_constants_get_one_copy_per_use():
    """Two Splits reading one sizes tensor (as in YOLOv8): deleting a channel before one of them
    must not change the other's sizes (the prune attack broke NudeNet's graph that way)."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxlock.evaluate.attacks.channels import unshared_shapes

    sizes = numpy_helper.from_array(np.array([2, 2], np.int64), "sizes")
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
             helper.make_node("Split", ["y", "sizes"], ["c", "d"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["e"]), helper.make_node("MatMul", ["y", "w"], ["f"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "xy"],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abcdef"],
                              [sizes, weight])
    model = helper.make_model(graph)
    copied = unshared_shapes(model)
    first, second = (node.input[1] for node in copied.graph.node[:2])
    assert first == "sizes" and second != first
    values = {t.name: numpy_helper.to_array(t).tolist() for t in copied.graph.initializer}
    assert values[second] == values[first] == [2, 2]
    assert [node.input[1] for node in copied.graph.node[2:]] == ["w", "w"]  # float weights stay shared
    assert [node.input[1] for node in model.graph.node[:2]] == ["sizes", "sizes"]  # the input is not changed
