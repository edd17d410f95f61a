"""Where a newly added client starts: the six sync methods (docs/semantics.rst).

Placement happens at add time, against the history as it is then. Each
function returns the sequence number of the client's first buffer, or
``None`` when the client has to wait for the next keyframe that arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._enums import Format, SyncMethod
from ._log import BufferLog

__all__ = ["Burst", "place"]

_MEASURED = (Format.BYTES, Format.TIME, Format.BUFFERS)


@dataclass(frozen=True, slots=True)
class Burst:
    """A burst minimum and maximum, each a (format, value); -1 or an
    unmeasured format means "not set"."""

    min_format: Format = Format.UNDEFINED
    min_value: float = -1
    max_format: Format = Format.UNDEFINED
    max_value: float = -1

    @property
    def has_min(self) -> bool:
        return self.min_format in _MEASURED and self.min_value > 0

    @property
    def has_max(self) -> bool:
        return self.max_format in _MEASURED and self.max_value >= 0


def burst_start(log: BufferLog, burst: Burst) -> int:
    """The start of a plain BURST: reaches the minimum, never over the maximum.

    Returns ``log.next`` (nothing from history) when the history is empty or
    the newest buffer alone is over the maximum.
    """
    end = log.next
    if end <= log.low:
        return end
    start = end - 1
    if burst.has_min:
        start = log.newest_start_reaching(burst.min_format, burst.min_value, end)
    if burst.has_max:
        start = max(start, log.oldest_start_within(burst.max_format, burst.max_value, end))
    return start


def _within_max(log: BufferLog, burst: Burst, start: int) -> bool:
    if not burst.has_max:
        return True
    return log.amount(burst.max_format, start, log.next) <= burst.max_value


def _keyframe_before(log: BufferLog, burst: Burst, start: int) -> int | None:
    """The newest keyframe at or before the burst start, if it keeps within the max."""
    keyframe = log.keyframe_at_or_before(min(start, log.next - 1))
    if keyframe is not None and _within_max(log, burst, keyframe):
        return keyframe
    return None


def place(log: BufferLog, method: SyncMethod, burst: Burst) -> int | None:
    """The first sequence number for a client added now with ``method``."""
    if method == SyncMethod.LATEST:
        return log.next
    if method == SyncMethod.NEXT_KEYFRAME:
        return None
    if method == SyncMethod.LATEST_KEYFRAME:
        return log.keyframe_at_or_before(log.next - 1)
    start = burst_start(log, burst)
    if method == SyncMethod.BURST:
        return start
    keyframe = _keyframe_before(log, burst, start)
    if keyframe is not None:
        return keyframe
    if method == SyncMethod.BURST_KEYFRAME:
        return log.keyframe_at_or_after(start)
    return start  # BURST_WITH_KEYFRAME: plain burst
