"""Where a channel space's channels land on one tensor axis: all of the widening vocabulary that
narrowing (the restore) needs, apart from the rest of ``channels.py`` (its dataclasses cost a load
~10 ms to import). A NamedTuple, not a dataclass, for the same reason (2 ms against 0.3-0.8 ms to
make in a fresh process)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class IndexMap(NamedTuple):
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
        return self._replace(offset=self.offset * factor, block=self.block * factor)

    def shift(self, by: int) -> "IndexMap":
        return self._replace(offset=self.offset + by)

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
