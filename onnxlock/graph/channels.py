"""The vocabulary of channel widening: index maps, parameter edits and per-node rules.

A *group* is one channel space: a set of tensor axes that must grow together. Its base space has
C channels; widening by k inserts k channels at positions P (indices into the widened base space).
Channel p of the base space lands on a tensor axis at ``offset + p * block + [0, block)``: block > 1
after a Flatten/Reshape folds trailing dimensions into the axis, offset > 0 after a Concat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class IndexMap:
    """Where base-space channels land on one tensor axis."""

    offset: int = 0
    block: int = 1

    def expand(self, factor: int) -> "IndexMap":
        """The map after every index of the axis becomes ``factor`` consecutive indices."""
        return IndexMap(self.offset * factor, self.block * factor)

    def shift(self, by: int) -> "IndexMap":
        return IndexMap(self.offset + by, self.block)

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Axis indices occupied by base-space ``positions`` (sorted)."""
        starts = self.offset + np.asarray(positions, dtype=np.int64) * self.block
        return (starts[:, None] + np.arange(self.block, dtype=np.int64)[None, :]).reshape(-1)


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
    """An integer attribute (Conv ``group``) that grows by ``per_channel`` per channel."""

    node: gs.Node
    attr: str
    per_channel: int


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
