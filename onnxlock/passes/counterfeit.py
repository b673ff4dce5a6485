"""Counterfeit values for confusion channels (seed 000, section 3: strategies 'init', 'samp', 'mixed').

In *stealth* mode (used when the lock also flips every weight's signs, so the channels need not be
loud) counterfeits are drawn to look ordinary instead of strong, whatever the strategy: each weight
is drawn from the weights at its own position (the same input channel and kernel tap, or the same
output row for a consumer) of the real channels, so a new row shares the magnitude pattern every
trained row of the layer has (a He-normal row does not, and its rank order stands apart from the
real rows'); then scaled to the norm of a random real row. No amplifying quarter, no alignment with
the input's mean activation, no value piled up on the layer's bound.

'init' draws weights as a fresh layer would be initialised (He-normal), clipped to the range of the
layer's real weights so no value stands out as an outlier; 'samp' draws them from the layer's own
weights, so their distribution matches. 'mixed' picks one of the two per channel. Per-channel
vectors (biases, norm statistics, broadcast constants) are always sampled from their own values.
"""

from __future__ import annotations

import numpy as np

from ..graph.channels import ParamEdit, Role

STRATEGIES = ("init", "samp", "mixed")
DEFAULT_STRATEGY = "init"  # the most damaging in tools/report_strength.py (see README)
JITTER = 0.02  # relative noise on sampled values
# BatchNormalization inputs: 1 scale, 2 bias, 3 running mean, 4 running variance. Drawing the new
# channel's statistics from the quarter of real values that amplifies it most (large scale and
# bias, small mean and variance) keeps every value in its layer's range while making the
# confusion channel loud after normalisation.
# Biases (Conv, Gemm, a bias Add) and LayerNorm scale/bias likewise come from their high quarter.
AMPLIFY = {
    "BatchNormalization": {1: "high", 2: "high", 3: "low", 4: "low"},
    "LayerNormalization": {1: "high", 2: "high"},
    "Conv": {2: "high"}, "Gemm": {2: "high"}, "Add": {0: "high", 1: "high"},
}


