"""Fast checks of the strength measurement (onnxlock.evaluate.strength) on two small models."""

import pytest

from onnxlock.evaluate import strength

# digits_cnn at ratio 0.02, seed 0: agreement 0.475 (0.14-0.50 over seeds 0-5); the original scores 99.2%
CNN_AGREEMENT_MAX = 0.6


@pytest.fixture(scope="module")
def cnn():
    return strength.measure("digits_cnn", seed=0)


@pytest.fixture(scope="module")
def cls():
    if not strength.ocr_available():
        pytest.skip("rapidocr-onnxruntime is not installed")
    return strength.measure("ocr_cls", seed=0)


def test_cnn_restore_is_exact(cnn):
    assert cnn["restore_max_abs_diff"] == 0.0
    assert cnn["initializers_equal"] and cnn["weights"]["initializers"]["compared"] > 0
    assert cnn["restore_exact"]


def test_cnn_locked_is_damaged(cnn):
    assert cnn["locked_finite"]
    assert cnn["value"] == cnn["metrics"]["top1_agreement"] <= CNN_AGREEMENT_MAX
    assert cnn["metrics"]["accuracy_locked"] < cnn["metrics"]["accuracy_original"] - 0.3
    assert 0 < cnn["params_added"] <= 0.02 * cnn["params_original"]
    assert 0 < cnn["groups_widened"] <= cnn["groups_total"]


def test_ocr_cls_restore_is_exact(cls):
    assert cls["restore_max_abs_diff"] == 0.0
    assert cls["initializers_equal"]  # the file has none: its weights are Constant nodes
    assert cls["weights"]["constants"]["compared"] > 0
    assert cls["constants_equal"], cls["weights"]["constants"]  # same dtype, shape (0-d too) and bytes
    assert cls["restore_exact"]
    assert cls["locked_finite"]


def test_targets():
    assert strength.Target("<=", 0.15).met(0.15) and not strength.Target("<=", 0.15).met(0.2)
    assert strength.Target(">=", 0.9).met(1.2) and not strength.Target(">=", 0.9).met(float("nan"))
    assert strength.Target("|x|<=", 0.1).met(-0.05) and not strength.Target("|x|<=", 0.1).met(-0.2)
