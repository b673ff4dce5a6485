"""The sign-recovery attack (BatchNorm statistics) measures what it should: its input patches are
the Conv's own, a channel of few weights is recovered exactly from statistics made with its true
signs, a channel of many is not pinned down, and on a real sign-flip lock the first layer comes
back while the model stays broken; the CLI verb answers in JSON."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock import lock_model, write_locked
from onnxlock.evaluate.attacks.signs import EXHAUSTIVE, best_signs, conv_bn_pairs, objective, patches
from onnxlock.evaluate.attacks.suite import Data, run_signs
from onnxlock.evaluate.attacks.truth import truth_from_secret
from onnxlock.evaluate.damage import run
from onnxlock.fileio import sha256_bytes
from onnxlock.graph.io import parse_model
from onnxlock.key import open_key

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

CHANCE = 0.1


def _conv_model(weight: np.ndarray, **attrs) -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 2, 1, 0], "strides": [2, 1]}, {"dilations": [2, 2], "group": 2},
                                   {"group": 4, "pads": [1, 1, 1, 1]}])
def test_patches_reproduce_the_conv(attrs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 9, 8)).astype(np.float32)
    groups = attrs.get("group", 1)
    weight = rng.normal(size=(8, 4 // groups, 3, 2)).astype(np.float32)
    expected = run(_conv_model(weight, **attrs), {"x": x})[0]  # (N, 8, H, W)
    rows = patches(x.astype(np.float64), _conv_model(weight, **attrs).graph.node[0], (3, 2), rng)
    per_group = len(weight) // groups
    for c in range(len(weight)):
        ours = rows[c // per_group] @ weight[c].reshape(-1)  # rows in (sample, output position) order
        np.testing.assert_allclose(ours, expected[:, c].reshape(-1), rtol=1e-4, atol=1e-4)


def _statistics(rng, n, rows=4000):
    inputs = rng.normal(size=(rows, n)) * rng.uniform(0.2, 2.0, n) + rng.normal(size=n)
    truth = rng.normal(size=n)
    out = inputs @ truth
    return inputs.mean(axis=0), np.cov(inputs, rowvar=False), truth, float(out.mean()), float(out.std())


def test_few_weights_come_back_exactly_and_many_do_not():
    rng = np.random.default_rng(1)
    means, cov, truth, mean, std = _statistics(rng, 9)
    signs = best_signs(np.abs(truth), np.ones(9), means, cov, 0.0, mean, std, rng)
    assert 9 <= EXHAUSTIVE and np.array_equal(signs, np.sign(truth))
    # 64 weights, two numbers to fit: the search fits them as well as the truth does, with other signs
    means, cov, truth, mean, std = _statistics(rng, 64)
    start = np.where(rng.random(64) < 0.5, 1.0, -1.0)
    signs = best_signs(np.abs(truth), start, means, cov, 0.0, mean, std, rng)
    fit = objective((signs * np.abs(truth))[None], means, cov, 0.0, mean, std)[0]
    assert fit < 0.01 and np.mean(signs == np.sign(truth)) < 0.8


@pytest.fixture(scope="module")
def signflip_lock(tmp_path_factory):
    with np.load(MODELS / "digits_calib.npz") as calib, np.load(MODELS / "digits_test.npz") as test:
        data = Data({"pixels": calib["pixels"][:64]}, None, {"pixels": test["pixels"]}, test["labels"])
    locked = lock_model(MODELS / "digits_cnn.onnx", passphrase=PASSPHRASE, seed=0, kdf_params=CHEAP_KDF,
                        method="signflip")
    folder = tmp_path_factory.mktemp("signflip")
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    model = parse_model(locked.model)
    secret = open_key(locked.key, passphrase=PASSPHRASE, model_sha256=sha256_bytes(locked.model))
    return model, truth_from_secret(model, secret), data, folder


def test_first_layer_comes_back_and_the_model_stays_broken(signflip_lock):
    model, truth, data, _ = signflip_lock
    assert [p.weight for p in conv_bn_pairs(model)] == ["0.weight", "3.weight", "7.weight"]
    result = run_signs(model, data, truth)
    first, *rest = result["layers"]
    assert first["exhaustive"] and first["signs_right_before"] < 0.6 and first["signs_right_after"] > 0.85
    assert all(0.4 < layer["signs_right_after"] < 0.6 for layer in rest)  # 144 and 288 weights a channel
    # each lock draws a fresh keystream: 13 locks gave 0.05-0.16 before and 0.04-0.12 after
    assert result["before"]["accuracy"] <= CHANCE + 0.1 and result["after"]["accuracy"] <= CHANCE + 0.1


def test_cli_signs_answers_in_json(cli, signflip_lock, passphrase_env):
    folder = signflip_lock[3]
    result = cli("attack", "signs", folder / "locked.onnx", "--data", MODELS / "digits_calib.npz",
                 "--labels", "labels", "--test", MODELS / "digits_test.npz", "--key", folder / "model.key", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["attack"] == "signs" and len(report["layers"]) == 3
    assert report["layers"][0]["signs_right_after"] > 0.85 and report["after"]["accuracy"] <= CHANCE + 0.1
