"""WidenChannelsPass: confusion channels at secret positions (seed 000, Algorithm 1).

Each widenable channel group gets k extra channels at random positions of its widened space;
the layers that create the channels get counterfeit filters, the layers that read them get
counterfeit input weights, so the locked output is corrupted. The secret is the positions per
group and the list of tensors they were inserted into; deleting them restores the exact original.

Channels go where they hurt most: every group is probed alone on calibration inputs, and the
budget (``ratio`` x original parameters) is shared out by measured damage per parameter, with
diminishing returns so that several groups are protected rather than one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from tqdm import tqdm

from ..errors import UnsupportedGraphError
from ..evaluate.activations import input_means
from ..evaluate.damage import damage, run, synthetic_feeds
from ..graph.groups import Group, build_group, find_groups
from ..graph.normalize import export_graph, import_graph, initializer_arrays, normalize
from ..graph.patch import narrow
from ..graph.widen import widen_group
from .base import PassResult
from .counterfeit import DEFAULT_STRATEGY, STRATEGIES, Counterfeiter

SECRET_VERSION = 1
DEFAULT_TRIES = None  # auto: see auto_tries


def auto_tries(params: int) -> int:
    """Draws per group when not given: many for small models (each draw is cheap and small models
    vary most from draw to draw), 4 for models of a million parameters and more."""
    return int(np.clip(2_000_000 // max(params, 1), 4, 32))


def parameter_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer)


@dataclass
class Plan:
    """Channels to add per group (by group name), in the graph's topological order."""

    channels: dict[str, int]

    def cost(self, groups: dict[str, Group]) -> int:
        return sum(k * groups[name].params_per_channel() for name, k in self.channels.items())


