"""Channel-group analysis on small inline graphs, one per op rule, and lock/restore exactness on each.

Graphs are written in ONNX text (``onnx.parser``) with named nodes; weights are random numpy arrays
appended as initializers. Expected parameter counts are worked out by hand in each test.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxlock.errors import UnsupportedGraphError
from onnxlock.evaluate.damage import run, synthetic_feeds
from onnxlock.graph.channels import AttrEdit, IndexMap, ParamEdit, Role, ShapeEdit
from onnxlock.graph.groups import Group, build_group, find_groups
from onnxlock.graph.normalize import export_graph, import_graph, initializer_arrays, normalize
from onnxlock.graph.patch import narrow
from onnxlock.graph.widen import widen_group
from onnxlock.passes.confusion import WidenChannelsPass

OPSETS = [11, 13, 17, 21]
MIN_CHANGE = 1e-3  # locked outputs must move by at least this share of the original's largest value


def make(text: str, opset: int = 17, domains: str = "", **weights: np.ndarray) -> onnx.ModelProto:
    """A model from an ONNX-text graph plus initializers given as arrays."""
    ir = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    model = onnx.parser.parse_model(f'<ir_version: {ir}, opset_import: ["" : {opset}{domains}]>\n{text}')
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in weights.items())
    onnx.checker.check_model(model, full_check=not domains)
    return model


def randn(seed: int, **shapes: tuple) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def analyse(model: onnx.ModelProto) -> dict[str, Group]:
    """Groups by name (the name of the tensor that seeded them)."""
    return {g.name: g for g in find_groups(import_graph(normalize(model)))}


def param_edits(group: Group) -> dict[tuple[str, int], ParamEdit]:
    """(node name, input index) -> edit."""
    return {(e.node.name, e.index): e for e in group.edits if isinstance(e, ParamEdit)}


def lock_and_restore(model: onnx.ModelProto):
    """Run the full pass and check the guarantees every widenable graph must meet; returns its result."""
    result = WidenChannelsPass(ratio=0.5, seed=0, tries=1)(model)
    onnx.checker.check_model(result.model, full_check=True)
    feeds = synthetic_feeds(model)
    original = run(model, feeds)
    locked = run(result.model, feeds)
    change = max(float(np.abs(a - b).max()) / float(np.abs(a).max()) for a, b in zip(original, locked))
    assert change > MIN_CHANGE, f"locked outputs moved by only {change:.2e} of their range"
    restored = WidenChannelsPass.restore(result.model, result.secret)
    for want, got in zip(original, run(restored, feeds), strict=True):
        assert np.array_equal(want, got)
    before, after = initializer_arrays(normalize(model)), initializer_arrays(restored)
    for name, value in before.items():
        assert after[name].dtype == value.dtype and after[name].shape == value.shape, name
        assert after[name].tobytes() == value.tobytes(), name
    return result


def widened(result, group: str) -> int:
    """Channels the pass added to ``group`` (0 if none)."""
    return next((g["added"] for g in result.report["groups"] if g["group"] == group), 0)


def half_fill(edit: ParamEdit, existing: np.ndarray, rows: int) -> np.ndarray:
    """Counterfeit rows that are easy to spot: all 0.5."""
    return np.full((rows, *existing.shape[1:]), 0.5, existing.dtype)


def widen_by_hand(model: onnx.ModelProto, seeds: list[str], positions: list[list[int]]):
    """Widen the named groups in order (each rebuilt after the ones before), as the pass does."""
    original = normalize(model)
    graph = import_graph(original)
    patch, groups = [], []
    for seed, where in zip(seeds, positions, strict=True):
        group = build_group(graph, graph.tensors()[seed], 1)
        assert group.widenable, group.blocked
        groups.append(group)
        patch.append({"positions": where, "edits": widen_group(group, np.asarray(where), half_fill)})
    return original, export_graph(graph, original), patch, groups


def assert_narrow_exact(original: onnx.ModelProto, locked: onnx.ModelProto, patch: list[dict]) -> None:
    onnx.checker.check_model(locked, full_check=True)
    feeds = synthetic_feeds(original)
    restored = narrow(locked, patch)
    for want, got in zip(run(original, feeds), run(restored, feeds), strict=True):
        assert np.array_equal(want, got)
    after = initializer_arrays(restored)
    for name, value in initializer_arrays(original).items():
        assert after[name].tobytes() == value.tobytes() and after[name].shape == value.shape, name


# --- (a) Conv -> Relu -> Conv -----------------------------------------------------------------

CONV_RELU_CONV = """
net (float[N, 3, 8, 8] x) => (float[N, 5, 8, 8] y) {
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    [relu] r = Relu (h)
    [conv2] y = Conv <pads = [1, 1, 1, 1]> (r, w2)
}"""


@pytest.mark.parametrize("opset", OPSETS)
def test_conv_relu_conv(opset):
    model = make(CONV_RELU_CONV, opset, **randn(1, w1=(4, 3, 3, 3), b1=(4,), w2=(5, 4, 3, 3)))
    groups = analyse(model)
    assert set(groups) == {"h", "y"}
    group = groups["h"]
    assert group.widenable and group.channels == 4 and group.layers() == ["conv1"]
    assert set(group.members) == {"h", "r"}
    # one new channel: a conv1 filter (3 inputs x 3x3) and its bias, and a 3x3 input slice of each conv2 filter
    assert group.params_per_channel() == 3 * 3 * 3 + 1 + 5 * 3 * 3
    edits = param_edits(group)
    assert (edits["conv1", 1].axis, edits["conv1", 1].role) == (0, Role.OUT)
    assert (edits["conv1", 2].axis, edits["conv1", 2].role) == (0, Role.CHANNEL)
    assert (edits["conv2", 1].axis, edits["conv2", 1].role) == (1, Role.IN)
    result = lock_and_restore(model)
    assert widened(result, "h") >= 1


# --- (b) Conv -> BatchNormalization -> Relu -> Conv --------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
def test_batch_norm_params_widen(opset):
    weights = randn(2, w1=(4, 3, 3, 3), scale=(4,), bias=(4,), mean=(4,), w2=(5, 4, 3, 3))
    weights["var"] = np.random.default_rng(3).uniform(0.5, 2.0, 4).astype(np.float32)
    model = make("""
