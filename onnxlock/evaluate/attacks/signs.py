"""Recovering flipped signs from BatchNormalization statistics: the blind attack on the sign flips.

The sign-flip lock keeps every magnitude. Where a Conv feeds a BatchNormalization, that layer's
running mean and variance are the mean and variance of the Conv's output on the training data,
made with the true signs. A thief computes the Conv's input patches on their own unlabelled data
and, for each output channel, picks the signs whose output mean and variance come closest to those
statistics: every sign pattern where the channel reads at most EXHAUSTIVE weights (a first layer
on a grey image, a depthwise 3x3 layer), else a local search of single flips from the locked signs
and from random starts. Layers are recovered in graph order, each on the inputs the layers before
it now give. Two numbers constrain a channel, so a channel of many inputs stays underdetermined:
the attack measures how far that takes a thief.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..damage import run

EXHAUSTIVE = 12  # weights per channel up to which every sign pattern is tried
RESTARTS = 8  # random starts of the local search, besides the locked signs
RESTART_MAX = 64  # weights per channel up to which restarts run: past it two numbers pin nothing down
MAX_ROWS = 50_000  # input patches used per layer (sampled when there are more)
EPS = 1e-12


@dataclass(frozen=True)
class Pair:
    """A Conv whose only consumer is a BatchNormalization: the Conv's weight (and bias), the
    normalisation's running mean and variance."""

    conv: onnx.NodeProto
    weight: str
    bias: str | None
    mean: str
    var: str


