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
from onnx import numpy_helper
from tqdm import tqdm

from ..errors import UnsupportedGraphError
from ..evaluate.activations import input_means
from ..evaluate.damage import MAX_DAMAGE, PLAUSIBLE_RANGE, all_plausible, damage, drift, synthetic_feeds
from ..evaluate.subgraph import Frontier, Schedule, weightless
from ..graph.channels import ParamEdit, Role
from ..graph.groups import Group, build_group, find_groups
from ..graph.normalize import export_graph, import_graph, normalize
from ..graph.patch import narrow
from ..graph.widen import widen_group
from .base import PassResult
from .counterfeit import DEFAULT_STRATEGY, STRATEGIES, Counterfeiter
from .restorers import CONFUSION, restore_channels

SECRET_VERSION = 1
DEFAULT_TRIES = None  # auto: see auto_tries
DEFAULT_RATIO = 0.02  # parameter budget, as a share of the model's, when no ratio is given
MAX_AUTO_RATIO = 0.15  # the most a stealth lock's default budget grows to reach every group


def auto_tries(params: int) -> int:
    """Draws per group when not given: many for small models (each draw is cheap and small models
    vary most from draw to draw), 4 for models of a million parameters and more."""
    return int(np.clip(2_000_000 // max(params, 1), 4, 32))


def probe_tries(params: int, tries: int) -> int:
    """Draws per group when probing: as auto_tries, but down to one for models of two million
    parameters and more (the probe only ranks groups; each draw there runs much of the model)."""
    return int(np.clip(2_000_000 // max(params, 1), 1, tries))


def _rank(trial: tuple, reference: list[np.ndarray]) -> tuple[float, float]:
    """How a draw compares: its damage, then how far it moved the outputs."""
    return trial[3], drift(reference, trial[2])


def parameter_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer)


@dataclass
class Plan:
    """Channels to add per group (by group name), in the graph's topological order."""

    channels: dict[str, int]

    def cost(self, groups: dict[str, Group]) -> int:
        return sum(k * groups[name].params_per_channel() for name, k in self.channels.items())


def share_weights(graph: gs.Graph) -> None:
    """Decode every constant now: copies of the graph share its arrays, where a constant still
    lazy would be decoded again (a copy of the weights) by every trial copy that reads it."""
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant):
            tensor.values  # noqa: B018  (the property caches the decoded array)


def group_nodes(group: Group) -> list[gs.Node]:
    """The nodes widening ``group`` edits or whose outputs it grows: nothing before them changes."""
    nodes = {id(e.node): e.node for e in group.edits}
    nodes.update({id(n): n for member in group.members.values() for n in member.tensor.inputs})
    return list(nodes.values())


def fallback_counts(k: int) -> list[int]:
    """Channel counts to draw in turn when no draw of ``k`` channels keeps the outputs plausible
    (many aligned channels add up): k, a quarter of k, then one."""
    return sorted({k, max(1, k // 4), 1}, reverse=True)


def fallback_tries(tries: int, attempt: int) -> int:
    """Draws at the ``attempt``-th channel count of fallback_counts: all ``tries`` at the planned
    count, half as many at each fallback (every draw there runs the rest of the model)."""
    return tries if attempt == 0 else max(1, tries // 2)


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


def spread(groups: list[Group], budget: float) -> Plan:
    """Stealth share of the budget: one channel to as many groups as it allows (cheapest first), then
    each next channel to the widened group with the lowest share of counterfeits, so that neither a
    group's width nor its share of channels singles it out (damage is the sign flips' job there)."""
    channels = {g.name: 0 for g in groups}
    spent = 0
    for group in sorted(groups, key=lambda g: g.params_per_channel()):
        if spent + group.params_per_channel() <= budget:
            channels[group.name] = 1
            spent += group.params_per_channel()
    while True:
        fits = [g for g in groups if channels[g.name] and spent + g.params_per_channel() <= budget
                and channels[g.name] < max(1, g.channels // 2)]
        if not fits:
            break
        best = min(fits, key=lambda g: ((channels[g.name] + 1) / g.channels, g.params_per_channel()))
        channels[best.name] += 1
        spent += best.params_per_channel()
    return Plan({g.name: channels[g.name] for g in groups if channels[g.name]})


class WidenChannelsPass:
    """Lock a model by widening layers with confusion channels; the secret is their positions."""

    method = CONFUSION

    def __init__(self, ratio: float | None = None, strategy: str = DEFAULT_STRATEGY, seed: int | None = None,
                 calibration: dict[str, np.ndarray] | None = None, tries: int | None = DEFAULT_TRIES, progress: bool = False,
                 align: bool = True, stealth: bool = False):
        if ratio is not None and not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
        self.ratio, self.strategy, self.progress = ratio, strategy, progress
        self.requested_tries = None if tries is None else max(1, tries)
        self.tries = self.requested_tries  # settled per model in __call__ when None
        self.rng = np.random.default_rng(seed)
        self.calibration = calibration
        self.stealth = stealth  # counterfeits drawn to look ordinary (see counterfeit.py)
        self.align = align and not stealth
        self.input_means: dict[str, np.ndarray] = {}

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        original = normalize(model)
        graph = import_graph(original)
        share_weights(graph)
        groups = find_groups(graph)
        candidates = [g for g in groups if g.widenable]
        if not candidates:
            reasons = "; ".join(sorted({g.blocked for g in groups})[:3]) or "no Conv, Gemm or MatMul with constant weights"
            raise UnsupportedGraphError(f"no layer can take confusion channels: {reasons}")
        params = parameter_count(original)
        budget = self._budget(candidates, params)
        self.tries = self.requested_tries or auto_tries(params)
        cheapest = min(g.params_per_channel() for g in candidates)
        if cheapest > budget:
            raise UnsupportedGraphError(
                f"ratio {budget / params:.4g} allows {budget:.0f} parameters but the cheapest channel costs {cheapest} "
                f"(use --ratio {math.ceil(1000 * cheapest / params) / 1000} or more)")
        feeds = self.calibration or synthetic_feeds(original)
        schedule = Schedule(graph)
        candidates.sort(key=lambda g: schedule.cut(group_nodes(g)))  # so a frontier walks forward once
        reference = Frontier(graph, feeds, original).outputs(graph)
        if self.stealth:
            plan = spread(candidates, budget)
        else:
            plan = allocate(candidates, self._probe(graph, candidates, feeds, reference, original), budget)
        graph, patch, widened, outputs = self._lock(graph, [g for g in candidates if g.name in plan.channels],
                                                     plan, feeds, reference, original)
        skipped = [name for name in plan.channels if name not in widened]
        if not patch:
            raise UnsupportedGraphError(
                f"no draw of confusion channels kept the outputs plausible (finite, peak within "
                f"{PLAUSIBLE_RANGE[0]}x-{PLAUSIBLE_RANGE[1]}x of the original's) in {len(skipped)} layer group(s); "
                "give real inputs with --calib or more --tries")
        if all(np.array_equal(a, b) for a, b in zip(reference, outputs)):
            raise UnsupportedGraphError(
                "the confusion channels changed no output on the calibration inputs (they stay inactive); "
                "give real inputs with --calib, more --tries or a larger --ratio")
        locked = export_graph(graph, original)
        del graph
        self._ensure(original, locked, patch)
        by_name = {g.name: g for g in candidates}
        report = {
            "method": self.method,
            "strategy": self.strategy,
            "tries": self.tries,
            "params_original": params,
            "params_added": sum(widened[name] * by_name[name].params_per_channel() for name in widened),
            "groups_total": len(groups),
            "groups_widened": len(widened),
            "calibration_damage": round(damage(reference, outputs), 4),
            "groups": [{"group": name, "layers": by_name[name].layers(), "channels": by_name[name].channels,
                        "added": k, "params_added": k * by_name[name].params_per_channel()}
                       for name, k in widened.items()],
            "blocked": [{"group": g.name, "reason": g.blocked} for g in groups if not g.widenable],
            "skipped": [{"group": name, "reason": self._skip_reason(plan.channels[name])} for name in skipped],
        }
        secret = {"method": self.method, "version": SECRET_VERSION, "groups": patch}
        return PassResult(locked, secret, report)

    def _budget(self, candidates: list[Group], params: int) -> float:
        """Parameters the channels may add: ``ratio`` of the model's when given; by default
        DEFAULT_RATIO of them, or in stealth mode enough for one channel in every group (so no
        width gives the widened layers away) up to MAX_AUTO_RATIO of them."""
        if self.ratio is not None:
            return self.ratio * params
        budget = DEFAULT_RATIO * params
        if self.stealth:
            budget = max(budget, min(sum(g.params_per_channel() for g in candidates), MAX_AUTO_RATIO * params))
        return budget

    def _probe(self, graph, candidates, feeds, reference, original) -> dict[str, float]:
        """Damage per parameter of one extra channel in each group alone (best plausible of
        ``probe_tries`` draws; 0 when none is plausible). Each draw runs only the graph from the group on."""
        efficiency = {}
        draws = probe_tries(parameter_count(original), self.tries)
        frontier = Frontier(graph, feeds, original)
        for group in tqdm(candidates, desc="probing layers", disable=not self.progress, leave=False):
            frontier.advance(graph, frontier.schedule.cut(group_nodes(group)))
            self._measure_inputs(frontier, graph, group)
            scores = [self._trial(frontier, graph, group, 1, reference)[3] for _ in range(draws)]
            efficiency[group.name] = max((s for s in scores if s is not None), default=0.0) / group.params_per_channel()
        return efficiency

    def _lock(self, graph, chosen, plan, feeds, reference, original) -> tuple[gs.Graph, list[dict], dict, list]:
        """Widen the planned groups one after another; for each keep the most damaging of ``tries``
        draws of positions and counterfeit weights whose outputs stay plausible (measured with the
        groups before it already locked), with fewer channels when no draw is, or skip the group
        when no draw of even one channel is. In stealth mode the first plausible draw is kept:
        picking the most damaging of many draws would pick the loudest counterfeits, which the
        thief's activation and bias statistics then single out (the sign flips do the damage)."""
        patch, widened, outputs = [], {}, reference
        frontier = Frontier(graph, feeds, original)
        for group in tqdm(chosen, desc="locking layers", disable=not self.progress, leave=False):
            frontier.advance(graph, frontier.schedule.cut(group_nodes(group)))
            self._measure_inputs(frontier, graph, group)  # earlier groups may have widened its inputs
            for attempt, k in enumerate(fallback_counts(plan.channels[group.name])):
                best, best_rank = None, None
                for _ in range(fallback_tries(self.tries, attempt)):
                    trial = self._trial(frontier, graph, group, k, reference)
                    # ties (e.g. no decision changed yet) go to the draw that moves the outputs most
                    rank = None if trial[3] is None else _rank(trial, reference)
                    if rank is not None and (best_rank is None or rank > best_rank):
                        best, best_rank = trial, rank
                    if best is not None and (self.stealth or best[3] >= MAX_DAMAGE):
                        break  # no later draw can beat it; or stealth: the first plausible draw
                if best is not None:
                    graph, edits, outputs, _ = best
                    patch.append(edits)
                    widened[group.name] = k
                    break
        return graph, patch, widened, outputs

    def _skip_reason(self, planned: int) -> str:
        counts = fallback_counts(planned)
        reason = f"no plausible draw in {self.tries} tries of {counts[0]} channel(s)"
        if len(counts) > 1:
            reason += f", then {fallback_tries(self.tries, 1)} of {', '.join(map(str, counts[1:]))}"
        return reason

    def _measure_inputs(self, frontier: Frontier, graph: gs.Graph, group: Group) -> None:
        """Mean input activations of the layers creating ``group``'s channels (counterfeits align to them)."""
        producers = [e.node for e in group.edits if isinstance(e, ParamEdit) and e.role is Role.OUT]
        self.input_means = input_means(frontier, graph, producers) if self.align else {}

    def _trial(self, frontier: Frontier, graph: gs.Graph, group: Group, k: int,
               reference: list[np.ndarray]) -> tuple[gs.Graph, dict, list[np.ndarray], float | None]:
        """One draw: the widened copy, its patch, its outputs and their damage (None if implausible)."""
        trial, edits, changed = self._widen(graph, group, k)
        outputs = frontier.outputs(trial, frontier.schedule.cut(changed))
        score = damage(reference, outputs) if all_plausible(reference, outputs) else None
        return trial, edits, outputs, score

    def _widen(self, graph: gs.Graph, group: Group, k: int) -> tuple[gs.Graph, dict, list[gs.Node]]:
        """A copy of ``graph`` with ``k`` confusion channels in ``group`` at fresh random positions,
        its patch, and the nodes the widening touched."""
        trial = graph.copy()
        # rebuilt on the copy: earlier widenings may have moved concat offsets this group sees
        current = build_group(trial, trial.tensors()[group.name], group.axis)
        positions = np.sort(self.rng.choice(current.channels + k, size=k, replace=False))
        counterfeit = Counterfeiter(self.strategy, self.rng, self.input_means, stealth=self.stealth)
        counterfeit.start_group(k)
        edits = widen_group(current, positions, counterfeit)
        return trial, {"positions": positions.tolist(), "edits": edits}, group_nodes(current)

    restore = staticmethod(restore_channels)

    @staticmethod
    def _ensure(original: onnx.ModelProto, locked: onnx.ModelProto, patch: list[dict]) -> None:
        """Guarantees: the locked model is valid ONNX and the patch restores every original weight.
        The checker reads the graph without its large weights; only what the patch touches is narrowed."""
        try:
            onnx.checker.check_model(weightless(locked), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise UnsupportedGraphError(f"locked model fails the checker: {str(exc).splitlines()[0]}") from exc
        touched = {edit[1] for group in patch for edit in group["edits"]}
        part = onnx.ModelProto()
        part.graph.initializer.extend(t for t in locked.graph.initializer if t.name in touched)
        part.graph.node.extend(n for n in locked.graph.node if n.name in touched)
        after = {t.name: t for t in locked.graph.initializer}
        after.update((t.name, t) for t in narrow(part, patch, in_place=True).graph.initializer)
        broken = [t.name for t in original.graph.initializer if t.name not in after or not same_tensor(t, after[t.name])]
        if broken:
            raise UnsupportedGraphError(f"restore would not be exact for {', '.join(broken[:3])}")


def same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    """Same dtype, shape and bytes (decoded one tensor at a time)."""
    x, y = numpy_helper.to_array(a), numpy_helper.to_array(b)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()