net (float[N, 3, 8, 8] x) => (float[N, 5, 8, 8] y) {
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1)
    [bn] n = BatchNormalization (h, scale, bias, mean, var)
    [relu] r = Relu (n)
    [conv2] y = Conv <pads = [1, 1, 1, 1]> (r, w2)
}""", opset, **weights)
    group = analyse(model)["h"]
    assert group.widenable and set(group.members) == {"h", "n", "r"}
    edits = param_edits(group)
    assert {(i, edits["bn", i].role) for i in range(1, 5)} == {(i, Role.CHANNEL) for i in range(1, 5)}
    assert group.params_per_channel() == 3 * 3 * 3 + 4 + 5 * 3 * 3
    result = lock_and_restore(model)
    k = widened(result, "h")
    assert k >= 1
    locked = initializer_arrays(result.model)
    assert all(locked[name].shape == (4 + k,) for name in ("scale", "bias", "mean", "var"))


# --- (c) residual: two Conv branches joined by Add -----------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
def test_residual_branches_share_one_group(opset):
    model = make("""
net (float[N, 3, 8, 8] x) => (float[N, 5, 8, 8] y) {
    [conv_a] a = Conv <pads = [1, 1, 1, 1]> (x, wa, ba)
    [conv_b] b = Conv <kernel_shape = [1, 1]> (x, wb)
    [add] s = Add (a, b)
    [relu] r = Relu (s)
    [conv_c] y = Conv <pads = [1, 1, 1, 1]> (r, wc)
}""", opset, **randn(4, wa=(4, 3, 3, 3), ba=(4,), wb=(4, 3, 1, 1), wc=(5, 4, 3, 3)))
    groups = analyse(model)
    assert set(groups) == {"a", "y"}  # conv_b's output was claimed by conv_a's group
    group = groups["a"]
    assert group.widenable and group.layers() == ["conv_a", "conv_b"]
    assert set(group.members) == {"a", "b", "s", "r"}
    assert group.params_per_channel() == (3 * 3 * 3 + 1) + 3 + 5 * 3 * 3
    result = lock_and_restore(model)
    k = widened(result, "a")
    locked = initializer_arrays(result.model)
    assert k >= 1 and locked["wa"].shape[0] == locked["wb"].shape[0] == 4 + k


# --- (d) residual from the graph input ------------------------------------------------------------

def test_residual_from_graph_input_is_blocked():
    model = make("""
