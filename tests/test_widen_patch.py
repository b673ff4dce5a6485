"""The array machinery: IndexMap, insert_along and its inverse, and narrow() refusing keys that do not fit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock.errors import ModelMismatchError
from onnxlock.graph.channels import IndexMap
from onnxlock.graph.normalize import initializer_arrays
from onnxlock.graph import patch
from onnxlock.graph.patch import narrow
from onnxlock.graph.widen import insert_along

DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int8]


# --- IndexMap ------------------------------------------------------------------------------------

@pytest.mark.parametrize("imap, positions, expected", [
    (IndexMap(), [0, 2, 5], [0, 2, 5]),
    (IndexMap(offset=3), [0, 2], [3, 5]),
    (IndexMap(block=4), [1, 3], [4, 5, 6, 7, 12, 13, 14, 15]),
    (IndexMap(offset=2, block=3), [0, 2], [2, 3, 4, 8, 9, 10]),
    (IndexMap(offset=5, block=2), [], []),
])
def test_index_map_indices(imap, positions, expected):
    indices = imap.indices(np.array(positions, dtype=np.int64))
    assert indices.dtype == np.int64 and indices.tolist() == expected


def test_index_map_expand_and_shift():
    """A Concat shift then a Flatten over 4x4 maps channel p to 16 * (offset + p) + [0, 16)."""
    imap = IndexMap().shift(3).expand(16)
    assert imap == IndexMap(48, 16)
    assert imap.indices(np.array([1])).tolist() == list(range(64, 80))
    assert IndexMap(2, 3).expand(2).shift(1) == IndexMap(5, 6)


@pytest.mark.parametrize("seed", range(40))
def test_index_map_indices_are_sorted_and_disjoint(seed):
    rng = np.random.default_rng(seed)
    imap = IndexMap(int(rng.integers(0, 10)), int(rng.integers(1, 6)))
    positions = np.sort(rng.choice(30, size=int(rng.integers(1, 8)), replace=False))
    indices = imap.indices(positions)
    assert len(indices) == len(positions) * imap.block
    assert np.all(np.diff(indices) > 0)
    assert np.array_equal(indices[:: imap.block], imap.offset + positions * imap.block)


# --- insert_along then delete -----------------------------------------------------------------

def random_case(seed: int):
    """A random array, an axis holding ``offset + channels * block + tail`` entries, and new positions."""
    rng = np.random.default_rng(seed)
    dtype = DTYPES[seed % len(DTYPES)]
    ndim = int(rng.integers(1, 5))
    axis = int(rng.integers(0, ndim))
    channels, k = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    imap = IndexMap(int(rng.integers(0, 4)), int(rng.integers(1, 5)))
    shape = [int(rng.integers(1, 4)) for _ in range(ndim)]
    shape[axis] = imap.offset + channels * imap.block + int(rng.integers(0, 3))
    array = (rng.standard_normal(shape) * 50).astype(dtype)
    positions = np.sort(rng.choice(channels + k, size=k, replace=False))
    return rng, array, axis, imap, positions


@pytest.mark.parametrize("seed", range(60))
def test_insert_then_delete_is_identity(seed):
    rng, array, axis, imap, positions = random_case(seed)
    indices = imap.indices(positions)
    moved_shape = (len(indices), *np.delete(np.array(array.shape), axis))
    rows = (rng.standard_normal(moved_shape) * 50).astype(array.dtype)
    grown = insert_along(array, axis, indices, rows)
    assert grown.dtype == array.dtype and grown.flags.c_contiguous
    assert grown.shape[axis] == array.shape[axis] + len(positions) * imap.block
    assert np.array_equal(np.moveaxis(np.take(grown, indices, axis=axis), axis, 0), rows)
    restored = np.delete(grown, indices, axis=axis)
    assert restored.shape == array.shape and restored.tobytes() == array.tobytes()


@pytest.mark.parametrize("seed", range(20))
def test_insert_along_negative_axis(seed):
    rng, array, axis, imap, positions = random_case(seed)
    indices = imap.indices(positions)
    rows = np.zeros((len(indices), *np.delete(np.array(array.shape), axis)), dtype=array.dtype)
    grown = insert_along(array, axis - array.ndim, indices, rows)
    assert np.array_equal(grown, insert_along(array, axis, indices, rows))


def test_insert_along_keeps_existing_order():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    grown = insert_along(array, 1, np.array([0, 3]), np.full((2, 3), -1, np.float32))
    assert grown.tolist() == [[-1, 0, 1, -1, 2, 3], [-1, 4, 5, -1, 6, 7], [-1, 8, 9, -1, 10, 11]]


# --- narrow() on a model -----------------------------------------------------------------------

W = np.arange(2 * 6 * 1 * 1, dtype=np.float32).reshape(2, 6, 1, 1)


def widened_model() -> onnx.ModelProto:
    """A conv whose weight has 6 input channels, 2 of them confusion channels at positions 1 and 4."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=1),
         helper.make_node("Reshape", ["y", "shape"], ["z"], name="reshape")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 2, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(np.array([1, 8], np.int64), "shape")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def key(*edits, positions=(1, 4)) -> list[dict]:
    return [{"positions": list(positions), "edits": [list(e) for e in edits]}]


