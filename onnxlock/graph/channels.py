"""The vocabulary of channel widening: index maps, parameter edits and per-node rules.

A *group* is one channel space: a set of tensor axes that must grow together. Its base space has
C channels; widening by k inserts k channels at positions P (indices into the widened base space).
Channel p of the base space lands on a tensor axis at ``offset + p * block + [0, block)``: block > 1
after a Flatten/Reshape folds trailing dimensions into the axis, offset > 0 after a Concat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from .index_map import IDENTITY, IndexMap  # noqa: F401  (part of the vocabulary)

if TYPE_CHECKING:  # annotations only
    import onnx_graphsurgeon as gs


class Role(Enum):
    """What new entries of a parameter mean, which decides how counterfeit values are drawn."""

    OUT = "out"  # a new filter/row that computes the confusion channel
    IN = "in"  # a new input weight through which a consumer reads the confusion channel
    CHANNEL = "channel"  # a per-channel vector (bias, norm statistics, broadcast constant)


@dataclass(frozen=True)
class ParamEdit:
    """Grow ``node``'s constant input ``index`` along ``axis`` (negative axes count from the end)."""

    node: gs.Node
    index: int
    axis: int
    imap: IndexMap
    role: Role

    @property
    def constant(self) -> gs.Constant:
        return self.node.inputs[self.index]


@dataclass(frozen=True)
class ShapeEdit:
    """A Reshape target-shape constant whose entry ``dim`` grows by ``per_channel`` per channel."""

    node: gs.Node
    index: int
    dim: int
    per_channel: int


@dataclass(frozen=True)
class AttrEdit:
    """An integer attribute (Conv ``group``), or entry ``item`` of an integer-list attribute
    (Split ``split`` before opset 13), that grows by ``per_channel`` per channel."""

    node: gs.Node
    attr: str
    per_channel: int
    item: int | None = None


Edit = ParamEdit | ShapeEdit | AttrEdit


@dataclass(frozen=True)
class Link:
    """Another tensor of the node that widens with the entry tensor."""

    tensor: gs.Variable
    axis: int
    imap: IndexMap


@dataclass
class Rule:
    """What widening one tensor of a node implies for that node."""

    links: list[Link] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    mixes: bool = False  # the node combines channels (a consumer), even without parameters
    blocked: str | None = None


def blocked(node: gs.Node, why: str) -> Rule:
    return Rule(blocked=f"{node.op} node '{node.name}': {why}")