net (float[N, 4, 8, 8] x) => (float[N, 5, 8, 8] y) {
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1)
    [add] s = Add (x, h)
    [conv2] y = Conv <pads = [1, 1, 1, 1]> (s, w2)
}""", **randn(5, w1=(4, 4, 3, 3), w2=(5, 4, 3, 3)))
    group = analyse(model)["h"]
    assert not group.widenable
    assert "graph input 'x'" in group.blocked
    with pytest.raises(UnsupportedGraphError, match="no layer can take confusion channels"):
        WidenChannelsPass(ratio=0.5, seed=0, tries=1)(model)


# --- (e) Concat on the channel axis -----------------------------------------------------------

CONCAT = """
net (float[N, 3, 8, 8] x) => (float[N, 5, 8, 8] y) {
    [conv1] c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    [conv2] c2 = Conv <pads = [1, 1, 1, 1]> (x, w2, b2)
    [cat] c = Concat <axis = 1> (c1, c2)
    [relu] r = Relu (c)
    [conv3] y = Conv <pads = [1, 1, 1, 1]> (r, w3)
}"""


def concat_model(opset: int = 17) -> onnx.ModelProto:
    return make(CONCAT, opset, **randn(6, w1=(3, 3, 3, 3), b1=(3,), w2=(4, 3, 3, 3), b2=(4,), w3=(5, 7, 3, 3)))


def test_concat_offsets():
    groups = analyse(concat_model())
    first, second = groups["c1"], groups["c2"]
    assert first.widenable and second.widenable
    assert first.members["c"].imap == IndexMap(0, 1) and second.members["c"].imap == IndexMap(3, 1)
    assert param_edits(first)["conv3", 1].imap == IndexMap(0, 1)
    assert param_edits(second)["conv3", 1].imap == IndexMap(3, 1)  # c2's channels start after c1's 3
    assert second.params_per_channel() == 3 * 3 * 3 + 1 + 5 * 3 * 3


def test_concat_second_group_restores_exactly():
    original, locked, patch, _ = widen_by_hand(concat_model(), ["c2"], [[0, 2, 5]])
    w3 = initializer_arrays(locked)["w3"]
    assert w3.shape == (5, 10, 3, 3)
    # the confusion inputs of conv3 sit at 3 + positions; the original c2 slices moved around them
    assert np.all(w3[:, [3, 5, 8]] == 0.5)
    w3_original = initializer_arrays(original)["w3"]
    assert np.array_equal(w3[:, [4, 6, 7, 9]], w3_original[:, 3:])
    assert_narrow_exact(original, locked, patch)


def test_concat_offset_follows_earlier_widening():
    """Widening c1 first moves c2's channels: the rebuilt group sees offset 3 + 2."""
    original, locked, patch, groups = widen_by_hand(concat_model(), ["c1", "c2"], [[1, 4], [4]])
    assert param_edits(groups[1])["conv3", 1].imap == IndexMap(5, 1)
    assert patch[1]["edits"][-1] == ["p", "w3", 1, 5, 1]
    assert_narrow_exact(original, locked, patch)


@pytest.mark.parametrize("opset", OPSETS)
def test_concat_lock_restore(opset):
    result = lock_and_restore(concat_model(opset))
    assert widened(result, "c1") + widened(result, "c2") >= 1


# --- (f) Conv -> Flatten -> Gemm -----------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("trans_b", [0, 1])
def test_flatten_gemm_expands_index(opset, trans_b):
    gemm_shape = (10, 64) if trans_b else (64, 10)
    model = make(f"""
net (float[N, 3, 4, 4] x) => (float[N, 10] y) {{
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    [relu] r = Relu (h)
    [flatten] f = Flatten <axis = 1> (r)
    [fc] y = Gemm <transB = {trans_b}> (f, wf, bf)
}}""", opset, **randn(7, w1=(4, 3, 3, 3), b1=(4,), wf=gemm_shape, bf=(10,)))
    group = analyse(model)["h"]
    assert group.widenable
    assert group.members["f"].imap == IndexMap(0, 16)  # each channel is a 4x4 block of features
    fc = param_edits(group)["fc", 1]
    assert (fc.axis, fc.imap, fc.role) == (1 if trans_b else 0, IndexMap(0, 16), Role.IN)
    assert group.params_per_channel() == 3 * 3 * 3 + 1 + 16 * 10
    result = lock_and_restore(model)
    k = widened(result, "h")
    assert k >= 1
    assert initializer_arrays(result.model)["wf"].shape[1 if trans_b else 0] == 64 + 16 * k


