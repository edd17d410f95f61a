"""Lag, soft and hard limits, and soft-limit recovery (docs/semantics.rst).

A client's *waiting* buffers are the sequence numbers ``next .. end - 1`` of
the shared log; its lag is measured over them. Limits are exact: a client is
over a limit when its lag is strictly greater than the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._enums import Format, RecoverPolicy
from ._log import BufferLog

__all__ = ["Limits", "Recovery", "recover"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The four lag limits; a value <= 0 (-1 or 0) means "no limit"."""

    buffers_max: int = -1
    buffers_soft_max: int = -1
    unit_format: Format = Format.BUFFERS
    units_max: float = -1
    units_soft_max: float = -1

    @property
    def has_soft(self) -> bool:
        return self.buffers_soft_max > 0 or self.units_soft_max > 0

    @property
    def has_hard(self) -> bool:
        return self.buffers_max > 0 or self.units_max > 0

    def _over(self, log: BufferLog, start: int, end: int, buffers: int, units: float) -> bool:
        if buffers > 0 and end - start > buffers:
            return True
        return units > 0 and log.amount(self.unit_format, start, end) > units

    def over_soft(self, log: BufferLog, start: int, end: int) -> bool:
        """True when waiting buffers ``start .. end - 1`` are over a soft limit."""
        return self._over(log, start, end, self.buffers_soft_max, self.units_soft_max)

    def over_hard(self, log: BufferLog, start: int, end: int) -> bool:
        """True when waiting buffers ``start .. end - 1`` are over a hard limit."""
        return self._over(log, start, end, self.buffers_max, self.units_max)

    def near(self, log: BufferLog, start: int, end: int) -> bool:
        """True when waiting buffers ``start .. end - 1`` are over half of any limit."""
        for buffers, units in ((self.buffers_soft_max, self.units_soft_max),
                               (self.buffers_max, self.units_max)):
            if buffers > 0 and end - start > buffers / 2:
                return True
            if units > 0 and log.amount(self.unit_format, start, end) > units / 2:
                return True
        return False

    def _oldest_start_within(self, log: BufferLog, end: int, buffers: int,
                             units: float) -> int:
        start = log.low
        if buffers > 0:
            start = max(start, end - buffers)
        if units > 0:
            start = max(start, log.oldest_start_within(self.unit_format, units, end))
        return start

    def oldest_start_within_soft(self, log: BufferLog, end: int) -> int:
        """The oldest start whose lag is within every soft limit."""
        return self._oldest_start_within(log, end, self.buffers_soft_max, self.units_soft_max)

    def oldest_start_within_hard(self, log: BufferLog, end: int) -> int:
        """The oldest start whose lag is within every hard limit."""
        return self._oldest_start_within(log, end, self.buffers_max, self.units_max)


@dataclass(frozen=True, slots=True)
class Recovery:
    """Outcome of soft-limit recovery: the new position (``None`` = wait for
    the next keyframe that arrives) and how many buffers were skipped."""

    next: int | None
    dropped: int


def recover(
    log: BufferLog, limits: Limits, policy: RecoverPolicy, start: int, end: int
) -> Recovery | None:
    """Apply ``policy`` to a client whose waiting buffers are ``start .. end - 1``.

    Returns ``None`` when the client is within its soft limits or the policy
    is ``NONE``.
    """
    if policy == RecoverPolicy.NONE or not limits.over_soft(log, start, end):
        return None
    if policy == RecoverPolicy.RESYNC_LATEST:
        return Recovery(end - 1, end - 1 - start)
    if policy == RecoverPolicy.RESYNC_SOFT_LIMIT:
        new = max(start, limits.oldest_start_within_soft(log, end))
        return Recovery(new, new - start)
    keyframe = log.keyframe_at_or_before(end - 1, low=start)
    if keyframe is not None and not limits.over_soft(log, keyframe, end):
        return Recovery(keyframe, keyframe - start)
    return Recovery(None, end - start)
