"""Channel dependency groups: which tensor axes must widen together (after Torch-Pruning's DependencyGraph).

A group starts at a layer that creates channels (Conv, Gemm, MatMul with a constant weight) and
grows by following each member tensor into its producer and consumers through the op rules in
``handlers``. It is widenable when every member's producer can create channels, every consumer
either absorbs them in its weights or passes them on, and no member is a graph input or output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .channels import Edit, IndexMap, ParamEdit, Role, ShapeEdit
from .handlers import einsum_source_axis, group_map, head_split, rule_for, shape_target, slice_params, static_dim

SOURCE_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": -1, "Gather": -1}


@dataclass(frozen=True)
class Member:
    tensor: gs.Variable
    axis: int
    imap: IndexMap


@dataclass
class Group:
    """One channel space: its members, the edits that widen it, or why it cannot be widened."""

    name: str
    axis: int
    channels: int
    members: dict[str, Member] = field(default_factory=dict)
    edits: list[Edit] = field(default_factory=list)
    mixes: bool = False
    blocked: str | None = None

    @property
    def widenable(self) -> bool:
        return self.blocked is None

    def params_per_channel(self) -> int:
        """Parameters one added channel costs."""
        total = 0
        for edit in self.edits:
            if isinstance(edit, ParamEdit):
                shape = edit.constant.shape
                total += int(np.prod(shape, dtype=np.int64)) // shape[edit.axis] * edit.imap.growth(1)
        return total

    def layers(self) -> list[str]:
        """Names of the nodes whose weights create this group's channels."""
        return sorted({e.node.name for e in self.edits if isinstance(e, ParamEdit) and e.role is Role.OUT})


def _graph_io(graph: gs.Graph) -> tuple[set[str], set[str]]:
    return {t.name for t in graph.inputs}, {t.name for t in graph.outputs}


def seed_map(seed: gs.Variable, axis: int) -> IndexMap:
    """Where the base channels of a group seeded at ``seed`` lie: one group's channels repeated per
    group at the output of a grouped convolution, the whole axis elsewhere."""
    producer = seed.inputs[0] if len(seed.inputs) == 1 else None
    grouped = group_map(producer) if producer is not None and axis == 1 and producer.op == "Conv" else None
    return grouped or IndexMap()


