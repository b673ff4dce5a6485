"""The base-model attack: given the checkpoint a model was fine-tuned from, a confusion,signflip
lock's counterfeits are told apart by their magnitudes and its flipped signs come back from the base; a
model the locked one did not come from gives nothing (the default mask: test_mask). The CLI verb
answers in JSON."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxlock import lock_model, write_locked
from onnxlock.evaluate.attacks.base_model import copy_signs
from onnxlock.evaluate.attacks.suite import Data, run_base
from onnxlock.evaluate.attacks.truth import truth_from_secret
from onnxlock.fileio import sha256_bytes
from onnxlock.graph.io import parse_model
from onnxlock.graph.normalize import normalize
from onnxlock.key import open_key

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

CHANCE = 0.1


def _moved(model: onnx.ModelProto, scale: float, seed: int, shuffle: bool = False) -> onnx.ModelProto:
    """``model`` with every weight of rank 2 or more moved by ``scale`` x its tensor's std of noise
    (a stand-in for fine-tuning), or its values shuffled within the tensor (a model it did not come from)."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.ndim < 2 or values.dtype != np.float32:
            continue
        if shuffle:
            values = rng.permutation(values.reshape(-1)).reshape(values.shape)
        else:
            values = values + scale * values.std() * rng.standard_normal(values.shape).astype(np.float32)
        tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), tensor.name))
    return out


@pytest.fixture(scope="module")
def fine_tuned_lock(tmp_path_factory):
    base = normalize(onnx.load(MODELS / "digits_cnn.onnx"))
    tuned = _moved(base, 0.1, seed=1)
    with np.load(MODELS / "digits_test.npz") as test:
        data = Data({"pixels": test["pixels"]}, test["labels"])
    locked = lock_model(tuned, passphrase=PASSPHRASE, seed=0, kdf_params=CHEAP_KDF, method="confusion,signflip",
                        calibration={"pixels": data.feeds["pixels"][:64]})
    model = parse_model(locked.model)
    truth = truth_from_secret(model, open_key(locked.key, passphrase=PASSPHRASE, model_sha256=sha256_bytes(locked.model)))
    folder = tmp_path_factory.mktemp("base")
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    onnx.save(base, folder / "base.onnx")
    return base, model, truth, data, folder


def test_the_base_peels_a_signflip_lock_and_gives_the_signs_back(fine_tuned_lock):
    base, model, truth, data, _ = fine_tuned_lock
    result = run_base(model, base, data, truth)
    assert result["counterfeits"] > 0 and result["removed_counterfeit"] == result["counterfeits"] == result["removed"]
    assert result["counterfeit_auc"] > 0.95 and result["signs_right"] > 0.9
    assert result["before"]["agreement"] <= CHANCE + 0.1 and result["after"]["agreement"] > 0.9


def test_a_model_it_did_not_come_from_gives_nothing(fine_tuned_lock):
    base, model, truth, data, _ = fine_tuned_lock
    result = run_base(model, _moved(base, 0.0, seed=2, shuffle=True), data, truth)
    assert 0.4 < result["signs_right"] < 0.6
    assert result["after"]["agreement"] <= CHANCE + 0.15


def test_copy_signs_keeps_magnitudes_and_skips_zeros_and_other_shapes():
    weight = np.array([[1.0, -2.0], [3.0, -4.0]], np.float32)
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [], "g", [], [], [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(weight[0], "b")]))
    theirs = {"w": np.array([[-1.0, 0.0], [3.0, 5.0]], np.float32), "b": np.array([-1.0, -1.0], np.float32)}
    copied, names = copy_signs(model, theirs)
    values = {t.name: numpy_helper.to_array(t) for t in copied.graph.initializer}
    assert names == ["w"] and values["w"].tolist() == [[-1.0, -2.0], [3.0, 4.0]]
    assert values["b"].tolist() == [1.0, -2.0]  # rank 1: left alone


def test_cli_base_answers_in_json(cli, fine_tuned_lock, passphrase_env):
    folder = fine_tuned_lock[4]
    result = cli("attack", "base", folder / "locked.onnx", "--base", folder / "base.onnx",
                 "--data", MODELS / "digits_test.npz", "--labels", "labels", "--key", folder / "model.key", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["attack"] == "base" and report["signs_right"] > 0.9 and report["after"]["accuracy"] > 0.9
    refused = cli("attack", "base", folder / "locked.onnx", "--data", MODELS / "digits_test.npz")
    assert refused.code != 0 and "--base" in refused.err
