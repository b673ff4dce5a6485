"""The attacks on changed weights (AdvParams) measure what they should: the suspicion scores find a
crude perturbation, the revert attack undoes it without labels, the truth names the weights a real
lock changed, fine-tuning reports the recovered share, and the CLI verbs answer in JSON."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock import lock_model, write_locked
from onnxlock.evaluate.attacks import truth_from_secret
from onnxlock.evaluate.attacks.changed_weights import score_weights
from onnxlock.evaluate.attacks.revert import with_values
from onnxlock.evaluate.attacks.scoring import roc_auc, roc_auc_parts
from onnxlock.evaluate.attacks.suite import Data, run_finetune, run_revert, run_weights_detect
from onnxlock.evaluate.attacks.truth import Truth
from onnxlock.evaluate.damage import run
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnxlock.passes import PerturbWeightsPass
from onnxlock.passes.advparams import weight_names
from onnxlock.torchbridge import TorchBridge

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

torch = pytest.importorskip("torch")
BLIND_SAMPLES = 64
MAX_WEIGHTS = 16


@pytest.fixture(scope="module")
def digits():
    with np.load(MODELS / "digits_calib.npz") as calib, np.load(MODELS / "digits_test.npz") as test:
        blind = {"pixels": calib["pixels"][:BLIND_SAMPLES]}
        return Data(blind, calib["labels"][:BLIND_SAMPLES], {"pixels": test["pixels"]}, test["labels"])


@pytest.fixture(scope="module")
def crude_lock():
    """digits_cnn with 4 weights of each candidate tensor set to 8 x the tensor's largest magnitude."""
    original = normalize(load_model(MODELS / "digits_cnn.onnx"))
    locked = onnx.ModelProto()
    locked.CopyFrom(original)
    rng, changed = np.random.default_rng(0), set()
    for tensor in locked.graph.initializer:
        if tensor.name in weight_names(original):
            values = numpy_helper.to_array(tensor).copy()
            flat = values.reshape(-1)
            picked = rng.choice(flat.size, 4, replace=False)
            flat[picked] = 8 * np.abs(flat).max()
            changed |= {(tensor.name, int(i)) for i in picked}
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return locked, Truth(frozenset(), original, frozenset(changed))


@pytest.fixture(scope="module")
def advparams_lock(digits):
    """digits_cnn under a real AdvParams lock (few weights, 64 calibration inputs)."""
    original = load_model(MODELS / "digits_cnn.onnx")
    result = PerturbWeightsPass(max_weights=MAX_WEIGHTS, calibration=digits.feeds, labels=digits.labels,
                                seed=0)(original)
    return result.model, truth_from_secret(result.model, result.secret)


def test_auc_tensor_by_tensor_equals_auc_of_the_whole():
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 5, size=n).astype(np.float32) for n in (50, 3, 200)]  # many ties
    positives = [rng.choice(len(p), size=k, replace=False) for p, k in zip(parts, (4, 1, 7))]
    flags = np.concatenate([np.isin(np.arange(len(p)), i) for p, i in zip(parts, positives)])
    assert roc_auc_parts(parts, positives) == pytest.approx(roc_auc(np.concatenate(parts), flags))
    assert roc_auc_parts(parts, [np.zeros(0, int)] * 3) is None


def test_scores_find_a_crude_perturbation(crude_lock, digits):
    locked, truth = crude_lock
    report = run_weights_detect(locked, digits, truth)
    assert {"magnitude", "filter_z", "gradient", "taylor", "gradient_batchnorm"} <= set(report["auc"])
    assert report["changed"] == len(truth.changed_weights) == 20 and report["changed_unscored"] == 0
    assert report["auc"]["magnitude"] > 0.9 and report["auc"]["filter_z"] > 0.9
    assert report["best_single_auc"] > 0.95
    assert report["weights"] == sum(a.size for n, a in initializer_arrays(locked).items() if n in weight_names(locked))


def test_revert_restores_a_crude_lock_without_labels(crude_lock, digits):
    locked, truth = crude_lock
    report = run_revert(locked, Data(digits.feeds, None, digits.test_feeds, digits.test_labels), truth,
                        tops=[16, 64], repairs=["median", "zero"])
    assert report["judged_by"] == "agreement" and report["before"]["agreement"] < 0.3
    assert report["best"]["agreement"] > 0.95 and report["best"]["reverted_changed"] == 20
    assert report["blind_choice"]["agreement"] > 0.95  # chosen by health alone, as a thief would
    scores = score_weights(locked, digits.feeds)
    for row in report["results"]:
        picks = scores.random(row["top"]) if row["score"] == "random" else scores.top(row["score"], row["top"])
        assert row["reverted_changed"] == len(truth.changed_weights & set(picks))
    assert {r["score"] for r in report["results"]} >= {"magnitude", "taylor", "random"}


def test_truth_names_the_weights_a_real_lock_changed(advparams_lock, digits):
    locked, truth = advparams_lock
    assert not truth.counterfeits and 1 <= len(truth.changed_weights) <= MAX_WEIGHTS
    before, after = initializer_arrays(truth.original), initializer_arrays(locked)
    differ = {(n, int(i)) for n in weight_names(locked) for i in np.flatnonzero(before[n] != after[n])}
    assert differ == set(truth.changed_weights)
    report = run_weights_detect(locked, digits, truth)
    assert report["changed"] == len(truth.changed_weights) and report["changed_unscored"] == 0
    assert all(0 <= auc <= 1 for auc in report["auc"].values())
    assert set(report["top_suspects"]) == set(report["auc"])


