"""The shared history: buffers by absolute sequence number, with indexes.

Pure data structure (no trio, no clock). Every buffer gets the next sequence
number; a client's position is just a sequence number, so nothing has to be
touched per client when a buffer arrives. Byte totals, keyframes and PTS are
indexed so that lag and burst questions are answered by bisection instead of
walking the history.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

from ._buffer import Buffer
from ._enums import Format

__all__ = ["BufferLog"]

# Dropped entries are compacted away once they are this many and at least
# half of the lists: amortised O(1) per buffer, never more than 2x the memory.
_COMPACT_MIN = 64


class BufferLog:
    """Buffers with sequence numbers ``low .. next - 1`` (oldest to newest)."""

    __slots__ = ("_base", "_buffers", "_keyframes", "_kf_head", "_low", "_next", "_pts",
                 "_pts_head", "_starts", "total_bytes")

    def __init__(self) -> None:
        self._base = 0  # sequence number of _buffers[0] / _starts[0]
        self._buffers: list[Buffer | None] = []
        self._starts: list[int] = []  # total bytes of every buffer before this one
        self._keyframes: list[int] = []  # sequence numbers, ascending
        self._kf_head = 0
        self._pts: list[int] = []  # sequence numbers of buffers that have a PTS
        self._pts_head = 0
        self._low = 0
        self._next = 0
        #: Bytes of every buffer ever appended.
        self.total_bytes = 0

    # -- size (read-only properties, alike in shape as all such are) ----------
    @property
    def low(self) -> int:
        """Sequence number of the oldest retained buffer."""
        return self._low

    @property
    def next(self) -> int:
        """Sequence number the next appended buffer will get."""
        return self._next

    def __len__(self) -> int:
        return self._next - self._low

    def __getitem__(self, seq: int) -> Buffer:
        if not self._low <= seq < self._next:
            raise IndexError(seq)
        buffer = self._buffers[seq - self._base]
        assert buffer is not None
        return buffer

    # -- changes ---------------------------------------------------------
    def append(self, buffer: Buffer) -> int:
        """Add ``buffer`` as the newest; returns its sequence number."""
        seq = self._next
        self._buffers.append(buffer)
        self._starts.append(self.total_bytes)
        self.total_bytes += buffer.size
        if buffer.keyframe:
            self._keyframes.append(seq)
        if buffer.pts is not None:
            self._pts.append(seq)
        self._next = seq + 1
        return seq

    def trim(self, keep_from: int) -> None:
        """Forget every buffer older than ``keep_from`` (the newest always stays)."""
        keep_from = min(keep_from, self._next - 1)
        if keep_from <= self._low:
            return
        for seq in range(self._low, keep_from):
            self._buffers[seq - self._base] = None  # release the payload now
        self._low = keep_from
        self._kf_head = bisect_left(self._keyframes, keep_from, self._kf_head)
        self._pts_head = bisect_left(self._pts, keep_from, self._pts_head)
        dropped = keep_from - self._base
        if dropped >= _COMPACT_MIN and dropped * 2 >= len(self._buffers):
            del self._buffers[:dropped]
            del self._starts[:dropped]
            self._base = keep_from
            del self._keyframes[: self._kf_head]
            self._kf_head = 0
            del self._pts[: self._pts_head]
            self._pts_head = 0

    # -- amounts over a range [start, end) ---------------------------------
    def _start_bytes(self, seq: int) -> int:
        return self.total_bytes if seq >= self._next else self._starts[seq - self._base]

    def bytes_between(self, start: int, end: int) -> int:
        """Total size of buffers ``start .. end - 1``."""
        if start >= end:
            return 0
        return self._start_bytes(end) - self._start_bytes(start)

    def _pts_index_range(self, start: int, end: int) -> tuple[int, int]:
        lo = bisect_left(self._pts, start, self._pts_head)
        hi = bisect_left(self._pts, end, lo)
        return lo, hi

    def span_between(self, start: int, end: int) -> float:
        """PTS(newest) - PTS(oldest) among buffers ``start .. end - 1`` that have one."""
        lo, hi = self._pts_index_range(start, end)
        if hi - lo < 2:
            return 0.0
        return self._pts_of(self._pts[hi - 1]) - self._pts_of(self._pts[lo])

    def pts_bounds(self, start: int, end: int) -> tuple[float, float] | None:
        """PTS of the oldest and the newest buffer in ``start .. end - 1`` that have one."""
        lo, hi = self._pts_index_range(start, end)
        if lo >= hi:
            return None
        return self._pts_of(self._pts[lo]), self._pts_of(self._pts[hi - 1])

    def _pts_of(self, seq: int) -> float:
        pts = self[seq].pts
        assert pts is not None
        return pts

    def amount(self, fmt: Format, start: int, end: int) -> float:
        """Buffers ``start .. end - 1`` measured in ``fmt`` (unknown formats count buffers)."""
        if fmt == Format.BYTES:
            return self.bytes_between(start, end)
        if fmt == Format.TIME:
            return self.span_between(start, end)
        return max(0, end - start)

    # -- starts that satisfy an amount -------------------------------------
    def newest_start_reaching(self, fmt: Format, value: float, end: int) -> int:
        """The newest ``s`` with ``amount(s, end) >= value``; ``low`` if none."""
        low = self._low
        if end <= low:
            return low
        if fmt == Format.BYTES:
            target = self._start_bytes(end) - value
            # largest s in [low, end) with starts[s] <= target
            i = bisect_right(self._starts, target, low - self._base, end - self._base)
            return max(low, i - 1 + self._base)
        if fmt == Format.TIME:
            found = self._pts_back_to(value, end, over=False)
            return low if found is None else found
        return max(low, end - math.ceil(value))

    def oldest_start_within(self, fmt: Format, value: float, end: int) -> int:
        """The oldest ``s`` with ``amount(s, end) <= value``; ``end`` if even one buffer is over."""
        # The mirror image of newest_start_reaching (<= instead of >=): the
        # same bisections from the other side, so alike in shape on purpose.
        low = self._low
        if end <= low:
            return end
        if fmt == Format.BYTES:
            target = self._start_bytes(end) - value
            # smallest s in [low, end] with starts[s] >= target
            i = bisect_left(self._starts, target, low - self._base, end - self._base)
            return i + self._base
        if fmt == Format.TIME:
            found = self._pts_back_to(value, end, over=True)
            return low if found is None else found + 1
        return max(low, end - int(value))

    def _pts_back_to(self, value: float, end: int, *, over: bool) -> int | None:
        """Walking back from the newest buffer before ``end`` that has a PTS,
        the first one whose PTS span to it reaches ``value`` (is over it,
        with ``over``); ``None`` if none does."""
        lo, hi = self._pts_index_range(self._low, end)
        if hi - lo < 2:
            return None
        newest = self._pts_of(self._pts[hi - 1])
        for i in range(hi - 2, lo - 1, -1):
            seq = self._pts[i]
            span = newest - self._pts_of(seq)
            if span > value or (span == value and not over):
                return seq
        return None

    def oldest_pts_seq(self) -> int | None:
        """Sequence number of the oldest retained buffer that has a PTS."""
        return self._pts[self._pts_head] if self._pts_head < len(self._pts) else None

    # -- keyframes ---------------------------------------------------------
    def keyframe_at_or_before(self, seq: int, low: int | None = None) -> int | None:
        """The newest keyframe with sequence number <= ``seq`` (and >= ``low``)."""
        i = bisect_right(self._keyframes, seq, self._kf_head) - 1
        if i < self._kf_head:
            return None
        found = self._keyframes[i]
        return found if low is None or found >= low else None

    def keyframe_at_or_after(self, seq: int, end: int | None = None) -> int | None:
        """The oldest keyframe with sequence number >= ``seq`` (and < ``end``)."""
        i = bisect_left(self._keyframes, max(seq, self._low), self._kf_head)
        if i >= len(self._keyframes):
            return None
        found = self._keyframes[i]
        limit = self._next if end is None else end
        return found if found < limit else None
