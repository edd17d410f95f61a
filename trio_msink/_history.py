"""The pure core of trio_msink: the shared history and every client's cursor.

Like h11's connection, this is a state machine that never touches a stream
or a clock: the Trio shell calls :meth:`History.push` for each buffer and
acts on the :class:`PushResult` (clients over the hard limit), and calls
:meth:`History.peek` / :meth:`History.take` when a client's stream accepts
data. Every rule of docs/semantics.rst (placement, limits, recovery,
retention, streamheaders) is decided here, and the shell asks this class
(never its log or a cursor's fields) what to write next.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._buffer import Buffer
from ._enums import Format, RecoverPolicy, SyncMethod
from ._limits import Limits, recover
from ._log import BufferLog
from ._placement import Burst, burst_start, place
from ._positions import NOWHERE, UNPLACED, Positions

__all__ = ["Cursor", "CursorState", "History", "PushResult"]

_KEYFRAME_METHODS = (
    SyncMethod.LATEST_KEYFRAME,
    SyncMethod.BURST_KEYFRAME,
    SyncMethod.BURST_WITH_KEYFRAME,
)


class CursorState(enum.Enum):
    """Where a client stands in the shared history."""

    #: Placed by a keyframe method (or keyframe recovery) with no keyframe yet:
    #: the next keyframe that arrives places it; nothing is waiting.
    WAITING_FOR_KEYFRAME = "waiting for a keyframe"
    #: Has a position; every buffer from it on is queued for the client.
    PLACED = "placed"
    #: In a remove-flush: gets what was queued before it, nothing that arrives later.
    FLUSHING = "flushing"
    #: Detached from the history: nothing is queued for it any more.
    REMOVED = "removed"


@dataclass(eq=False, slots=True)
class Cursor:
    """One client's position in the shared history.

    ``state`` says what the other fields mean: ``next`` is the sequence
    number of the next buffer to hand to the client's stream (``None`` while
    ``WAITING_FOR_KEYFRAME``); ``flush_end`` is where a remove-flush stops
    (set in ``FLUSHING``).
    """

    handle: object
    next: int | None
    state: CursorState = CursorState.WAITING_FOR_KEYFRAME
    flush_end: int | None = None
    headers_version: int = -1  # -1: has not taken a data buffer yet
    headers_got: tuple[bytes, ...] = ()
    buffers_dropped: int = 0
    first_pts: float | None = None
    last_pts: float | None = None
    #: Where the history's index keeps it (see :mod:`trio_msink._positions`).
    slot: int = NOWHERE
    #: Order of the add, so that simultaneous removals are reported in add order.
    order: int = 0

    @property
    def active(self) -> bool:
        """False once removed from the history."""
        return self.state is not CursorState.REMOVED


@dataclass(slots=True)
class PushResult:
    """What one :meth:`History.push` did."""

    #: False when the buffer was a header already in the streamheader.
    queued: bool
    #: Clients over a hard limit; already detached from the history.
    over_hard: list[Cursor] = field(default_factory=list)
    #: Clients that soft-limit recovery moved.
    resynced: list[Cursor] = field(default_factory=list)


def _header_bytes(headers: Iterable[Buffer]) -> tuple[bytes, ...]:
    return tuple(h.tobytes() for h in headers)


class History:
    """The shared history of buffers and the cursors of every client.

    Settings are plain attributes, validated by the caller (the Sink); they
    take effect at the next :meth:`push` (placement settings at the next
    :meth:`add`).
    """

    def __init__(self) -> None:
        self.log = BufferLog()
        self.cursors: dict[Cursor, None] = {}  # insertion-ordered set
        self._positions: Positions[Cursor] = Positions()
        self._added = 0
        self.limits = Limits()
        self.recover_policy = RecoverPolicy.NONE
        self.sync_method = SyncMethod.LATEST
        self.default_burst = Burst()
        self.bytes_min: int = -1
        self.time_min: float = -1
        self.buffers_min: int = -1
        self.resend_streamheader = True
        self.headers: tuple[Buffer, ...] = ()
        self._header_bytes: tuple[bytes, ...] = ()
        self.headers_version = 0
        #: Bytes of data buffers accepted into the history.
        self.bytes_to_serve = 0
        #: History length after the last push.
        self.buffers_queued = 0

    # -- clients -----------------------------------------------------------
    def add(self, handle: object, method: SyncMethod, burst: Burst) -> Cursor:
        """Register a client placed by ``method`` against the history now."""
        self._added += 1
        cursor = Cursor(handle, None, order=self._added)
        self.cursors[cursor] = None
        self._set_next(cursor, place(self.log, method, burst))
        return cursor

    def remove(self, cursor: Cursor) -> None:
        """Forget a client; what it still needed is trimmed at the next push."""
        cursor.state = CursorState.REMOVED
        self.cursors.pop(cursor, None)
        self._positions.move(cursor, NOWHERE)

    def _set_next(self, cursor: Cursor, position: int | None) -> None:
        """Every change of a cursor's position goes through here: its state
        (placed or waiting for a keyframe) and its slot in the index."""
        cursor.next = position
        state = cursor.state
        if state is CursorState.REMOVED:
            slot = NOWHERE
        elif state is CursorState.FLUSHING:
            # needs the history only up to where its flush ends
            assert position is not None and cursor.flush_end is not None
            slot = position if position < cursor.flush_end else NOWHERE
        elif position is None:
            cursor.state = CursorState.WAITING_FOR_KEYFRAME
            slot = UNPLACED
        else:
            cursor.state = CursorState.PLACED
            slot = position
        self._positions.move(cursor, slot)

    def waiting(self, cursor: Cursor) -> tuple[int, int]:
        """``(start, end)``: the client's waiting buffers are ``start .. end - 1``."""
        state = cursor.state
        if state is CursorState.PLACED:
            assert cursor.next is not None
            return cursor.next, self.log.next
        if state is CursorState.FLUSHING:
            assert cursor.next is not None and cursor.flush_end is not None
            return cursor.next, cursor.flush_end
        end = self.log.next
        return end, end

    def has_waiting(self, cursor: Cursor) -> bool:
        """True when buffers are queued for the client and not yet handed over."""
        start, end = self.waiting(cursor)
        return start < end

    def lag(self, cursor: Cursor, fmt: Format = Format.BUFFERS) -> float:
        """The client's lag in ``fmt`` (BUFFERS, BYTES or TIME)."""
        start, end = self.waiting(cursor)
        return self.log.amount(fmt, start, end)

    def start_flush(self, cursor: Cursor) -> None:
        """Queue nothing more for this client than what is waiting now."""
        if cursor.state in (CursorState.PLACED, CursorState.WAITING_FOR_KEYFRAME):
            end = self.log.next
            position = end if cursor.next is None else cursor.next
            cursor.flush_end = end
            cursor.state = CursorState.FLUSHING
            self._set_next(cursor, position)

    def flushed(self, cursor: Cursor) -> bool:
        """True when a flushing client has handed over everything it had."""
        return cursor.state is CursorState.FLUSHING and not self.has_waiting(cursor)

    # -- the stream --------------------------------------------------------
    def set_streamheader(self, headers: Iterable[Buffer]) -> None:
        """Replace the streamheader; clients get it before their next data buffer."""
        self.headers = tuple(headers)
        self._header_bytes = _header_bytes(self.headers)
        self.headers_version += 1

    def push(self, buffer: Buffer) -> PushResult:
        """Queue ``buffer`` for every client, apply the limits, trim the history."""
        if buffer.header and buffer.tobytes() in self._header_bytes:
            return PushResult(queued=False)
        log = self.log
        seq = log.append(buffer)
        end = seq + 1
        self.bytes_to_serve += buffer.size
        result = PushResult(queued=True)
        positions = self._positions
        if buffer.keyframe and positions.unplaced:
            for cursor in list(positions.unplaced):
                self._set_next(cursor, seq)
        limits, policy = self.limits, self.recover_policy
        soft = limits.has_soft and policy != RecoverPolicy.NONE
        hard = limits.has_hard
        if soft or hard:
            # Only clients below the oldest position within every limit can
            # be over one; the ones that keep up are not even looked at.
            threshold = log.low
            if soft:
                threshold = max(threshold, limits.oldest_start_within_soft(log, end))
            if hard:
                threshold = max(threshold, limits.oldest_start_within_hard(log, end))
            for cursor in positions.below(threshold):
                self._apply_limits(cursor, soft, hard, result)
            result.over_hard.sort(key=lambda c: c.order)
            result.resynced.sort(key=lambda c: c.order)
        for cursor in result.over_hard:
            self.remove(cursor)
        keep = min(seq, positions.lowest(end))
        log.trim(min(keep, self._retention_start()))
        self.buffers_queued = len(log)
        return result

    def _apply_limits(self, cursor: Cursor, soft: bool, hard: bool, result: PushResult) -> None:
        """Soft-limit recovery, then the hard limit, for one client."""
        log, limits = self.log, self.limits
        start, end = self.waiting(cursor)
        if soft and cursor.state is not CursorState.FLUSHING:
            recovery = recover(log, limits, self.recover_policy, start, end)
            if recovery is not None:
                self._set_next(cursor, recovery.next)
                cursor.buffers_dropped += recovery.dropped
                result.resynced.append(cursor)
                if recovery.next is None:
                    return
                start = recovery.next
        if hard and limits.over_hard(log, start, end):
            result.over_hard.append(cursor)

    def _retention_start(self) -> int:
        """The oldest buffer that the retention settings ask to keep."""
        log = self.log
        end = log.next
        keep = end - 1
        if self.bytes_min > 0:
            keep = min(keep, log.newest_start_reaching(Format.BYTES, self.bytes_min, end))
        if self.buffers_min > 0:
            keep = min(keep, end - self.buffers_min)
        if self.time_min > 0:
            if log.span_between(log.low, end) >= self.time_min:
                keep = min(keep, log.newest_start_reaching(Format.TIME, self.time_min, end))
            else:  # not enough yet: keep everything that has a time
                oldest = log.oldest_pts_seq()
                keep = min(keep, end - 1 if oldest is None else oldest)
        if self.default_burst.has_min:
            keep = min(keep, burst_start(log, self.default_burst))
        if self.sync_method in _KEYFRAME_METHODS:
            start = place(log, self.sync_method, self.default_burst)
            if start is not None:
                keep = min(keep, start)
        return keep

    # -- handing buffers to a client's stream ------------------------------
    @property
    def end(self) -> int:
        """Sequence number the next buffer pushed will get."""
        return self.log.next

    def headers_due(self, cursor: Cursor) -> tuple[Buffer, ...]:
        """The streamheaders the client gets before its next data buffer."""
        if cursor.headers_version == self.headers_version:
            return ()
        if cursor.headers_version < 0 or not cursor.headers_got:
            return self.headers
        if not self.resend_streamheader or cursor.headers_got == self._header_bytes:
            return ()
        return self.headers

    def writable_directly(self, cursor: Cursor) -> bool:
        """True when the client's waiting buffers can be written as they are,
        by the direct-write path: it is placed (not in a remove-flush) and no
        headers are due before them."""
        return cursor.state is CursorState.PLACED and not self.headers_due(cursor)

    def buffers(self, start: int, end: int) -> list[Buffer]:
        """The retained buffers ``start .. end - 1``."""
        log = self.log
        return [log[seq] for seq in range(start, end)]

    def segments(self, start: int, end: int, max_segments: int,
                 max_bytes: int) -> tuple[list[memoryview], int, bool]:
        """The non-empty segments of buffers ``start .. end - 1``, for one
        ``writev``: ``(segments, total bytes, complete)``; ``complete`` is False
        when they are more than ``max_segments`` or ``max_bytes``."""
        log = self.log
        segments: list[memoryview] = []
        total = 0
        for seq in range(start, end):
            for segment in log[seq].segments:
                if segment.nbytes:
                    segments.append(segment)
                    total += segment.nbytes
            if len(segments) > max_segments or total > max_bytes:
                return segments, total, False
        return segments, total, True

    def batch_full(self, start: int, max_buffers: int, max_bytes: int) -> bool:
        """True when the buffers from ``start`` to the newest reach
        ``max_buffers`` or ``max_bytes``, or would put a client that has them
        waiting over half of a limit: the point where a batch of writes to
        the clients that keep up must not grow any more."""
        log = self.log
        end = log.next
        start = max(start, log.low)
        return (end - start >= max_buffers
                or log.bytes_between(start, end) >= max_bytes
                or self.limits.near(log, start, end))

    def peek(self, cursor: Cursor, max_buffers: int) -> tuple[tuple[Buffer, ...], list[Buffer]]:
        """What the client would take next, without taking it: the headers due
        before the first data buffer, and up to ``max_buffers`` data buffers."""
        start, end = self.waiting(cursor)
        if start >= end:
            return (), []
        return self.headers_due(cursor), self.buffers(start, min(end, start + max_buffers))

    def _headers_taken(self, cursor: Cursor) -> None:
        cursor.headers_version = self.headers_version
        cursor.headers_got = self._header_bytes

    def advance(self, cursor: Cursor, end: int) -> None:
        """Hand over every waiting buffer before ``end`` at once, for a client
        :meth:`writable_directly` (the caller wrote them itself: the
        direct-write path). Same bookkeeping as :meth:`take`, without listing
        the buffers."""
        start = cursor.next
        assert start is not None and self.writable_directly(cursor)
        self._headers_taken(cursor)
        bounds = self.log.pts_bounds(start, end)
        if bounds is not None:
            if cursor.first_pts is None:
                cursor.first_pts = bounds[0]
            cursor.last_pts = bounds[1]
        self._set_next(cursor, end)

    def take(self, cursor: Cursor, count: int) -> list[Buffer]:
        """Hand over the next ``count`` data buffers (with any headers due before
        them); they stop being waiting. Returns headers and data in order."""
        start, end = self.waiting(cursor)
        count = min(count, end - start)
        if count <= 0:
            return []
        items = list(self.headers_due(cursor))
        self._headers_taken(cursor)
        log = self.log
        for seq in range(start, start + count):
            buffer = log[seq]
            items.append(buffer)
            if buffer.pts is not None:
                if cursor.first_pts is None:
                    cursor.first_pts = buffer.pts
                cursor.last_pts = buffer.pts
        self._set_next(cursor, start + count)
        return items