def conv_bn_pairs(model: onnx.ModelProto) -> list[Pair]:
    """Every Conv (constant weight, explicit padding) whose output only a BatchNormalization reads,
    in graph order."""
    constants = {t.name for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    pairs = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[1] not in constants:
            continue
        if _attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        consumers = readers.get(node.output[0], [])
        if len(consumers) != 1 or consumers[0].op_type != "BatchNormalization" or consumers[0].input[0] != node.output[0]:
            continue
        bn = consumers[0]
        if not {bn.input[3], bn.input[4]} <= constants:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        pairs.append(Pair(node, node.input[1], bias, bn.input[3], bn.input[4]))
    return pairs


def _attribute(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def intermediate(model: onnx.ModelProto, feeds: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The value of tensor ``name`` of ``model`` on ``feeds``."""
    if name in feeds:
        return feeds[name]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    return run(probe, feeds)[0]


def patches(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """The Conv's input patches: (groups, rows, weights per channel), in the order of a channel's
    flattened weight (input channel, then kernel positions); at most MAX_ROWS rows."""
    spatial = len(kernel)
    pads = list(_attribute(node, "pads", [0] * 2 * spatial))
    strides = list(_attribute(node, "strides", [1] * spatial))
    dilations = list(_attribute(node, "dilations", [1] * spatial))
    groups = int(_attribute(node, "group", 1))
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, spans, axis=tuple(range(2, 2 + spatial)))
    # windows: (N, C, out..., span...); keep the strided outputs and the dilated taps
    windows = windows[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
                      + tuple(slice(None, None, d) for d in dilations)]
    count, channels = x.shape[:2]
    outputs = windows.shape[2:2 + spatial]
    total = count * int(np.prod(outputs))
    # rows in (sample, output position) order; a sample of MAX_ROWS of them taken before copying
    chosen = np.arange(total) if total <= MAX_ROWS else np.sort(rng.choice(total, MAX_ROWS, replace=False))
    where = np.unravel_index(chosen, (count, *outputs))
    picked = windows[(where[0], slice(None)) + tuple(where[1:])]  # (rows, C, taps...)
    rows = picked.reshape(len(chosen), channels, -1)
    per_group = channels // groups
    return np.stack([rows[:, g * per_group:(g + 1) * per_group].reshape(len(rows), -1) for g in range(groups)])


def misfit(out_mean, out_var, mean: float, std: float):
    """How far an output mean and variance are from the normalisation's mean and standard
    deviation, in units of that standard deviation."""
    return ((out_mean - mean) ** 2 + (np.sqrt(np.maximum(out_var, 0.0)) - std) ** 2) / max(std, EPS) ** 2


def objective(u: np.ndarray, means: np.ndarray, cov: np.ndarray, bias: float, mean: float, std: float) -> np.ndarray:
    """``misfit`` of signed weights ``u`` (rows: candidates)."""
    return misfit(u @ means + bias, np.einsum("ij,jk,ik->i", u, cov, u), mean, std)


def best_signs(magnitudes: np.ndarray, start: np.ndarray, means: np.ndarray, cov: np.ndarray, bias: float,
               mean: float, std: float, rng: np.random.Generator) -> np.ndarray:
    """The signs (+-1 per weight) that best fit the statistics: all patterns for few weights, else
    a best-improvement search of single flips from ``start`` (and, up to RESTART_MAX weights, from
    RESTARTS random signs)."""
    n = len(magnitudes)
    if n <= EXHAUSTIVE:
        patterns = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        scores = objective(patterns * magnitudes, means, cov, bias, mean, std)
        return patterns[int(np.argmin(scores))].astype(np.float64)
    best, best_score = None, np.inf
    for signs in [start] + [rng.choice([-1.0, 1.0], size=n) for _ in range(RESTARTS if n <= RESTART_MAX else 0)]:
        signs, score = _descend(signs.astype(np.float64), magnitudes, means, cov, bias, mean, std)
        if score < best_score:
            best, best_score = signs, score
    return best


def _descend(signs, magnitudes, means, cov, bias, mean, std):
    """Flip the single sign that helps most until none does (C u kept up to date per flip: O(n)
    a step)."""
    diagonal = np.diag(cov)
    u = signs * magnitudes
    cu = cov @ u
    for _ in range(4 * len(signs)):
        out_mean, out_var = u @ means + bias, u @ cu
        # flipping weight j: u_j -> -u_j
        scores = misfit(out_mean - 2 * u * means, out_var - 4 * u * cu + 4 * u * u * diagonal, mean, std)
        j = int(np.argmin(scores))
        if scores[j] >= misfit(out_mean, out_var, mean, std) - 1e-12:
            break
        cu -= 2 * u[j] * cov[:, j]
        u[j], signs[j] = -u[j], -signs[j]
    return signs, misfit(u @ means + bias, u @ cu, mean, std)


def recover_layer(model: onnx.ModelProto, pair: Pair, feeds: dict[str, np.ndarray],
                  rng: np.random.Generator) -> np.ndarray:
    """The Conv weight of ``pair`` with each channel's signs chosen to fit its normalisation."""
    arrays = {t.name: t for t in model.graph.initializer}
    weight = numpy_helper.to_array(arrays[pair.weight]).astype(np.float64)
    bias = numpy_helper.to_array(arrays[pair.bias]).astype(np.float64) if pair.bias else np.zeros(len(weight))
    mean = numpy_helper.to_array(arrays[pair.mean]).astype(np.float64)
    std = np.sqrt(np.maximum(numpy_helper.to_array(arrays[pair.var]).astype(np.float64), 0.0))
    x = intermediate(model, feeds, pair.conv.input[0]).astype(np.float64)
    rows = patches(x, pair.conv, weight.shape[2:], rng)
    per_group = len(weight) // len(rows)  # output channels a group
    stats = [(r.mean(axis=0), np.cov(r, rowvar=False).reshape(r.shape[1], r.shape[1])) for r in rows]
    flat = weight.reshape(len(weight), -1)
    recovered = np.empty_like(flat)
    for c in range(len(weight)):
        means, cov = stats[c // per_group]
        magnitudes, start = np.abs(flat[c]), np.where(flat[c] < 0, -1.0, 1.0)
        signs = best_signs(magnitudes, start, means, cov, float(bias[c]), float(mean[c]), float(std[c]), rng)
        recovered[c] = signs * magnitudes
    return recovered.reshape(weight.shape)


def with_signs(model: onnx.ModelProto, name: str, signed: np.ndarray) -> onnx.ModelProto:
    """A copy of ``model`` whose tensor ``name`` takes the signs of ``signed`` (magnitudes, hence
    bits other than the sign, unchanged)."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    tensor = next(t for t in edited.graph.initializer if t.name == name)
    values = numpy_helper.to_array(tensor)
    flipped = np.where((signed < 0) != np.signbit(values), -values, values).astype(values.dtype)
    tensor.CopyFrom(numpy_helper.from_array(flipped, name))
    return edited


@dataclass
class SignRecovery:
    """The model with every Conv+BatchNormalization layer's signs recovered, and per layer what was
    tried: ``layers`` rows of (weight name, weights per channel, exhaustive or not)."""

    model: onnx.ModelProto
    layers: list[dict]


def recover_signs(locked: onnx.ModelProto, feeds: dict[str, np.ndarray], seed: int = 0) -> SignRecovery:
    """Recover the signs of each Conv that feeds a BatchNormalization, in graph order (blind: only
    the locked file and unlabelled ``feeds``)."""
    rng = np.random.default_rng(seed)
    model, layers = locked, []
    for pair in conv_bn_pairs(locked):
        recovered = recover_layer(model, pair, feeds, rng)
        model = with_signs(model, pair.weight, recovered)
        per_channel = int(np.prod(recovered.shape[1:]))
        layers.append({"weight": pair.weight, "weights_per_channel": per_channel,
                       "exhaustive": per_channel <= EXHAUSTIVE})
    return SignRecovery(model, layers)


def sign_agreement(model: onnx.ModelProto, original: onnx.ModelProto, names: list[str]) -> dict[str, float]:
    """Per tensor of ``names``: the share of its non-zero weights whose sign matches ``original``'s
    (0.5 is a coin flip; tensors whose shapes differ are left out)."""
    ours = {t.name: t for t in model.graph.initializer if t.name in names}
    theirs = {t.name: t for t in original.graph.initializer if t.name in names}
    shares = {}
    for name in names:
        if name not in ours or name not in theirs:
            continue
        a, b = numpy_helper.to_array(ours[name]), numpy_helper.to_array(theirs[name])
        if a.shape != b.shape:
            continue
        live = b != 0
        shares[name] = float(np.mean(np.signbit(a[live]) == np.signbit(b[live]))) if live.any() else 1.0
    return shares
