"""A lock never ships implausible outputs: a group with no plausible draw is skipped and reported.

Reproduces issue 7's dynamo resnet18 lock (outputs 5e8 times the original's, report saying damage
0.000) with the smallest graph that shows it: a head whose output is a near-cancelling sum, so
every extra channel blows its peak up, beside an ordinary head.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock.errors import UnsupportedGraphError
from onnxlock.evaluate.damage import PLAUSIBLE_RANGE, all_plausible, cpu_session, damage, synthetic_feeds
from onnxlock.passes import WidenChannelsPass, restore

RNG = np.random.default_rng(7)


def _gemm(name: str, x: str, w: np.ndarray, b: np.ndarray) -> tuple[list, list]:
    inits = [numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
             numpy_helper.from_array(b.astype(np.float32), f"{name}.b")]
    return [helper.make_node("Gemm", [x, f"{name}.w", f"{name}.b"], [name], name=name, transB=1)], inits


def cancelling_head() -> tuple[list, list]:
    """x -> 8 hidden units in identical pairs -> 2 outputs weighted +c/-c per pair: the output is
    its bias (1e-4), so any unpaired channel dwarfs it."""
    rows = RNG.standard_normal((4, 8))
    hidden_w = np.repeat(rows, 2, axis=0)
    cols = RNG.uniform(0.5, 1.0, (2, 4))
    out_w = np.stack([cols, -cols], axis=-1).reshape(2, 8)
    nodes, inits = _gemm("cancel_hidden", "x", hidden_w, np.zeros(8))
    more_nodes, more_inits = _gemm("y_cancel", "cancel_hidden", out_w, np.array([1e-4, -1e-4]))
    return nodes + more_nodes, inits + more_inits


def ordinary_head() -> tuple[list, list]:
    nodes, inits = _gemm("hidden", "x", RNG.standard_normal((8, 8)) * 0.5, RNG.uniform(-0.1, 0.1, 8))
    nodes.append(helper.make_node("Relu", ["hidden"], ["hidden_relu"], name="hidden_relu"))
    more_nodes, more_inits = _gemm("y", "hidden_relu", RNG.standard_normal((4, 8)) * 0.5, RNG.uniform(-0.1, 0.1, 4))
    return nodes + more_nodes, inits + more_inits


def model(*heads) -> tuple:
    nodes, inits, outputs = [], [], []
    for head in heads:
        head_nodes, head_inits = head()
        nodes += head_nodes
        inits += head_inits
        outputs.append(helper.make_tensor_value_info(head_nodes[-1].output[0], TensorProto.FLOAT, ["N", None]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    graph = helper.make_graph(nodes, "heads", [x], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_every_draw_implausible_is_refused_not_shipped():
    with pytest.raises(UnsupportedGraphError, match="plausible"):
        WidenChannelsPass(ratio=0.5, seed=0, tries=8)(model(cancelling_head))


def test_implausible_group_is_skipped_and_reported():
    original = model(ordinary_head, cancelling_head)
    result = WidenChannelsPass(ratio=0.5, seed=0, tries=8)(original)
    report = result.report
    assert [s["group"] for s in report["skipped"]] == ["cancel_hidden"]
    assert "no plausible draw in 8 tries" in report["skipped"][0]["reason"]
    assert [g["group"] for g in report["groups"]] == ["hidden"] and report["groups_widened"] == 1
    feeds = synthetic_feeds(original)
    reference = cpu_session(original).run(None, feeds)
    locked = cpu_session(result.model).run(None, feeds)
    assert all_plausible(reference, locked)
    low, high = PLAUSIBLE_RANGE
    for want, got in zip(reference, locked):
        assert low <= np.abs(got).max() / np.abs(want).max() <= high
    assert np.array_equal(reference[1], locked[1])  # the cancelling head is untouched
    # the report's damage is the shipped model's, not the last draw's
    assert report["calibration_damage"] == pytest.approx(damage(reference, locked), abs=1e-3)
    assert report["calibration_damage"] > 0.05
    restored = cpu_session(restore(result.model, result.secret)).run(None, feeds)
    for want, got in zip(reference, restored):
        assert np.array_equal(want, got)


def test_the_cli_summary_of_a_lock_with_a_skipped_group(cli, passphrase_env, tmp_path):
    """A lone confusion lock reports its skipped groups under the same key a stack reports skipped
    methods: the summary names them as groups (it once took them for methods and crashed)."""
    import onnx

    path = tmp_path / "heads.onnx"
    onnx.save(model(ordinary_head, cancelling_head), path)
    result = cli("lock", path, "-o", tmp_path / "l.onnx", "--key", tmp_path / "k.key", "--method", "confusion",
                 "--ratio", "0.5", "--tries", "8", "--seed", "0")
    assert result.code == 0, result.err
    assert "1 of 4 layer groups widened" in result.out  # the two output layers take none
    assert "1 layer group(s) left unwidened: every draw gave implausible outputs" in result.out
