"""Per-channel statistics of a group's activations on unlabelled inputs.

For each group the thief reads two of its tensors: the one its layer creates (before any
normalisation or activation) and the last one the group's channels reach unchanged (what its
consumers read). Statistics are turned into robust z-scores within the group.
"""

from __future__ import annotations

import numpy as np
import onnx

from ...graph.groups import Group
from ..damage import run

MAX_COLUMNS = 4096  # values per channel kept for correlations
EPS = 1e-12


def tensor_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The values of intermediate tensors ``names``, exposed as extra graph outputs for one run."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(infos[n] for n in dict.fromkeys(names) if n not in present and n in infos)
    values = dict(zip([o.name for o in probe.graph.output], run(probe, feeds)))
    values.update(feeds)
    return {n: values[n] for n in names if n in values}


def read_tensors(group: Group) -> dict[str, tuple[str, int]]:
    """The group's created tensor ('pre') and the last tensor its channels reach unchanged ('post')."""
    plain = [m for m in group.members.values() if m.imap.plain and m.tensor.shape is not None]
    seed = group.members[group.name]
    picks = {"pre": (seed.tensor.name, seed.axis)}
    if plain and plain[-1].tensor.name != seed.tensor.name:
        picks["post"] = (plain[-1].tensor.name, plain[-1].axis)
    return picks


def robust_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    return (values - median) / (spread + EPS * (1 + abs(median)))


def max_correlation(data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each channel's largest |correlation| with another channel of the group."""
    if len(data) < 2:
        return np.zeros(len(data))
    if data.shape[1] > MAX_COLUMNS:
        data = data[:, rng.choice(data.shape[1], MAX_COLUMNS, replace=False)]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.abs(np.corrcoef(data)), nan=0.0)
    np.fill_diagonal(corr, 0.0)
    return corr.max(axis=1)


def channel_statistics(tensor: np.ndarray, axis: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    data = np.moveaxis(np.asarray(tensor, dtype=np.float64), axis, 0)
    data = data.reshape(data.shape[0], -1)
    std = data.std(axis=1)
    return {
        "mean": robust_z(data.mean(axis=1)),
        "abs_mean": robust_z(np.abs(data).mean(axis=1)),
        "sparsity": np.abs(robust_z((data <= 0).mean(axis=1))),
        "outliers": np.abs(robust_z(np.abs(data - data.mean(axis=1, keepdims=True)).max(axis=1) / (std + EPS))),
        "correlation": max_correlation(data, rng),
    }


def activation_scores(model: onnx.ModelProto, groups: list[Group], feeds: dict[str, np.ndarray],
                      seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Per group: ``{'pre_mean': ..., 'post_sparsity': ...}`` (post_* only where a later tensor exists)."""
    picks = [read_tensors(g) for g in groups]
    values = tensor_values(model, feeds, [name for p in picks for name, _ in p.values()])
    rng = np.random.default_rng(seed)
    scores = []
    for group, pick in zip(groups, picks):
        found = {}
        for where, (name, axis) in pick.items():
            if name in values and values[name].shape[axis] == group.channels:
                for stat, v in channel_statistics(values[name], axis, rng).items():
                    found[f"{where}_{stat}"] = v
        scores.append(found)
    return scores
