"""Reverting suspected weights without labels: the thief takes the top-K weights by one suspicion
score (changed_weights.py) and repairs them as they can:

- ``median``: each set to its filter's median (row along axis 0);
- ``descent``: a few Adam steps on the unlabelled health loss (health_loss.py, every loss that
  applies, summed) moving those K weights only, from their locked values; the lowest loss is kept;
- ``zero``: each set to zero.

Every repair is one candidate model; the suite judges them (suite.run_revert).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from ...errors import UnsupportedGraphError
from ...graph.normalize import initializer_arrays
from ...passes.weight_bits import float_bits, write_bits
from .changed_weights import Position, WeightScores

TOPS = (16, 64, 256, 1024)
REPAIRS = ("median", "descent", "zero")
DESCENT_STEPS = 20
DESCENT_RATE = 0.25  # Adam's step, as a share of each tensor's standard deviation
THREADS = 1
RANDOM = "random"


def by_tensor(picks: list[Position]) -> dict[str, np.ndarray]:
    grouped: dict[str, list[int]] = {}
    for name, index in picks:
        grouped.setdefault(name, []).append(index)
    return {name: np.array(sorted(indices), dtype=np.int64) for name, indices in grouped.items()}


def with_values(model: onnx.ModelProto, values: dict[str, tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    """A copy of ``model`` with, per tensor, the elements at the given flat indices set."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    for tensor in edited.graph.initializer:
        if tensor.name in values:
            indices, new = values[tensor.name]
            write_bits(tensor, [(int(i), float_bits(float(v))) for i, v in zip(indices, new)])
    return edited


def filter_medians(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    rows = array.reshape(array.shape[0], -1)
    return np.median(rows, axis=1)[indices // rows.shape[1]]


class Reverter:
    """Repairs of a locked model's suspected weights, on the thief's unlabelled ``feeds``."""

    def __init__(self, locked: onnx.ModelProto, feeds: dict[str, np.ndarray]):
        self.locked, self.feeds = locked, feeds
        self.arrays = initializer_arrays(locked)
        self._bridge = None

    def repaired(self, picks: list[Position], repair: str) -> onnx.ModelProto:
        grouped = by_tensor(picks)
        if repair == "median":
            values = {n: (i, filter_medians(self.arrays[n], i)) for n, i in grouped.items()}
        elif repair == "zero":
            values = {n: (i, np.zeros(len(i))) for n, i in grouped.items()}
        elif repair == "descent":
            values = self.descend(grouped)
        else:
            raise ValueError(f"unknown repair {repair!r} (have: {', '.join(REPAIRS)})")
        return with_values(self.locked, values)

    def bridge(self):
        """The locked model in torch, built once (ImportError or UnsupportedGraphError, once and for
        all, where descent cannot run)."""
        if self._bridge is None:
            from ...torchbridge import TorchBridge
            from .health_loss import available, expose_logits

            try:
                self._bridge = TorchBridge(expose_logits(self.locked), self.feeds, THREADS)
                self._losses = available(self._bridge, self.feeds)
            except (ImportError, UnsupportedGraphError) as exc:
                self._bridge, self._losses = exc, []
        if isinstance(self._bridge, Exception):
            raise self._bridge
        if not self._losses:
            raise UnsupportedGraphError("no health loss applies to this model (no class scores, no batch norm)")
        return self._bridge

    def loss_and_gradients(self, names: list[str]) -> tuple[float, dict[str, np.ndarray]]:
        from contextlib import ExitStack

        from .health_loss import health_loss

        bridge = self.bridge()
        with ExitStack() as stack:
            losses = [stack.enter_context(health_loss(bridge, m)) for m in self._losses]
            return bridge.gradients(lambda outputs: sum(loss(outputs) for loss in losses), self.feeds, names)

    def descend(self, grouped: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Adam on the picked weights only, the state with the lowest health loss kept; the
        bridge is left as locked."""
        bridge, names = self.bridge(), list(grouped)
        start = {n: self.arrays[n].reshape(-1)[i].astype(np.float64) for n, i in grouped.items()}
        rate = {n: DESCENT_RATE * float(self.arrays[n].std()) for n in names}
        current = {n: v.copy() for n, v in start.items()}
        moment = {n: np.zeros_like(v) for n, v in start.items()}
        second = {n: np.zeros_like(v) for n, v in start.items()}
        best, best_loss = start, np.inf
        try:
            for step in range(1, DESCENT_STEPS + 2):
                loss, grads = self.loss_and_gradients(names)
                if loss < best_loss:
                    best, best_loss = {n: v.copy() for n, v in current.items()}, loss
                if step > DESCENT_STEPS:
                    break
                for n in names:
                    g = grads[n].reshape(-1)[grouped[n]]
                    moment[n] = 0.9 * moment[n] + 0.1 * g
                    second[n] = 0.999 * second[n] + 0.001 * g * g
                    m_hat, v_hat = moment[n] / (1 - 0.9 ** step), second[n] / (1 - 0.999 ** step)
                    current[n] -= rate[n] * m_hat / (np.sqrt(v_hat) + 1e-12)
                    bridge.set_values(n, grouped[n], current[n])
        finally:
            for n in names:
                bridge.set_values(n, grouped[n], start[n])
        return {n: (grouped[n], best[n]) for n in names}


def reverts(locked: onnx.ModelProto, feeds: dict[str, np.ndarray], scores: WeightScores, tops=TOPS,
            repairs=REPAIRS) -> Iterator[tuple[str, int, str, list[Position], onnx.ModelProto]]:
    """(score, K, repair, the weights picked, the repaired model) for every combination, and for
    K weights drawn at random (score ``random``: what a repair does without finding anything)."""
    reverter = Reverter(locked, feeds)
    total = sum(scores.sizes())
    for score in [*scores.scores, RANDOM]:
        for k in sorted({min(k, total) for k in tops}):
            picks = scores.random(k) if score == RANDOM else scores.top(score, k)
            for repair in repairs:
                try:
                    model = reverter.repaired(picks, repair)
                except (ImportError, UnsupportedGraphError):  # descent needs torch and a bridge
                    continue
                yield score, k, repair, picks, model
