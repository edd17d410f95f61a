"""Cursors indexed by position, so that a push looks only at the clients
that may be over a limit, never at the ones that keep up.

Pure data structure: every change of a cursor's position goes through
:meth:`Positions.move`. Positions only grow, except when a client is added
with a burst; a hint on the lowest occupied position therefore moves
forward in amortised O(1) per buffer.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

__all__ = ["NOWHERE", "UNPLACED", "Positions"]

#: Slot of a cursor that waits for a keyframe.
UNPLACED = -1
#: Slot of a cursor that needs nothing from the history (removed, flushed).
NOWHERE = -2


class Slotted(Protocol):
    slot: int


C = TypeVar("C", bound="Slotted")


class Positions(Generic[C]):
    """Buckets of cursors by position, and the set of unplaced cursors."""

    def __init__(self) -> None:
        self._at: dict[int, dict[C, None]] = {}
        self.unplaced: dict[C, None] = {}
        self._hint = 0  # no occupied position is below this

    def move(self, cursor: C, slot: int) -> None:
        """Put ``cursor`` at position ``slot`` (or UNPLACED, or NOWHERE)."""
        old = cursor.slot
        if old == slot:
            return
        if old >= 0:
            bucket = self._at[old]
            del bucket[cursor]
            size = len(bucket)
            if not size:
                del self._at[old]
            elif size >= 8 and not size & (size - 1):
                # A dict never shrinks: a bucket that once held every client
                # and now holds the few stalled there would keep its table.
                # Copied at each power of two on the way down, it stays
                # within 4x of what it holds, at O(1) amortised per move.
                self._at[old] = dict(bucket)
        elif old == UNPLACED:
            del self.unplaced[cursor]
        if slot >= 0:
            self._at.setdefault(slot, {})[cursor] = None
            self._hint = min(self._hint, slot)
        elif slot == UNPLACED:
            self.unplaced[cursor] = None
        cursor.slot = slot

    def lowest(self, end: int) -> int:
        """The lowest occupied position, or ``end`` when none is below it."""
        at, hint = self._at, self._hint
        if not at:
            return end
        while hint < end and hint not in at:
            hint += 1
        self._hint = hint
        return hint

    def below(self, limit: int) -> list[C]:
        """Every placed cursor at a position below ``limit``, lowest first."""
        found: list[C] = []
        if not self._at:
            return found
        position = self.lowest(limit)
        at = self._at
        while position < limit:
            bucket = at.get(position)
            if bucket:
                found.extend(bucket)
            position += 1
        return found
