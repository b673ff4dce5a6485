"""Split on the channel axis: each output is its own group, at an offset in the split input."""

from __future__ import annotations

import numpy as np
import pytest

from onnxlock.graph.channels import AttrEdit, IndexMap, ShapeEdit

from test_groups import analyse, lock_and_restore, make, param_edits, randn

BODY = """
    [conv] h = Conv <pads = [1, 1, 1, 1]> (x, w)
    {split}
    [relu_a] ra = Relu (a)
    [relu_b] rb = Relu (b)
    [conv_a] ya = Conv (ra, wa)
    [conv_b] yb = Conv (rb, wb)
    [add] y = Add (ya, yb)
"""
SPLIT_INPUT = "[split] a, b = Split <axis = 1> (h, sizes)"  # opset >= 13
SPLIT_ATTR = "[split] a, b = Split <axis = 1, split = [3, 5]> (h)"  # opset 11


def split_model(opset: int):
    text = f"net (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] y) {{{BODY.format(split=SPLIT_ATTR if opset < 13 else SPLIT_INPUT)}}}"
    weights = randn(5, w=(8, 3, 3, 3), wa=(4, 3, 1, 1), wb=(4, 5, 1, 1))
    if opset >= 13:
        weights["sizes"] = np.array([3, 5], np.int64)
    return make(text, opset, **weights)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_each_split_output_is_a_group_at_its_offset(opset):
    groups = analyse(split_model(opset))
    assert {"a", "b"} <= set(groups) and "h" not in groups  # the blocked group of h is replaced
    for name, offset, index in (("a", 0, 0), ("b", 3, 1)):
        group = groups[name]
        assert group.widenable, group.blocked
        assert param_edits(group)[("conv", 1)].imap == IndexMap(offset=offset)
        size_edit = [e for e in group.edits if isinstance(e, (ShapeEdit, AttrEdit))]
        assert len(size_edit) == 1 and (size_edit[0].dim if opset >= 13 else size_edit[0].item) == index


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_split_lock_restores_exactly(opset):
    result = lock_and_restore(split_model(opset))
    assert {g["group"] for g in result.report["groups"]} <= {"a", "b"}