def test_narrow_deletes_the_key_positions():
    model = widened_model()
    restored = narrow(model, key(["p", "w", 1, 0, 1], ["s", "shape", 1, 1], ["a", "conv", "group", 0]))
    inits = initializer_arrays(restored)
    assert np.array_equal(inits["w"], W[:, [0, 2, 3, 5]]) and inits["shape"].tolist() == [1, 6]
    assert initializer_arrays(model)["w"].shape == (2, 6, 1, 1)  # the input model is left alone


@pytest.mark.parametrize("bad_key", [
    key(["p", "w", 1, 0, 1], positions=(1, 6)),  # position past the widened axis
    key(["p", "w", 1, 4, 1]),  # offset pushes the positions out of range
    key(["p", "w", 1, 0, 4]),  # block pushes the positions out of range
    key(["p", "w", 7, 0, 1]),  # no such axis
    key(["p", "not_a_weight", 1, 0, 1]),
    key(["s", "nowhere", 1, 1]),
    key(["s", "shape", 5, 1]),
    key(["a", "no_such_node", "group", 1]),
    key(["a", "conv", "no_such_attribute", 1]),
    key(["x", "w", 1, 0, 1]),  # unknown edit kind
    key(["p", "w", 1]),  # truncated edit
], ids=["position", "offset", "block", "axis", "initializer", "shape-initializer", "shape-dim", "node",
        "attribute", "kind", "truncated"])
def test_narrow_with_a_wrong_key_raises_mismatch(bad_key):
    with pytest.raises(ModelMismatchError, match="does not fit this model"):
        narrow(widened_model(), bad_key)


def test_narrow_rejects_negative_positions():
    with pytest.raises(ModelMismatchError):
        narrow(widened_model(), key(["p", "w", 1, 0, 1], positions=(-1, 4)))


def test_narrow_rejects_repeated_positions():
    with pytest.raises(ModelMismatchError):
        narrow(widened_model(), key(["p", "w", 1, 0, 1], positions=(4, 4)))


@pytest.mark.parametrize("max_blocks", [1024, 1])
@pytest.mark.parametrize("seed", range(4))
def test_deletions_gathered_over_axes_equal_one_compress_per_axis(seed, max_blocks, monkeypatch):
    """``_deleted`` copies the kept blocks in one pass (or compresses when there are many): the
    same values, C-contiguous, as np.compress along each masked axis in turn."""
    monkeypatch.setattr(patch, "_MAX_BLOCKS", max_blocks)
    monkeypatch.setattr(patch, "_BLOCK_BYTES", 0)  # the block copy on these small arrays too
    rng = np.random.default_rng(seed)
    for _ in range(50):
        shape = tuple(int(n) for n in rng.integers(1, 7, size=rng.integers(1, 5)))
        values = rng.standard_normal(shape).astype(np.float32)
        keep = {axis: rng.random(shape[axis]) < 0.7 for axis in range(len(shape)) if rng.random() < 0.6}
        want = values
        for axis, mask in keep.items():
            want = np.compress(mask, want, axis=axis)
        got = patch._deleted(values, keep)
        assert got.shape == want.shape and np.array_equal(got, want) and got.flags.c_contiguous
