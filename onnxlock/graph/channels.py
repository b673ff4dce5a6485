"""The vocabulary of channel widening: index maps, parameter edits and per-node rules.

A *group* is one channel space: a set of tensor axes that must grow together. Its base space has
C channels; widening by k inserts k channels at positions P (indices into the widened base space).
Channel p of the base space lands on a tensor axis at ``offset + p * block + [0, block)``: block > 1
after a Flatten/Reshape folds trailing dimensions into the axis, offset > 0 after a Concat.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: restoring imports this module, and needs no graph surgery
    import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class IndexMap:
    """Where base-space channels land on one tensor axis.

    ``copies`` > 1 when the axis holds several heads of the base space side by side (attention
    heads before a head split): head c starts at ``c * (period + k)`` widened base channels.
    """

    offset: int = 0
    block: int = 1
    copies: int = 1
    period: int = 0

    def expand(self, factor: int) -> "IndexMap":
        """The map after every index of the axis becomes ``factor`` consecutive indices."""
        return replace(self, offset=self.offset * factor, block=self.block * factor)

    def shift(self, by: int) -> "IndexMap":
        return replace(self, offset=self.offset + by)

    @property
    def plain(self) -> bool:
        return self == IDENTITY

    def growth(self, k: int) -> int:
        """How much the axis grows when k channels are added."""
        return k * self.block * self.copies

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Axis indices occupied by base-space ``positions`` (sorted)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.copies == 1 and self.block == 1:  # the common case, without the broadcasts
            return positions + self.offset
        heads = np.arange(self.copies, dtype=np.int64)[:, None] * (self.period + len(positions))
        base = (heads + positions[None, :]).reshape(-1)
        starts = self.offset + base * self.block
        return (starts[:, None] + np.arange(self.block, dtype=np.int64)[None, :]).reshape(-1)

    def to_list(self) -> list[int]:
        """The compact form stored in keys: [offset, block] or [offset, block, copies, period]."""
        head = [self.offset, self.block]
        return head if self.copies == 1 else head + [self.copies, self.period]


IDENTITY = IndexMap()


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
