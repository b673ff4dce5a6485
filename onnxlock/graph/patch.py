"""Undo channel widening on a ModelProto from a patch alone: delete the confusion entries.

A patch is a list of groups, each ``{"positions": [...], "edits": [...]}``, as written by
``widen.widen_group``; groups and edits are undone in reverse order of application.

A patch comes from a key: authentic, but not trusted to be well formed. Every size, index and
type in it is checked against the model before use, so a malformed one can only raise
ModelMismatchError (never allocate a block it names, overflow, or raise KeyError/TypeError).
Messages name tensors and nodes (visible in the locked file anyway), never a position.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelMismatchError
from ..proto import AttributeProto, to_array
from .index_map import IndexMap
from .values import read_values, write_values

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

_INT64_MAX = 2**63 - 1
_MAX_STEP = 2**31  # per_channel of a shape or attribute edit
_MAX_EDITS = 1 << 20
_MAX_BLOCKS = 1024  # kept blocks copied one by one; past this, np.compress per axis
_BLOCK_BYTES = 1 << 20  # smaller tensors: np.compress per axis costs less than finding the blocks
TENSOR_EDITS = ("p", "s")  # delete positions along an axis, shrink a shape value; "a" edits a node


class _Malformed(ValueError):
    """A patch that does not fit the model; becomes ModelMismatchError at the boundary."""


def narrow(model: onnx.ModelProto, groups: list[dict], *, in_place: bool = False) -> onnx.ModelProto:
    """Return ``model`` with every widened group narrowed back to its original size: a copy, or
    ``model`` itself when ``in_place`` (the loader owns its freshly parsed model: no second copy).
    Each tensor is narrowed by ``narrow_array`` (what the fast loader runs on one tensor alone)."""
    restored = model if in_place else type(model)()
    if not in_place:
        restored.CopyFrom(model)
    inits = {t.name: t for t in restored.graph.initializer}
    nodes = {n.name: n for n in restored.graph.node}
    with _one_line():
        checked = _checked_groups(groups)
        for name in dict.fromkeys(edit[1] for _, edits in checked for edit in edits if edit[0] in TENSOR_EDITS):
            write_values(inits[name], _narrowed(checked, name, _tensor(inits, name)))
        for positions, edits in reversed(checked):
            for edit in reversed(edits):
                if edit[0] not in TENSOR_EDITS:
                    _undo_attribute(edit, len(positions), nodes)
    return restored


def narrow_array(groups: list[dict], name: str, values: np.ndarray) -> np.ndarray:
    """Tensor ``name``'s array narrowed back by the patch's edits on it (``values`` is not changed)."""
    with _one_line():
        return _narrowed(_checked_groups(groups), name, values)


@contextlib.contextmanager
def _one_line():
    try:
        yield
    except (_Malformed, KeyError, IndexError, ValueError, TypeError, OverflowError) as exc:
        # the named cases are all checked first; the broad catch keeps any we missed one-line
        detail = str(exc) if len(str(exc)) <= 200 else str(exc)[:200] + "..."
        raise ModelMismatchError(f"the key does not fit this model ({detail})") from None


def _narrowed(checked: list[tuple[np.ndarray, list]], name: str, values: np.ndarray) -> np.ndarray:
    """The edits on tensor ``name``, last first. Deletions on different axes are gathered and
    made in one copy (``_deleted``); a second one on the same axis, or a shape edit, makes the
    ones gathered so far first."""
    keep: dict[int, np.ndarray] = {}  # axis -> mask of the entries kept, not yet deleted
    for positions, edits in reversed(checked):
        for edit in reversed(edits):
            if edit[1] != name or edit[0] not in TENSOR_EDITS:
                continue
            if edit[0] == "p":
                if edit[2] in keep:
                    values, keep = _deleted(values, keep), {}
                axis, imap = edit[2], _index_map(edit, values.shape, positions)
                keep[axis] = np.ones(values.shape[axis], dtype=bool)
                keep[axis][imap.indices(positions)] = False
            else:
                values, keep = _shrunk_shape(edit, _deleted(values, keep), len(positions)), {}
    return _deleted(values, keep)


def _deleted(values: np.ndarray, keep: dict[int, np.ndarray]) -> np.ndarray:
    """``values`` without the entries the masks in ``keep`` drop along their axes: one C-contiguous
    copy, made of the kept blocks (a few slices) or, for a small tensor or many blocks, by
    ``np.compress`` per axis."""
    if not keep:
        return values
    runs = [] if values.nbytes < _BLOCK_BYTES else \
        [_runs(keep[axis]) if axis in keep else [(0, size, 0)] for axis, size in enumerate(values.shape)]
    if not runs or np.prod([len(axis_runs) for axis_runs in runs]) > _MAX_BLOCKS:
        for axis, mask in keep.items():
            values = np.compress(mask, values, axis=axis)  # np.delete, but C-contiguous on any axis
        return values
    out = np.empty([int(keep[axis].sum()) if axis in keep else size for axis, size in enumerate(values.shape)],
                   dtype=values.dtype)
    for block in itertools.product(*runs):
        out[tuple(slice(to, to + end - start) for start, end, to in block)] = \
            values[tuple(slice(start, end) for start, end, _ in block)]
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """The runs of True in ``mask``: (start, end, where the run starts once the rest is deleted)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    return [(int(a), int(b), int(c)) for a, b, c in zip(starts, ends, np.cumsum(ends - starts) - (ends - starts))]