# --- (g) Conv -> Reshape -> Gemm ----------------------------------------------------------------

RESHAPE = """
net (float[{batch}, 3, 4, 4] x) => (float[{batch}, 10] y) {{
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    [relu] r = Relu (h)
    [reshape] f = Reshape (r, target)
    [fc] y = Gemm (f, wf, bf)
}}"""


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("batch, target, shape_edit", [
    (2, [-1, 64], True),  # an explicit C*H*W entry must grow by H*W per channel
    (2, [2, 64], True),
    ("N", [0, -1], False),  # -1 absorbs the new channels, nothing to edit
])
def test_reshape_target_shape(opset, batch, target, shape_edit):
    weights = randn(8, w1=(4, 3, 3, 3), b1=(4,), wf=(64, 10), bf=(10,))
    model = make(RESHAPE.format(batch=batch), opset, target=np.array(target, np.int64), **weights)
    group = analyse(model)["h"]
    assert group.widenable, group.blocked
    assert group.members["f"].imap == IndexMap(0, 16)
    shapes = [e for e in group.edits if isinstance(e, ShapeEdit)]
    assert [(e.dim, e.per_channel) for e in shapes] == ([(1, 16)] if shape_edit else [])
    assert group.params_per_channel() == 3 * 3 * 3 + 1 + 16 * 10  # the shape entry is not a parameter
    result = lock_and_restore(model)
    k = widened(result, "h")
    assert k >= 1
    locked_target = initializer_arrays(result.model)["target"]
    assert locked_target[1] == (64 + 16 * k if shape_edit else -1)


# --- (h) depthwise Conv followed by a pointwise Conv ------------------------------------------

DEPTHWISE = """
net (float[N, 3, 8, 8] x) => (float[N, 6, 8, 8] y) {
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    [relu1] r = Relu (h)
    [dw] d = Conv <group = 4, pads = [1, 1, 1, 1]> (r, wd, bd)
    [relu2] s = Relu (d)
    [pw] y = Conv (s, wp)
}"""


def depthwise_model(opset: int = 17) -> onnx.ModelProto:
    return make(DEPTHWISE, opset, **randn(9, w1=(4, 3, 3, 3), b1=(4,), wd=(4, 1, 3, 3), bd=(4,), wp=(6, 4, 1, 1)))


def group_attr(model: onnx.ModelProto, node: str) -> int:
    found = next(n for n in model.graph.node if n.name == node)
    return next(a.i for a in found.attribute if a.name == "group")


@pytest.mark.parametrize("opset", OPSETS)
def test_depthwise_group_attribute_grows_and_restores(opset):
    model = depthwise_model(opset)
    group = analyse(model)["h"]
    assert group.widenable and set(group.members) == {"h", "r", "d", "s"}
    assert group.layers() == ["conv1", "dw"]
    assert [(e.node.name, e.attr, e.per_channel) for e in group.edits if isinstance(e, AttrEdit)] == [("dw", "group", 1)]
    assert group.params_per_channel() == (3 * 3 * 3 + 1) + (3 * 3 + 1) + 6
    result = lock_and_restore(model)
    k = widened(result, "h")
    assert k >= 1 and group_attr(result.model, "dw") == 4 + k
    assert group_attr(WidenChannelsPass.restore(result.model, result.secret), "dw") == 4


def test_depthwise_narrow_by_hand():
    original, locked, patch, _ = widen_by_hand(depthwise_model(), ["h"], [[0, 5]])
    assert group_attr(locked, "dw") == 6
    assert ["a", "dw", "group", 1] in patch[0]["edits"]
    assert_narrow_exact(original, locked, patch)
    assert group_attr(narrow(locked, patch), "dw") == 4


# --- (i) grouped, non-depthwise Conv ---------------------------------------------------------

def test_grouped_conv_blocks():
    model = make("""
net (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1)
    [relu] r = Relu (h)
    [grouped] y = Conv <group = 2, pads = [1, 1, 1, 1]> (r, wg)
}""", **randn(10, w1=(4, 3, 3, 3), wg=(4, 2, 3, 3)))
    group = analyse(model)["h"]
    assert not group.widenable
    assert "grouped" in group.blocked and "group=2" in group.blocked


