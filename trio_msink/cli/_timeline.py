"""One timeline for the Sink across everything the input's clock does.

A server left running meets timestamps that do not simply grow: B-frames
step back a little, a new upstream (a reconnect, a new publisher, another
origin) starts a clock anywhere, a file may jump. The Sink paces by PTS
against a base fixed by its first buffer (docs/semantics.rst, "Sync
pacing") and measures time-based limits and retention by PTS spans, so it
must see a timestamp that never goes backwards and never jumps by hours.
:class:`Timeline` gives it one. Pure: no trio, the time is passed in.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from .. import Buffer

__all__ = ["MAX_GAP", "MAX_REORDER", "Timeline"]

# A step back of at most this many seconds is reordering, not a new clock:
# presentation order with B-frames runs behind the stream order by at most
# the decoder's reorder depth, 16 pictures in H.264/HEVC (0.67 s at 24 fps,
# 1.6 s at 10 fps). Decode timestamps (what MPEG-TS buffers carry, see
# docs/framing.md) never step back in an ordinary stream.
MAX_REORDER = 2.0
# A step forward of more than this many seconds is a new clock, not a gap:
# MPEG-TS must carry a PTS at least every 0.7 s, and an
# elementary stream paced by a frame rate steps by one picture. A stream
# that really pauses this long is paced from where it resumes.
MAX_GAP = 10.0


class _State(enum.Enum):
    START = "no timestamp seen yet"
    RUNNING = "on the current clock"
    DISCONTINUITY = "the next timestamp starts a new clock"


class Timeline:
    """Restamps buffers onto one timeline that never goes backwards.

    :meth:`stamp` returns each buffer with ``pts`` moved by the offset of
    the current *segment* (a run of buffers on one input clock); the first
    buffer keeps its own ``pts``. A buffer without ``pts`` passes unchanged.
    Within a segment, a timestamp below the highest one so far by at most
    ``max_reorder`` seconds (reordering) is raised to the last timestamp
    handed out, so the output never decreases.

    A new segment starts after :meth:`discontinuity`, or when the input
    steps back by more than ``max_reorder`` seconds or forward by more than
    ``max_gap``. Its first buffer gets the timestamp that a Sink pacing
    with ``sync=True`` finds due at ``now`` (the Sink's base is ``now -
    pts`` of the first buffer, which this class sees too), so that pacing
    neither waits for the distance between the two clocks nor releases a
    burst to catch up: the following buffers are paced by their own
    spacing. If the output is ahead of ``now`` (a producer running ahead
    of the clock, as with ``sync=False``) it continues from the last
    timestamp instead. A PTS span across a discontinuity therefore counts
    the wall-clock time of the gap: never negative, never the distance
    between unrelated clocks, so time-based limits and retention keep
    their meaning.

    ``now`` is the caller's clock (``trio.current_time()`` for a Sink) at
    the moment the buffer is handed to the Sink.

    Raises :exc:`ValueError` if ``max_reorder`` or ``max_gap`` is not a
    positive finite number (:exc:`TypeError` if not a number).
    """

    def __init__(self, *, max_reorder: float = MAX_REORDER, max_gap: float = MAX_GAP) -> None:
        self._max_reorder = _check_seconds("max_reorder", max_reorder)
        self._max_gap = _check_seconds("max_gap", max_gap)
        self._state = _State.START
        self._base = 0.0  # the Sink's base: now - output pts of the first buffer
        self._offset = 0.0  # output pts - input pts in the current segment
        self._high = 0.0  # highest input pts of the current segment
        self._last = 0.0  # the last output pts (the highest)
        self._segments = 0

    @property
    def segments(self) -> int:
        """How many segments (input clocks) have been seen: 0 before the first
        timestamp, then one more at each discontinuity."""
        return self._segments

    @property
    def last_pts(self) -> float | None:
        """The last timestamp handed out, or None before the first one."""
        return None if self._state is _State.START else self._last

    def discontinuity(self) -> None:
        """Say that the next buffer with a timestamp starts a new clock (a new
        upstream connection, publisher or origin)."""
        if self._state is _State.RUNNING:
            self._state = _State.DISCONTINUITY

    def stamp(self, buffer: Buffer, now: float) -> Buffer:
        """``buffer`` with its ``pts`` on the timeline (the same payload and
        flags, not copied); a buffer without ``pts`` is returned as is.

        ``now`` is the current time in seconds on the clock the Sink paces
        by. Raises :exc:`TypeError` for a buffer that is not a
        :class:`~trio_msink.Buffer` or a ``now`` that is not a number, and
        :exc:`ValueError` for a ``now`` that is not finite.
        """
        if not isinstance(buffer, Buffer):
            raise TypeError(f"buffer must be a Buffer, not {type(buffer).__name__}")
        now = _check_now(now)
        ts = buffer.pts
        if ts is None:
            return buffer
        if self._state is _State.START:
            self._state = _State.RUNNING
            self._base = now - ts
            self._offset, self._high, self._last = 0.0, ts, ts
            self._segments = 1
            return buffer
        step = ts - self._high
        if self._state is _State.DISCONTINUITY or step > self._max_gap or step < -self._max_reorder:
            self._state = _State.RUNNING
            out = max(self._last, now - self._base)
            self._offset, self._high = out - ts, ts
            self._segments += 1
        else:
            out = max(self._last, ts + self._offset)
            self._high = max(self._high, ts)
        self._last = out
        return buffer if out == ts else dataclasses.replace(buffer, pts=out)


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds, not {value!r}")
    return float(value)


def _check_now(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"now must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"now must be finite, not {value!r}")
    return float(value)
