"""A thief who holds the public checkpoint the protected model was fine-tuned from: the same
architecture and tensor names (an ImageNet backbone, a published base model), not the fine-tuning.

Sign flips keep every magnitude, so a flipped weight's sign comes back from the base wherever the
fine-tuning did not carry it across zero. Confusion channels are the channels of a group that no
base channel matches (by the magnitudes of their weights, which the flips leave alone), and the
width difference from the base says how many each group holds. The attack: per group, delete
that many of the worst-matched channels; then copy the base's sign onto every weight of rank 2 or
more whose tensor the base has with the same shape. No labels, no inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ...graph.channels import ParamEdit, Role
from ...graph.groups import Group
from .channels import Channel, Peeling
from .weights import channel_rows


@dataclass
class BaseAttack:
    """The peeled, sign-copied model, the per-channel mismatch scores (higher: less like any base
    channel), the channels deleted, and the tensors whose signs were copied."""

    model: onnx.ModelProto
    scores: dict[Channel, float]
    removed: list[Channel]
    copied: list[str]


def _base_rows(group: Group, edit: ParamEdit, base: np.ndarray, channels: int) -> np.ndarray:
    """The base tensor's rows for ``channels`` channels, laid out as ``channel_rows`` lays out the locked ones."""
    moved = np.moveaxis(base.astype(np.float64), edit.axis % base.ndim, 0)
    imap = edit.imap if edit.imap.copies == 1 else edit.imap._replace(period=channels - 1)
    return np.stack([moved[imap.indices([p])].reshape(-1) for p in range(channels)])


def _standardised(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=1, keepdims=True)
    return centred / (np.linalg.norm(centred, axis=1, keepdims=True) + 1e-12)


def _matched(correlation: np.ndarray) -> np.ndarray:
    """Per locked channel (row), its correlation with the base channel it matches best, less 1 when
    another locked channel matches that base channel better (each base channel has one owner)."""
    best = correlation.argmax(axis=1)
    value = correlation[np.arange(len(best)), best]
    owner = np.full(correlation.shape[1], -1)
    for row in np.argsort(value, kind="stable"):  # ascending: the best claimant is written last
        owner[best[row]] = row
    return np.where(owner[best] == np.arange(len(best)), value, value - 1.0)


def group_mismatch(group: Group, base: dict[str, np.ndarray]) -> tuple[np.ndarray, int] | str | None:
    """Per channel of ``group``: 1 - its best correlation with a base channel, by |weights| of the
    group's filters (averaged over them); and how many channels the group has beyond the base's.
    None when the base has none of the group's filters, or no fewer channels; "later" when its
    filters still read channels another group added (delete those first)."""
    found, extra, later = [], None, False
    for edit in group.edits:
        if not (isinstance(edit, ParamEdit) and edit.role is Role.OUT and edit.constant.name in base):
            continue
        theirs = base[edit.constant.name]
        ours = np.asarray(edit.constant.values)
        axis = edit.axis % ours.ndim
        if theirs.ndim != ours.ndim or not np.issubdtype(ours.dtype, np.floating):
            continue
        step = edit.imap.block * edit.imap.copies
        missing = (ours.shape[axis] - theirs.shape[axis]) // step
        if missing < 1 or missing >= group.channels:
            continue
        if np.delete(ours.shape, axis).tolist() != np.delete(theirs.shape, axis).tolist():
            later = True
            continue
        locked_rows = _standardised(np.abs(channel_rows(group, edit)))
        base_rows = _standardised(np.abs(_base_rows(group, edit, theirs, group.channels - missing)))
        found.append(1.0 - _matched(locked_rows @ base_rows.T))
        extra = missing
    if found:
        return np.mean(found, axis=0), extra
    return "later" if later else None


def copy_signs(model: onnx.ModelProto, base: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` with each weight of rank 2 or more given the sign of the same weight in the base
    (where the base tensor has the same shape and the base value is not zero)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copied = []
    for tensor in copy.graph.initializer:
        theirs = base.get(tensor.name)
        ours = numpy_helper.to_array(tensor)
        if theirs is None or theirs.shape != ours.shape or ours.ndim < 2 or not np.issubdtype(ours.dtype, np.floating):
            continue
        signed = np.where(theirs != 0, np.copysign(ours, theirs.astype(ours.dtype)), ours)
        tensor.CopyFrom(numpy_helper.from_array(signed.astype(ours.dtype), tensor.name))
        copied.append(tensor.name)
    return copy, copied


def base_attack(locked: onnx.ModelProto, base: onnx.ModelProto) -> BaseAttack:
    """Delete the channels no base channel matches (as many per group as it is wider than the
    base), groups whose filters read no other group's extra channels first; then copy the base's signs."""
    arrays = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    peeling = Peeling.start(locked)
    scores, removed, pending = {}, [], list(peeling.groups)
    while pending:
        waiting = []
        for name in pending:
            mismatch = group_mismatch(peeling.groups[name], arrays)
            if mismatch == "later":
                waiting.append(name)
            elif mismatch is not None:
                values, extra = mismatch
                alive = peeling.alive[name]
                scores.update((Channel(name, alive[i]), float(v)) for i, v in enumerate(values))
                chosen = [Channel(name, alive[int(i)]) for i in np.argsort(-values, kind="stable")[:extra]]
                peeling, removed = peeling.without(chosen), removed + chosen
        if len(waiting) == len(pending):
            break  # the rest cannot be compared with the base
        pending = waiting
    model, copied = copy_signs(peeling.model, arrays)
    return BaseAttack(model, scores, removed, copied)