def allocate(groups: list[Group], efficiency: dict[str, float], budget: float) -> Plan:
    """Greedy share of the budget: next channel to the group with most damage per parameter,
    divided by (1 + channels it already has) so the channels spread over many groups."""
    channels = {g.name: 0 for g in groups}
    spent = 0
    while True:
        fits = [g for g in groups
                if spent + g.params_per_channel() <= budget and channels[g.name] < max(1, g.channels // 2)]
        if not fits:
            break
        best = max(fits, key=lambda g: efficiency[g.name] / (1 + channels[g.name]))
        channels[best.name] += 1
        spent += best.params_per_channel()
    return Plan({g.name: channels[g.name] for g in groups if channels[g.name]})


class WidenChannelsPass:
    """Lock a model by widening layers with confusion channels; the secret is their positions."""

    method = "confusion"

    def __init__(self, ratio: float = 0.02, strategy: str = DEFAULT_STRATEGY, seed: int | None = None,
                 calibration: dict[str, np.ndarray] | None = None, tries: int | None = DEFAULT_TRIES, progress: bool = False,
                 align: bool = True):
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
        self.ratio, self.strategy, self.progress = ratio, strategy, progress
        self.requested_tries = None if tries is None else max(1, tries)
        self.tries = self.requested_tries  # settled per model in __call__ when None
        self.rng = np.random.default_rng(seed)
        self.calibration = calibration
        self.align = align
        self.input_means: dict[str, np.ndarray] = {}

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        original = normalize(model)
        groups = find_groups(import_graph(original))
        candidates = [g for g in groups if g.widenable]
        if not candidates:
            reasons = "; ".join(sorted({g.blocked for g in groups})[:3]) or "no Conv, Gemm or MatMul with constant weights"
            raise UnsupportedGraphError(f"no layer can take confusion channels: {reasons}")
        params = parameter_count(original)
        budget = self.ratio * params
        self.tries = self.requested_tries or auto_tries(params)
        cheapest = min(g.params_per_channel() for g in candidates)
        if cheapest > budget:
            raise UnsupportedGraphError(
                f"ratio {self.ratio} allows {budget:.0f} parameters but the cheapest channel costs {cheapest} "
                f"(use --ratio {math.ceil(1000 * cheapest / params) / 1000} or more)")
        feeds = self.calibration or synthetic_feeds(original)
        reference = run(original, feeds)
        self.input_means = input_means(original, feeds) if self.align else {}
        efficiency = self._probe(original, candidates, feeds, reference)
        plan = allocate(candidates, efficiency, budget)
        locked, patch, score = self._lock(original, plan, feeds, reference)
        if all(np.array_equal(a, b) for a, b in zip(reference, run(locked, feeds))):
            raise UnsupportedGraphError(
                "the confusion channels changed no output on the calibration inputs (they stay inactive); "
                "give real inputs with --calib, more --tries or a larger --ratio")
        self._ensure(original, locked, patch)
        by_name = {g.name: g for g in candidates}
        report = {
            "method": self.method,
            "strategy": self.strategy,
            "tries": self.tries,
            "params_original": params,
            "params_added": plan.cost(by_name),
            "groups_total": len(groups),
            "groups_widened": len(plan.channels),
            "calibration_damage": round(score, 4),
            "groups": [{"group": name, "layers": by_name[name].layers(), "channels": by_name[name].channels,
                        "added": k, "params_added": k * by_name[name].params_per_channel()}
                       for name, k in plan.channels.items()],
            "blocked": [{"group": g.name, "reason": g.blocked} for g in groups if not g.widenable],
        }
        secret = {"method": self.method, "version": SECRET_VERSION, "groups": patch}
        return PassResult(locked, secret, report)

    def _probe(self, original, candidates, feeds, reference) -> dict[str, float]:
        """Damage per parameter of one extra channel in each group alone (best of ``tries`` draws)."""
        efficiency = {}
        graph = import_graph(original)
        for group in tqdm(candidates, desc="probing layers", disable=not self.progress, leave=False):
            score = max(damage(reference, run(export_graph(self._widen(graph, group, 1)[0], original), feeds))
                        for _ in range(self.tries))
            efficiency[group.name] = score / group.params_per_channel()
        return efficiency

    def _lock(self, original, plan, feeds, reference) -> tuple[onnx.ModelProto, list[dict], float]:
        """Widen the planned groups one after another; for each keep the best of ``tries`` draws
        of positions and counterfeit weights, measured with the groups before it already locked."""
        graph = import_graph(original)
        patch, score = [], 0.0
        chosen = [g for g in find_groups(graph) if plan.channels.get(g.name)]
        for group in tqdm(chosen, desc="locking layers", disable=not self.progress, leave=False):
            if self.align and patch:  # earlier groups may have widened this group's inputs
                self.input_means = input_means(export_graph(graph, original), feeds)
            best = None
            for _ in range(self.tries):
                trial, edits = self._widen(graph, group, plan.channels[group.name])
                trial_score = damage(reference, run(export_graph(trial, original), feeds))
                if best is None or trial_score > best[2]:
                    best = (trial, edits, trial_score)
            graph, edits, score = best
            patch.append(edits)
        return export_graph(graph, original), patch, score

    def _widen(self, graph: gs.Graph, group: Group, k: int) -> tuple[gs.Graph, dict]:
        """A copy of ``graph`` with ``k`` confusion channels in ``group`` at fresh random positions."""
        trial = graph.copy()
        # rebuilt on the copy: earlier widenings may have moved concat offsets this group sees
        current = build_group(trial, trial.tensors()[group.name], group.axis)
        positions = np.sort(self.rng.choice(current.channels + k, size=k, replace=False))
        counterfeit = Counterfeiter(self.strategy, self.rng, self.input_means)
        counterfeit.start_group(k)
        edits = widen_group(current, positions, counterfeit)
        return trial, {"positions": positions.tolist(), "edits": edits}

    @staticmethod
    def restore(model: onnx.ModelProto, secret: dict, *, in_place: bool = False) -> onnx.ModelProto:
        """The inverse pass: delete the confusion channels named by ``secret``."""
        return narrow(model, secret.get("groups"), in_place=in_place)

    @staticmethod
    def _ensure(original: onnx.ModelProto, locked: onnx.ModelProto, patch: list[dict]) -> None:
        """Guarantees: the locked model is valid ONNX and the patch restores every original weight."""
        try:
            onnx.checker.check_model(locked, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise UnsupportedGraphError(f"locked model fails the checker: {str(exc).splitlines()[0]}") from exc
        before, after = initializer_arrays(original), initializer_arrays(narrow(locked, patch))
        broken = [name for name, value in before.items()
                  if name not in after or after[name].tobytes() != value.tobytes() or after[name].shape != value.shape]
        if broken:
            raise UnsupportedGraphError(f"restore would not be exact for {', '.join(broken[:3])}")


restore_channels = WidenChannelsPass.restore