def _checked_groups(groups: object) -> list[tuple[np.ndarray, list]]:
    """The groups' positions (as int64 arrays) and edit lists, after type and order checks."""
    if type(groups) is not list or not groups:
        raise _Malformed("patch must be a non-empty list of groups")
    checked, total = [], 0
    for group in groups:
        if type(group) is not dict or type(group.get("positions")) is not list or type(group.get("edits")) is not list:
            raise _Malformed("a group needs a 'positions' list and an 'edits' list")
        positions, edits = group["positions"], group["edits"]
        if not positions or any(type(p) is not int for p in positions):
            raise _Malformed("positions must be a non-empty list of integers")
        if positions[0] < 0 or positions[-1] > _INT64_MAX // 4 or any(b <= a for a, b in zip(positions, positions[1:])):
            raise _Malformed("positions must be non-negative and strictly increasing")
        total += len(edits)
        if total > _MAX_EDITS:
            raise _Malformed("patch has too many edits")
        for edit in edits:
            if type(edit) is not list or len(edit) < 4 or edit[0] not in ("p", "s", "a") or type(edit[1]) is not str:
                raise _Malformed("an edit is [kind, name, ...] with kind 'p', 's' or 'a'")
            numbers = edit[3:] if edit[0] == "a" else edit[2:]  # an attribute edit names its attribute
            if any(type(v) is not int for v in numbers):
                raise _Malformed(f"edit {edit[0]!r} on {edit[1]!r} has a non-integer field")
        checked.append((np.asarray(positions, dtype=np.int64), edits))
    return checked


def _shrunk_shape(edit: list, values: np.ndarray, k: int) -> np.ndarray:
    target = edit[1]
    if len(edit) != 4:  # kind, tensor, dim, per_channel
        raise _Malformed(f"shape edit on {target!r} needs 4 fields")
    dim, per_channel = edit[2], edit[3]
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or not 0 <= dim < values.size:
        raise _Malformed(f"shape edit on {target!r} does not fit a 1-D integer tensor")
    values = values.copy()
    values[dim] = _shrunk(int(values[dim]), k, per_channel, target)
    return values


def _tensor(inits: dict, name: str) -> np.ndarray:
    if name not in inits:
        raise _Malformed(f"no initializer {name!r}")
    return read_values(inits[name])


def _index_map(edit: list, shape: tuple, positions: np.ndarray) -> IndexMap:
    """The edit's index map, once every index it would delete is known to lie inside ``shape``."""
    if len(edit) not in (5, 7):  # kind, tensor, axis, offset, block[, copies, period]
        raise _Malformed(f"parameter edit on {edit[1]!r} needs 5 or 7 fields")
    axis, imap = edit[2], IndexMap(*edit[3:])
    k, last = len(positions), int(positions[-1])
    if not 0 <= axis < len(shape):
        raise _Malformed(f"axis {axis} of {edit[1]!r} (rank {len(shape)})")
    if imap.offset < 0 or imap.block < 1 or imap.copies < 1 or imap.period < 0:
        raise _Malformed(f"index map of {edit[1]!r} is out of range")
    if imap.copies > 1 and last >= imap.period + k:
        raise _Malformed(f"positions overlap between heads of {edit[1]!r}")
    highest = imap.offset + ((imap.copies - 1) * (imap.period + k) + last + 1) * imap.block - 1
    if highest >= shape[axis]:
        raise _Malformed(f"positions reach past axis {axis} of {edit[1]!r} (size {shape[axis]})")
    return imap


def _shrunk(value: int, k: int, per_channel: int, where: str) -> int:
    if abs(per_channel) > _MAX_STEP:
        raise _Malformed(f"step {per_channel} of {where!r} is out of range")
    result = value - k * per_channel
    if not -_INT64_MAX <= result <= _INT64_MAX:
        raise _Malformed(f"{where!r} would overflow")
    return result


