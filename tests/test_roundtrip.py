"""The core invariant on real models: restore(lock(m)) == m, and the locked file alone is useless.

Every bundled digits model and the three pretrained PP-OCR models are locked once at the default
settings (``mask``: every trained parameter's value XORed with a keyed stream); the restored
session must give outputs identical to the original's, and the unlocked model initializers
byte-equal to the original's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxlock import load_session, lock_model, restore_model, write_locked
from onnxlock.evaluate.damage import cpu_session
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

DIGITS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]
OCR = ["ocr_det", "ocr_rec", "ocr_cls"]


@dataclass
class Case:
    name: str
    original: Path
    locked: Path
    key: Path
    feeds: dict[str, np.ndarray]
    report: dict


def _digits_data(name: str) -> tuple[Path, dict, dict]:
    with np.load(MODELS / "digits_calib.npz") as calib, np.load(MODELS / "digits_test.npz") as test:
        return MODELS / f"{name}.onnx", {"pixels": calib["pixels"]}, {"pixels": test["pixels"]}


def _ocr_data(name: str) -> tuple[Path, dict, dict]:
    ocr = pytest.importorskip("onnxlock.evaluate.ocr")
    try:
        path = ocr.ocr_model_paths()[name.removeprefix("ocr_")]
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    input_name = onnx.load(path, load_external_data=False).graph.input[0].name
    if name == "ocr_det":
        make = lambda seed: ocr.det_input(ocr.render_page(seed=seed))  # noqa: E731
    else:
        prep = ocr.rec_input if name == "ocr_rec" else ocr.cls_input
        make = lambda seed: prep([img for _, img in ocr.render_text_lines(8, seed=seed)])  # noqa: E731
    return path, {input_name: make(100)}, {input_name: make(0)}


@pytest.fixture(scope="module", params=DIGITS + OCR)
def case(request, tmp_path_factory) -> Case:
    name = request.param
    original, calibration, feeds = (_ocr_data if name in OCR else _digits_data)(name)
    # one draw per group for the big OCR models keeps CI fast; the digits use the defaults
    tries = {"tries": 1} if name in OCR else {}
    locked = lock_model(original, passphrase=PASSPHRASE, seed=0, kdf_params=CHEAP_KDF,
                        calibration=calibration, **tries)
    assert locked.report["method"] == "mask"
    folder = tmp_path_factory.mktemp(name)
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    return Case(name, original, folder / "locked.onnx", folder / "model.key", feeds, locked.report)


def test_restored_session_outputs_identical(case):
    expected = cpu_session(case.original.read_bytes()).run(None, case.feeds)
    restored = load_session(case.locked, case.key, passphrase=PASSPHRASE, providers="cpu").run(None, case.feeds)
    for got, want in zip(restored, expected):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) == 0.0


def original_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers, and the tensors of Constant nodes (the PP-OCR models keep weights there)."""
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return weights


def test_unlocked_initializers_byte_equal(case):
    original = original_weights(onnx.load(case.original))
    restored = restore_model(case.locked.read_bytes(), case.key.read_bytes(), PASSPHRASE)
    restored_inits = {t.name: numpy_helper.to_array(t) for t in restored.graph.initializer}
    assert len(original) > 5
    for name, want in original.items():
        got = restored_inits[name]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_locked_model_changes_every_output(case):
    """The default lock changes every output (on the PP-OCR recogniser and detector the masked
    values drive them to NaN; plausibility of confusion locks is tested in test_plausibility)."""
    expected = cpu_session(case.original.read_bytes()).run(None, case.feeds)
    locked = cpu_session(case.locked.read_bytes()).run(None, case.feeds)
    for got, want in zip(locked, expected):
        assert got.shape == want.shape and not np.array_equal(got, want)


def test_locked_digits_are_at_chance(case):
    if case.name not in DIGITS:
        pytest.skip("labelled held-out data only for the digits models")
    with np.load(MODELS / "digits_test.npz") as data:
        labels = data["labels"]
    locked = cpu_session(case.locked.read_bytes()).run(None, case.feeds)[0]
    assert np.mean(locked.argmax(-1) == labels) <= 0.10 + 0.10  # chance (10 classes) + 10 points


def test_the_default_locks_nearly_every_trained_value(case):
    """Weights, biases and normalisation scales and shifts: at least 95% of the model's float values
    (what is left: BatchNorm's running statistics and scalar constants)."""
    floats = [a for a in initializer_arrays(normalize(load_model(case.original))).values() if a.dtype.kind == "f"]
    assert case.report["weights_locked"] >= 0.95 * sum(a.size for a in floats)
    assert case.locked.read_bytes() != case.original.read_bytes()
