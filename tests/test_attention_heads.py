"""Multi-head attention: the q/k and v/out projections widen per head (k features added to every head)."""

from __future__ import annotations

import numpy as np

from onnxlock.graph.channels import IndexMap, ShapeEdit

from test_groups import analyse, lock_and_restore, make, param_edits, randn

# x[N,4,8] -> q, k, v projections -> 2 heads of 4 -> softmax(q k^T) v -> merge -> output projection
ATTENTION = """
attn (float[N, 4, 8] x) => (float[N, 4, 8] y) {
    [q] q = MatMul (x, wq)
    [k] k = MatMul (x, wk)
    [v] v = MatMul (x, wv)
    [q_split] qh = Reshape (q, split)
    [k_split] kh = Reshape (k, split)
    [v_split] vh = Reshape (v, split)
    [q_t] qt = Transpose <perm = [0, 2, 1, 3]> (qh)
    [k_t] kt = Transpose <perm = [0, 2, 3, 1]> (kh)
    [v_t] vt = Transpose <perm = [0, 2, 1, 3]> (vh)
    [scores] s = MatMul (qt, kt)
    [softmax] p = Softmax <axis = -1> (s)
    [mix] o = MatMul (p, vt)
    [o_t] ot = Transpose <perm = [0, 2, 1, 3]> (o)
    [merge] m = Reshape (ot, merge)
    [out] y = MatMul (m, wo)
}"""


def attention_model():
    weights = randn(3, wq=(8, 8), wk=(8, 8), wv=(8, 8), wo=(8, 8))
    return make(ATTENTION, split=np.array([-1, 4, 2, 4], np.int64), merge=np.array([-1, 4, 8], np.int64),
                **weights)


def test_index_map_copies_repeat_positions_in_every_head():
    # 2 heads of 4 features, 1 feature added at position 2 of each widened head (size 5)
    assert IndexMap(copies=2, period=4).indices(np.array([2])).tolist() == [2, 7]
    assert IndexMap(copies=3, period=2, block=2).indices(np.array([0, 3])).tolist() == [0, 1, 6, 7, 8, 9, 14, 15,
                                                                                        16, 17, 22, 23]


def test_query_key_heads_form_one_group():
    groups = analyse(attention_model())
    qk = groups["qh"]
    assert qk.widenable, qk.blocked
    edits = param_edits(qk)
    assert edits[("q", 1)].imap == IndexMap(copies=2, period=4) and edits[("k", 1)].imap == IndexMap(copies=2, period=4)
    assert {e.node.name for e in qk.edits if isinstance(e, ShapeEdit)} == {"q_split", "k_split"}
    assert qk.channels == 4 and qk.params_per_channel() == 2 * 2 * 8  # two projections, 8 inputs, 2 heads


def test_value_heads_widen_into_the_output_projection():
    groups = analyse(attention_model())
    vo = groups["vh"]
    assert vo.widenable, vo.blocked
    edits = param_edits(vo)
    assert edits[("v", 1)].imap == IndexMap(copies=2, period=4)
    assert edits[("out", 1)].axis == -2  # the output projection reads the new features
    merge = [e for e in vo.edits if isinstance(e, ShapeEdit)]
    assert [(e.node.name, e.per_channel) for e in merge] == [("v_split", 1), ("merge", 2)]


def test_attention_lock_restores_exactly():
    result = lock_and_restore(attention_model())
    widened = {g["group"] for g in result.report["groups"]}
    assert widened & {"qh", "vh"}