def _undo_attribute(edit: list, k: int, nodes: dict) -> None:
    if len(edit) not in (4, 5):  # kind, node, attr, per_channel[, item of a list attribute]
        raise _Malformed(f"attribute edit on {edit[1]!r} needs 4 or 5 fields")
    target, attr, per_channel = edit[1], edit[2], edit[3]
    if target not in nodes or type(attr) is not str:
        raise _Malformed(f"no node {target!r}")
    found = [a for a in nodes[target].attribute if a.name == attr]
    if not found:
        raise _Malformed(f"no attribute {attr!r} on node {target!r}")
    attribute = found[0]
    if len(edit) == 5:
        item = edit[4]
        if attribute.type != AttributeProto.INTS or not 0 <= item < len(attribute.ints):
            raise _Malformed(f"attribute {attr!r} of {target!r} has no item {item}")
        attribute.ints[item] = _shrunk(attribute.ints[item], k, per_channel, attr)
    else:
        if attribute.type != AttributeProto.INT:
            raise _Malformed(f"attribute {attr!r} of {target!r} is not an integer")
        attribute.i = _shrunk(attribute.i, k, per_channel, attr)


def counterfeit_entries(model: onnx.ModelProto, groups: list[dict]) -> dict[str, np.ndarray]:
    """Flat indices, in ``model``'s (locked) tensors, of every entry a 'p' edit inserted.

    These are the counterfeit values: unique to one lock, so a sample of them fingerprints it.
    """
    inits = {t.name: t for t in model.graph.initializer}
    origin: dict[str, np.ndarray] = {}  # each entry's flat index in the locked tensor
    found: dict[str, list[np.ndarray]] = {}
    for positions, edits in reversed(_checked_groups(groups)):
        for edit in reversed(edits):
            if edit[0] != "p":
                continue
            if edit[1] not in origin:
                dims = tuple(inits[edit[1]].dims)
                origin[edit[1]] = np.arange(int(np.prod(dims, dtype=np.int64))).reshape(dims)
            imap = _index_map(edit, origin[edit[1]].shape, positions)
            indices = imap.indices(positions)
            found.setdefault(edit[1], []).append(np.take(origin[edit[1]], indices, axis=edit[2]).reshape(-1))
            origin[edit[1]] = np.delete(origin[edit[1]], indices, axis=edit[2])
    return {name: np.unique(np.concatenate(parts)) for name, parts in found.items()}


def sample_counterfeits(model: onnx.ModelProto, groups: list[dict], count: int,
                        rng: np.random.Generator) -> list[list]:
    """``count`` counterfeit entries as ``[tensor, flat index, value]``, spread over the tensors."""
    entries = counterfeit_entries(model, groups)
    inits = {t.name: t for t in model.graph.initializer}
    pool = [(name, int(i)) for name, flat in sorted(entries.items()) for i in flat]
    chosen = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    sample = []
    for j in sorted(chosen):
        name, index = pool[j]
        value = to_array(inits[name]).reshape(-1)[index]
        sample.append([name, index, float(value)])
    return sample


def sample_values(values: dict[str, np.ndarray], names: list[str], count: int, rng: np.random.Generator,
                  floor: float = 1e-3) -> list[list]:
    """``count`` entries ``[tensor, flat index, value]`` drawn at random from the tensors ``names``
    (their arrays in ``values``; weighted by size), each of magnitude at least ``floor`` (so
    ``sample_fit`` cannot match it by its absolute tolerance): after a keyed mask or sign flip,
    values only this lock holds there."""
    arrays = [values[name].reshape(-1) for name in names]
    sizes = np.array([a.size for a in arrays], dtype=np.float64)
    if not sizes.sum():
        return []
    weights = sizes / sizes.sum()
    sample: dict[tuple[int, int], float] = {}
    for _ in range(64 * count):  # about 1 draw in 12 passes a masked float32 tensor's floor
        which = int(rng.choice(len(arrays), p=weights))
        index = int(rng.integers(arrays[which].size))
        value = float(arrays[which][index])
        if abs(value) >= floor and np.isfinite(value):
            sample[which, index] = value
            if len(sample) == count:
                break
    return [[names[which], index, value] for (which, index), value in sorted(sample.items())]


def sample_fit(model: onnx.ModelProto, sample: list, *, rtol: float = 0.01) -> float:
    """Share of ``sample`` entries whose value ``model`` still holds (within ``rtol``); 0 for a bad sample."""
    if type(sample) is not list or not sample:
        return 0.0
    arrays = {t.name: t for t in model.graph.initializer}
    flat: dict[str, np.ndarray] = {}
    hits = 0
    for entry in sample:
        if type(entry) is not list or len(entry) != 3 or type(entry[0]) is not str or type(entry[1]) is not int \
                or type(entry[2]) not in (int, float) or entry[0] not in arrays:
            continue
        if entry[0] not in flat:
            flat[entry[0]] = to_array(arrays[entry[0]]).reshape(-1)
        values = flat[entry[0]]
        if 0 <= entry[1] < values.size and abs(float(values[entry[1]]) - entry[2]) <= rtol * abs(entry[2]) + 1e-7:
            hits += 1
    return hits / len(sample)