def test_finetune_reports_the_recovered_share(advparams_lock, digits):
    locked, truth = advparams_lock
    with np.load(MODELS / "digits_calib.npz") as calib:
        data = Data({"pixels": calib["pixels"]}, calib["labels"], digits.test_feeds, digits.test_labels)
    report = run_finetune(locked, data, truth, fractions=[0.1], steps=20)
    [row] = report["results"]
    assert report["accuracy_locked"] < 0.5 < report["accuracy_original"]
    lost = report["accuracy_original"] - report["accuracy_locked"]
    assert row["recovered_share"] == pytest.approx((row["accuracy_finetuned"] - report["accuracy_locked"]) / lost,
                                                   abs=1e-4)
    assert row["recovered_share_scratch"] == pytest.approx(
        (row["accuracy_scratch"] - report["accuracy_locked"]) / lost, abs=1e-4)


@pytest.fixture(scope="module")
def locked_files(tmp_path_factory, digits):
    locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=PASSPHRASE, seed=0, kdf_params=CHEAP_KDF,
                        method="advparams", max_weights=MAX_WEIGHTS, calibration=digits.feeds, labels=digits.labels)
    folder = tmp_path_factory.mktemp("advparams")
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    return folder / "locked.onnx", folder / "model.key"


def test_cli_weights_scores_with_the_key(cli, locked_files, passphrase_env):
    model, key = locked_files
    result = cli("attack", "weights", model, "--data", MODELS / "digits_calib.npz", "--labels", "labels",
                 "--key", key, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["attack"] == "weights" and 1 <= report["changed"] <= MAX_WEIGHTS
    assert set(report["auc"]) == {"magnitude", "filter_z", "gradient", "taylor"}  # the MLP has no batch norm


def test_cli_revert_runs_blind_and_answers_json(cli, locked_files):
    model, _ = locked_files
    result = cli("attack", "revert", model, "--data", MODELS / "digits_calib.npz", "--labels", "labels",
                 "--test", MODELS / "digits_test.npz", "--top", "16", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["judged_by"] == "accuracy" and "reverted_changed" not in report["best"]
    assert report["best"]["accuracy"] >= report["before"]["accuracy"]


def test_cli_weights_on_a_bad_file_is_one_line(cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = cli("attack", "weights", bad, "--data", MODELS / "digits_calib.npz", "--labels", "labels")
    assert result.code == 1 and result.err.startswith("onnxlock: error:") and result.err.count("\n") == 1


def test_cli_search_refuses_a_key_without_channels(cli, locked_files, passphrase_env):
    model, key = locked_files
    result = cli("attack", "search", model, "--data", MODELS / "digits_calib.npz", "--labels", "labels",
                 "--key", key)
    assert result.code == 1 and "confusion channels" in result.err


@pytest.mark.parametrize("name", ["digits_mlp", "digits_transformer"])
def test_bridge_set_values_edits_as_the_onnx_file_would(name, digits):
    """Many weights at once, in every layout onnx2torch holds them (Linear, transposed, buffers)."""
    model = normalize(load_model(MODELS / f"{name}.onnx"))
    bridge, rng, values = TorchBridge(model, digits.feeds), np.random.default_rng(0), {}
    for tensor in weight_names(model):
        indices = rng.choice(bridge.arrays[tensor].size, 8, replace=False)
        values[tensor] = (indices, rng.normal(0, 1, 8).astype(np.float32))
        bridge.set_values(tensor, *values[tensor])
    with torch.no_grad():
        ours = bridge.forward(digits.feeds)[0].numpy()
    expected = run(with_values(model, values), digits.feeds)[0]
    assert np.abs(ours - expected).max() < 1e-4 and np.abs(expected - run(model, digits.feeds)[0]).max() > 0.1


def test_a_model_without_health_loss_gets_the_value_scores_and_no_descent():
    """One regression output and no batch norm: nothing to differentiate, the rest still runs."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 1, (32, 1)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": rng.normal(0, 1, (16, 32)).astype(np.float32)}
    assert set(run_weights_detect(model, Data(feeds), None)["scores"]) == {"magnitude", "filter_z"}
    report = run_revert(model, Data(feeds), None, tops=[4])
    assert report["judged_by"] == "health" and {r["repair"] for r in report["results"]} == {"median", "zero"}


def test_a_saturated_softmax_still_has_a_gradient_at_its_logits():
    """A lock can push logits 1e8 apart: the probabilities are then flat, the tempered logits not."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((1e7 * rng.normal(0, 1, (32, 4))).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="mm"),
             helper.make_node("Softmax", ["logits"], ["p"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": rng.normal(0, 1, (16, 32)).astype(np.float32)}
    assert set(np.unique(run(model, feeds)[0])) <= {0.0, 1.0}  # saturated
    scores = score_weights(model, feeds)
    assert (scores.scores["gradient"][0] > 0).mean() > 0.5