class Counterfeiter:
    """Draws the new rows of each widened parameter for one group at a time."""

    def __init__(self, strategy: str, rng: np.random.Generator, input_means: dict[str, np.ndarray] | None = None,
                 stealth: bool = False):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
        self.strategy = strategy
        self.rng = rng
        self.stealth = stealth
        self.use_init = np.zeros(0, dtype=bool)
        self.input_means = input_means or {}

    def start_group(self, channels: int) -> None:
        """Fix, for each new channel of the next group, whether it is 'init' or 'samp'."""
        if self.strategy == "mixed":
            self.use_init = self.rng.random(channels) < 0.5
        else:
            self.use_init = np.full(channels, self.strategy == "init")

    def __call__(self, edit: ParamEdit, existing: np.ndarray, rows: int) -> np.ndarray:
        """``rows`` new slices shaped like ``existing[0]`` (existing has the widened axis first)."""
        shape = (rows, *existing.shape[1:])
        if edit.role is Role.CHANNEL:
            side = None if self.stealth else AMPLIFY.get(edit.node.op, {}).get(edit.index)
            return self._sample(amplifying_pool(existing.reshape(-1), side), shape)
        if self.stealth:
            return match_norms(self._sample_in_place(existing, rows), existing, self.rng)
        sampled = self._sample(existing.reshape(-1), shape)
        init = self._he_normal(edit, existing, shape)
        per_row = np.repeat(self.use_init, rows // max(len(self.use_init), 1))
        per_row = per_row.reshape((rows,) + (1,) * (len(shape) - 1))
        values = np.where(per_row, init, sampled)
        means = self.input_means.get(edit.node.name)
        if edit.role is Role.OUT and means is not None and len(means) == existing.shape[1]:
            values = align(values, means)
        elif edit.role is Role.IN:
            # one shared ranking: the new channels push the consumer the same way, so their
            # effects add up instead of averaging out
            values = align(values, self.rng.permutation(values[0].size).reshape(values.shape[1:]).astype(float))
        return values

    def _sample(self, pool: np.ndarray, shape: tuple) -> np.ndarray:
        """Values drawn from ``pool``, jittered so none is an exact copy of a real weight
        (exact duplicates would give the counterfeits away)."""
        return self._jittered(self.rng.choice(pool, size=shape))

    def _jittered(self, values: np.ndarray, bound: float | None = None) -> np.ndarray:
        """Float ``values`` times (1 + JITTER x noise); with ``bound``, a value the noise would take
        to or past it is shrunk by the noise instead."""
        if not np.issubdtype(values.dtype, np.floating):
            return values
        noise = JITTER * self.rng.standard_normal(values.shape)
        jittered = values * (1.0 + noise)
        if bound is None:
            return jittered
        return np.where(np.abs(jittered) >= bound, values * (1.0 - np.abs(noise)), jittered)

    def _sample_in_place(self, existing: np.ndarray, rows: int) -> np.ndarray:
        """``rows`` new slices, each value drawn from the same position of a random real slice
        (a different one per position), jittered below the layer's largest magnitude."""
        flat = existing.reshape(len(existing), -1)
        picks = self.rng.integers(0, len(existing), size=(rows, flat.shape[1]))
        values = self._jittered(flat[picks, np.arange(flat.shape[1])], bound=np.abs(flat).max())
        return values.reshape((rows, *existing.shape[1:]))

    def _he_normal(self, edit: ParamEdit, existing: np.ndarray, shape: tuple) -> np.ndarray:
        if edit.role is Role.OUT:
            fan_in = int(np.prod(existing.shape[1:], dtype=np.int64))
        else:  # the consumer's fan-in: its input channels times its kernel size
            fan_in = existing.shape[0] * int(np.prod(existing.shape[2:], dtype=np.int64))
        bound = float(np.abs(existing).max()) or 1.0
        return np.clip(self.rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), size=shape), -bound, bound)


def match_norms(rows: np.ndarray, existing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale each new row to the norm of a randomly chosen real row, so that no row stands out by its
    norm (the first statistic a thief computes); the values' signs and proportions are kept. The
    norm is chosen among those that keep every value below the layer's largest magnitude (where
    none does, the row is scaled to just below it)."""
    real = np.linalg.norm(existing.reshape(len(existing), -1).astype(np.float64), axis=1)
    bound = float(np.abs(existing).max())
    flat = rows.reshape(len(rows), -1).astype(np.float64)
    scaled = np.empty_like(flat)
    for i, row in enumerate(flat):
        norm, peak = np.linalg.norm(row), np.abs(row).max()
        if norm == 0:
            scaled[i] = row
            continue
        most = norm * bound / peak  # the largest norm keeping the row below the bound
        allowed = real[real < most]
        target = rng.choice(allowed) if len(allowed) else most * (1.0 - JITTER * rng.random())
        scaled[i] = row * (target / norm)
    return scaled.reshape(rows.shape)


def align(rows: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Rearrange each row's values so the largest meet the inputs with the largest mean activation.

    The multiset of values (hence their distribution) is unchanged; the confusion channel's
    response becomes as strong as those values allow (rearrangement inequality).
    """
    if means.ndim == 1:
        means = means.reshape((-1,) + (1,) * (rows.ndim - 2))
    score = np.broadcast_to(means, rows.shape[1:]).reshape(-1)
    order = np.argsort(score, kind="stable")
    flat = rows.reshape(len(rows), -1)
    aligned = np.empty_like(flat)
    aligned[:, order] = np.sort(flat, axis=1)
    return aligned.reshape(rows.shape)


def amplifying_pool(values: np.ndarray, side: str | None) -> np.ndarray:
    """The quarter of a parameter's values on ``side`` ('high'/'low'); all of them for None."""
    ordered = np.sort(values)
    quarter = max(1, len(ordered) // 4)
    return ordered[-quarter:] if side == "high" else ordered[:quarter] if side == "low" else ordered