def build_group(graph: gs.Graph, seed: gs.Variable, axis: int) -> Group:
    """Grow the group of ``seed``'s axis until closed or blocked."""
    inputs, outputs = _graph_io(graph)
    imap = seed_map(seed, axis)
    group = Group(name=seed.name, axis=axis, channels=(static_dim(seed, axis) or 0) // imap.copies)
    if not group.channels:
        group.blocked = f"tensor '{seed.name}' has no static size on axis {axis}"
        return group
    edits: dict[tuple, Edit] = {}
    queue: list[Member] = []

    def add(member: Member) -> str | None:
        name = member.tensor.name
        known = group.members.get(name)
        if known is not None:
            same = known.axis == member.axis and known.imap == member.imap
            return None if same else f"tensor '{name}' would widen in two different ways"
        if name in inputs or name in outputs:
            kind = "input" if name in inputs else "output"
            return f"the widened channels reach graph {kind} '{name}'"
        group.members[name] = member
        queue.append(member)
        return None

    group.blocked = add(Member(seed, axis, imap))
    visited: set[tuple[int, str]] = set()
    while queue and group.blocked is None:
        member = queue.pop(0)
        tensor = member.tensor
        for node in [*tensor.inputs, *tensor.outputs]:
            if (id(node), tensor.name) in visited:
                continue
            visited.add((id(node), tensor.name))
            rule = rule_for(node, tensor, member.axis, member.imap)
            if rule.blocked:
                group.blocked = rule.blocked
                break
            group.mixes |= rule.mixes
            for edit in rule.edits:
                edits.setdefault(_edit_key(edit), edit)
            for link in rule.links:
                visited.add((id(node), link.tensor.name))  # the rule already decided this tensor's side
                link_axis = link.axis % len(link.tensor.shape) if link.tensor.shape is not None else link.axis
                group.blocked = add(Member(link.tensor, link_axis, link.imap))
                if group.blocked:
                    break
            if group.blocked:
                break
    group.edits = list(edits.values())
    if group.blocked is None and not any(isinstance(e, ParamEdit) and e.role is Role.OUT for e in group.edits):
        group.blocked = "no layer creates these channels"
    if group.blocked is None and not group.mixes:
        group.blocked = "no layer reads these channels"
    return group


def _edit_key(edit: Edit) -> tuple:
    if isinstance(edit, ParamEdit):
        return ("param", id(edit.node), edit.index, edit.axis)
    if isinstance(edit, ShapeEdit):
        return ("shape", id(edit.node), edit.index, edit.dim)
    return ("attr", id(edit.node), edit.attr, edit.item)


def source_axis(node: gs.Node) -> int | None:
    """The channel axis of a source node's output, or None if the node creates no channels."""
    if node.op == "Einsum":
        return einsum_source_axis(node)
    axis = SOURCE_OPS.get(node.op)
    if axis is None or not node.outputs or not node.outputs[0].shape:  # unknown or 0-d (a shape entry)
        return None
    if node.op == "Gather" and not is_embedding(node.inputs[0]):
        return None
    if node.op in ("Gemm", "MatMul") and not any(isinstance(t, gs.Constant) for t in node.inputs[:2]):
        return None
    return axis % len(node.outputs[0].shape)


def is_embedding(table: gs.Tensor) -> bool:
    """A constant float table of rank >= 2 that a Gather looks rows up in (not a shape or an index list)."""
    return isinstance(table, gs.Constant) and table.values.ndim >= 2 and np.asarray(table.values).dtype.kind == "f"


def head_axis(node: gs.Node) -> int | None:
    """The head-feature axis of an attention head split (Reshape [.., D] -> [.., H, D/H]), or None."""
    if node.op != "Reshape" or node.inputs[0].shape is None or node.outputs[0].shape is None:
        return None
    target = shape_target(node, 1)
    if target is None:
        return None
    split = head_split(list(node.inputs[0].shape), list(node.outputs[0].shape), target.values)
    return None if split is None else split[0] + split[3]


def find_groups(graph: gs.Graph) -> list[Group]:
    """Every channel group of the graph, in topological order of its first source; blocked ones included.

    Layers that create channels seed groups first; attention head splits and Split outputs then
    seed groups of their own, which replace a blocked group they cover (a q/k/v projection blocked
    by the head split, a fused layer blocked by the Split of its channels).
    """
    groups: list[Group] = []
    claimed: set[str] = set()
    sources = [(node.outputs[0], source_axis(node), False) for node in graph.nodes]
    fallbacks = [(node.outputs[0], head_axis(node), True) for node in graph.nodes]
    fallbacks += [(tensor, axis, True) for node in graph.nodes for tensor, axis in split_seeds(node)]
    for tensor, axis, fallback in sources + fallbacks:
        if axis is None or tensor.name in claimed:
            continue
        group = build_group(graph, tensor, axis)
        if group.widenable:
            groups = [g for g in groups if g.widenable or g.name not in group.members]
        elif fallback:
            continue  # adds nothing to the blocked group it would replace
        claimed.update(group.members)
        groups.append(group)
    return groups


def split_seeds(node: gs.Node) -> list[tuple[gs.Variable, int]]:
    """Each output of a Split along a channel axis seeds its own group (its channels lie in one chunk);
    so does the output of a Slice, along each axis it slices with step 1."""
    if node.op == "Slice" and (params := slice_params(node)) is not None and node.outputs[0].outputs:
        return [(node.outputs[0], axis) for axis, step in zip(params[2], params[3]) if step == 1]
    if node.op != "Split" or node.inputs[0].shape is None:
        return []
    axis = node.attrs.get("axis", 0) % len(node.inputs[0].shape)
    return [(out, axis) for out in node.outputs if out.outputs]


WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")


def widenable_share(graph: gs.Graph, groups: list[Group]) -> float:
    """Share of the Conv/Gemm/MatMul/Einsum weight parameters that some widenable group creates or reads
    channels through (1.0 for a graph without such weights)."""
    sizes = {t.name: t.values.size for node in graph.nodes if node.op in WEIGHT_OPS
             for t in node.inputs[:2] if isinstance(t, gs.Constant)}
    covered = {e.constant.name for g in groups if g.widenable for e in g.edits
               if isinstance(e, ParamEdit) and e.role is not Role.CHANNEL and e.node.op in WEIGHT_OPS}
    total = sum(sizes.values())
    return sum(size for name, size in sizes.items() if name in covered) / total if total else 1.0