# --- (j) MatMul chain on 3-D input ---------------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
def test_matmul_chain_3d(opset):
    model = make("""
net (float[N, 6, 8] x) => (float[N, 6, 5] y) {
    [mm1] h = MatMul (x, w1)
    [bias] hb = Add (h, b1)
    [relu] r = Relu (hb)
    [mm2] y = MatMul (r, w2)
}""", opset, **randn(11, w1=(8, 16), b1=(16,), w2=(16, 5)))
    groups = analyse(model)
    group = groups["h"]
    assert group.widenable and group.axis == 2 and group.channels == 16
    assert set(group.members) == {"h", "hb", "r"}
    edits = param_edits(group)
    assert (edits["mm1", 1].axis, edits["mm1", 1].role) == (-1, Role.OUT)
    assert (edits["bias", 1].axis, edits["bias", 1].role) == (-1, Role.CHANNEL)
    assert (edits["mm2", 1].axis, edits["mm2", 1].role) == (-2, Role.IN)
    assert group.params_per_channel() == 8 + 1 + 5
    assert not groups["y"].widenable
    result = lock_and_restore(model)
    k = widened(result, "h")
    locked = initializer_arrays(result.model)
    assert k >= 1 and locked["w1"].shape == (8, 16 + k) and locked["w2"].shape == (16 + k, 5)


# --- (k) an op with no rule ------------------------------------------------------------------

def test_op_without_rule_blocks():
    model = make("""
net (float[N, 3, 8, 8] x) => (float[N, 5, 8, 4] y) {
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1)
    [topk] v, i = TopK <axis = 3> (h, k)
    [conv2] y = Conv <pads = [1, 1, 1, 1]> (v, w2)
}""", k=np.array([4], np.int64), **randn(12, w1=(4, 3, 3, 3), w2=(5, 4, 3, 3)))
    group = analyse(model)["h"]
    assert not group.widenable
    assert "TopK" in group.blocked and "'topk'" in group.blocked and "no widening rule" in group.blocked


def test_custom_domain_op_blocks():
    model = make("""
net (float[N, 3, 8, 8] x) => (float[N, 5, 8, 8] y) {
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1)
    [scramble] r = my.ops.Scramble (h)
    [conv2] y = Conv <pads = [1, 1, 1, 1]> (r, w2)
}""", domains=', "my.ops" : 1', **randn(13, w1=(4, 3, 3, 3), w2=(5, 4, 3, 3)))
    group = analyse(model)["h"]
    assert not group.widenable
    assert "Scramble" in group.blocked and "'scramble'" in group.blocked and "my.ops" in group.blocked


# --- (l) a layer whose output is a graph output -----------------------------------------------

def test_graph_output_blocks():
    model = make("""
net (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] h, float[N, 5, 8, 8] y) {
    [conv1] h = Conv <pads = [1, 1, 1, 1]> (x, w1)
    [relu] r = Relu (h)
    [conv2] y = Conv <pads = [1, 1, 1, 1]> (r, w2)
}""", **randn(14, w1=(4, 3, 3, 3), w2=(5, 4, 3, 3)))
    groups = analyse(model)
    assert [g.widenable for g in groups.values()] == [False, False]
    assert "graph output 'h'" in groups["h"].blocked
    assert "graph output 'y'" in groups["y"].blocked
    with pytest.raises(UnsupportedGraphError, match="graph output"):
        WidenChannelsPass(ratio=0.5, seed=0, tries=1)(model)


# --- the pass's own guarantee ---------------------------------------------------------------------

def test_lock_never_returns_an_inactive_lock():
    """A draw whose confusion channels are all cut off by the Relu is refused, never returned."""
    model = make(CONV_RELU_CONV, 17, **randn(0, w1=(4, 3, 3, 3), b1=(4,), w2=(5, 4, 3, 3)))
    feeds = synthetic_feeds(model)
    try:
        result = WidenChannelsPass(ratio=0.5, seed=0, tries=1)(model)
    except UnsupportedGraphError as exc:
        assert "changed no output" in str(exc)
    else:
        assert not np.array_equal(run(model, feeds)[0], run(result.model, feeds)[0])


def test_gemm_scalar_bias():
    model = make("""
net (float[N, 8] x) => (float[N, 5] y) {
    [fc1] h = Gemm (x, w1, c1)
    [relu] r = Relu (h)
    [fc2] y = Gemm (r, w2)
}""", **randn(15, w1=(8, 16), c1=(), w2=(16, 5)))
    group = analyse(model)["h"]
    assert group.widenable and ("fc1", 2) not in param_edits(group)  # a broadcast scalar needs no new entries
    lock_and_restore(model)
