"""The stacked confusion,advparams lock checked against the thief's blind peel (passes/peel_guard.py)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxlock.evaluate.attacks.channels import Channel, Peeling
from onnxlock.evaluate.attacks.peel import peel
from onnxlock.evaluate.damage import run
from onnxlock.graph.io import load_model
from onnxlock.graph.normalize import initializer_arrays, normalize
from onnxlock.passes import PerturbWeightsPass, WidenChannelsPass
from onnxlock.passes.advparams import weight_names
from onnxlock.passes.weight_bits import float_bits, write_bits
from onnxlock.passes.peel_guard import peeled_positions

from conftest import MODELS

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def calib() -> tuple[dict, np.ndarray]:
    with np.load(MODELS / "digits_calib.npz") as data:
        return {"pixels": data["pixels"]}, data["labels"]


def test_peeled_positions_follow_a_weight_through_the_deletion(calib):
    """A value marked in the locked model at the position the map gives turns up at the peeled
    position it was mapped from, for every mapped tensor."""
    locked = WidenChannelsPass(seed=0, calibration=calib[0])(normalize(load_model(MODELS / "digits_cnn.onnx"))).model
    start = Peeling.start(locked)
    removed = [Channel(name, alive[0]) for name, alive in start.alive.items()]  # the first channel of each group
    peeled = start.without(removed).model
    positions = peeled_positions(locked, peeled, removed, weight_names(locked))
    assert positions and any(len(where) < int(np.prod(initializer_arrays(locked)[name].shape))
                             for name, where in positions.items())  # something was deleted and mapped
    for name, where in positions.items():
        peeled_index = len(where) // 2
        marked = type(locked)()
        marked.CopyFrom(locked)
        tensor = next(t for t in marked.graph.initializer if t.name == name)
        write_bits(tensor, [(int(where[peeled_index]), float_bits(1234.5))])
        after = initializer_arrays(Peeling.start(marked).without(removed).model)[name].reshape(-1)
        assert np.flatnonzero(after == np.float32(1234.5)).tolist() == [peeled_index]


def _stacked(calib, guard: bool):
    original = normalize(load_model(MODELS / "digits_transformer.onnx"))
    confusion = WidenChannelsPass(seed=1, calibration=calib[0])(original)
    advparams = PerturbWeightsPass(calibration=calib[0], labels=calib[1], seed=1, peel_guard=guard)
    return original, advparams(original, onto=normalize(confusion.model), earlier=[confusion.secret])


def test_the_peel_no_longer_strips_the_stacked_transformer(calib, digits):
    """Seed 1: the thief's peel of the stacked transformer deleted the channels carrying the
    AdvParams weights (0.35 held-out agreement, AdvParams alone 0.20). The guard peels its own
    lock and tops it up in what the peel leaves, within the 64-weight budget."""
    original, result = _stacked(calib, guard=True)
    assert result.report["weights_changed"] <= 64
    rounds = result.report["peel_guard"]
    kept = [r["agreement_after_peel"] for r in rounds if r.get("kept")]
    assert len(kept) == 1 and kept[0] <= 0.15
    thief = {"pixels": calib[0]["pixels"][:64]}  # the suite's blind thief: unlabelled inputs
    peeled = peel(result.model, thief).peeling.model
    reference = run(original, {"pixels": digits["pixels"]})[0].argmax(-1)
    agreement = float(np.mean(run(peeled, {"pixels": digits["pixels"]})[0].argmax(-1) == reference))
    assert agreement <= 0.2
