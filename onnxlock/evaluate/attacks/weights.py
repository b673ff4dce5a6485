"""Per-channel statistics of a group's weights, computed from the locked file alone.

Every function takes one widenable group (of the locked graph) and returns one value per channel,
higher meaning more suspicious, or None when the group has nothing to measure.
"""

from __future__ import annotations

import numpy as np

from ...graph.channels import ParamEdit, Role
from ...graph.groups import Group
from ...passes.counterfeit import AMPLIFY
from .scoring import average_ranks

Rows = np.ndarray  # [channels, values per channel]


def channel_rows(group: Group, edit: ParamEdit) -> Rows:
    """Each channel's entries of one widened parameter, one row per channel."""
    values = np.asarray(edit.constant.values, dtype=np.float64)
    moved = np.moveaxis(values, edit.axis % values.ndim, 0)
    imap = edit.imap
    if imap.copies > 1:  # heads of the current width, as for one channel inserted at p
        imap = imap._replace(period=group.channels - 1)
    return np.stack([moved[imap.indices([p])].reshape(-1) for p in range(group.channels)])


def edits_of(group: Group, role: Role) -> list[ParamEdit]:
    return [e for e in group.edits if isinstance(e, ParamEdit) and e.role is role
            and np.issubdtype(np.asarray(e.constant.values).dtype, np.floating)]


def _mean_over(group: Group, role: Role, statistic) -> np.ndarray | None:
    values = [statistic(group, e) for e in edits_of(group, role)]
    values = [v for v in values if v is not None]
    return np.mean(values, axis=0) if values else None


def norm_outlier(group: Group, role: Role) -> np.ndarray | None:
    """How far each channel's weight norm is from the layer's typical one: |log(norm / median)|."""
    def statistic(group, edit):
        norms = np.linalg.norm(channel_rows(group, edit), axis=1) + 1e-12
        return np.abs(np.log(norms / np.median(norms)))
    return _mean_over(group, role, statistic)


def on_bound(group: Group) -> np.ndarray | None:
    """How many of each channel's weights sit exactly on the tensor's largest magnitude (clipped draws)."""
    def statistic(group, edit):
        bound = np.abs(np.asarray(edit.constant.values, dtype=np.float64)).max()
        return (np.abs(channel_rows(group, edit)) == bound).sum(axis=1).astype(np.float64)
    counts = [v for role in (Role.OUT, Role.IN) for v in [_mean_over(group, role, statistic)] if v is not None]
    return np.sum(counts, axis=0) if counts else None


def row_ranks(rows: Rows) -> Rows:
    return np.argsort(np.argsort(rows, axis=1, kind="stable"), axis=1).astype(np.float64)


def shared_rank(group: Group, role: Role) -> np.ndarray | None:
    """Each channel's highest rank correlation with another channel of the group (a shared rank order)."""
    def statistic(group, edit):
        rows = channel_rows(group, edit)
        if rows.shape[1] < 3 or len(rows) < 2:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(row_ranks(rows))
        corr = np.nan_to_num(corr, nan=0.0)
        np.fill_diagonal(corr, -1.0)
        return corr.max(axis=1)
    return _mean_over(group, role, statistic)


def alignment(group: Group, input_means: dict[str, np.ndarray]) -> np.ndarray | None:
    """Rank correlation of each filter with its layer's mean input activation (the alignment step)."""
    def statistic(group, edit):
        means = input_means.get(edit.node.name)
        values = np.asarray(edit.constant.values)
        moved_shape = np.moveaxis(values, edit.axis % values.ndim, 0).shape
        if means is None or not edit.imap.plain or len(moved_shape) < 2 or len(means) != moved_shape[1]:
            return None
        score = np.broadcast_to(means.reshape((-1,) + (1,) * (len(moved_shape) - 2)), moved_shape[1:]).reshape(-1)
        # ordinal ranks, ties in input order: the order the alignment step sorts weights into
        target = np.argsort(np.argsort(score, kind="stable"), kind="stable").astype(np.float64)
        ranks = row_ranks(channel_rows(group, edit))
        ranks -= ranks.mean(axis=1, keepdims=True)
        centred = target - target.mean()
        return ranks @ centred / (np.linalg.norm(ranks, axis=1) * np.linalg.norm(centred) + 1e-12)
    return _mean_over(group, Role.OUT, statistic)


def norm_parameters(group: Group) -> np.ndarray | None:
    """Per-channel vectors (norm statistics, biases): mean rank on the side that amplifies a channel."""
    sides = []
    for edit in edits_of(group, Role.CHANNEL):
        side = AMPLIFY.get(edit.node.op, {}).get(edit.index)
        if side is None or group.channels < 2:
            continue
        ranks = average_ranks(channel_rows(group, edit).mean(axis=1)) / (group.channels - 1)
        sides.append(ranks if side == "high" else 1.0 - ranks)
    return np.mean(sides, axis=0) if sides else None


def width(group: Group) -> np.ndarray:
    """A width that no exporter would choose: 1 when not a multiple of 8, 0.5 when of 8 but not 16."""
    value = 0.0 if group.channels % 16 == 0 else 0.5 if group.channels % 8 == 0 else 1.0
    return np.full(group.channels, value)


def weight_scores(group: Group, input_means: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    return {
        "width": width(group),
        "weight_norm": norm_outlier(group, Role.OUT),
        "consumer_weight_norm": norm_outlier(group, Role.IN),
        "on_bound": on_bound(group),
        "alignment": alignment(group, input_means),
        "shared_rank_filters": shared_rank(group, Role.OUT),
        "shared_rank_consumers": shared_rank(group, Role.IN),
        "norm_parameter_ranks": norm_parameters(group),
    }
