"""Sync pacing: the clock task that releases buffers at their PTS.

With ``sync`` on, the first buffer with a PTS fixes the base (``base =
now - pts``) and is released at once; every later buffer with a PTS is
released no earlier than ``base + pts``. Late buffers go at once, never
dropped; buffers without a PTS are never delayed, but keep their place
behind buffers still waiting. The clock task does the waiting so that
senders queue buffers in order even when several tasks send.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from ._buffer import Buffer

__all__ = ["Clock", "PacingBase"]


class PacingBase:
    """The base of PTS pacing: when a buffer with a PTS is due.

    The first PTS seen fixes the base (``base = now - pts``) and is due at
    once; every later PTS is due at ``base + pts``. Plain arithmetic, the
    time passed in, so that anything that paces a stream (the sink's clock
    task, the command's relay to its worker processes) shares the rule.
    """

    __slots__ = ("_base",)

    def __init__(self) -> None:
        self._base: float | None = None

    def due(self, pts: float | None, now: float) -> float | None:
        """When a buffer with ``pts`` is due (on the clock ``now`` is read
        from), or ``None`` when it is due now: no PTS, the first PTS, or
        late."""
        if pts is None:
            return None
        if self._base is None:
            self._base = now - pts
            return None
        target = self._base + pts
        return target if target > now else None


class _Paced:
    """A buffer waiting in the clock task for its delivery time."""

    __slots__ = ("buffer", "done", "target", "withdrawn")

    def __init__(self, buffer: Buffer, target: float) -> None:
        self.buffer = buffer
        self.target = target
        self.done = trio.Event()
        self.withdrawn = False


class Clock:
    """Paces buffers by PTS against the Trio clock, then hands them to ``release``."""

    def __init__(self, release: Callable[[Buffer], None]) -> None:
        self._release = release
        self._pacing = PacingBase()
        self._send, self._receive = trio.open_memory_channel[_Paced](math.inf)
        self._pending = 0
        self.closed = False

    def target(self, buffer: Buffer) -> float | None:
        """When ``buffer`` is due (trio time), or None for "now"."""
        if buffer.pts is None:
            return None
        return self._pacing.due(buffer.pts, trio.current_time())

    async def send(self, buffer: Buffer, *, sync: bool) -> None:
        """Release ``buffer`` when it is due; returns once it is released.

        Raises :exc:`trio.ClosedResourceError` if the clock is closed before
        the buffer is due (the buffer is then not released); if cancelled
        while waiting, the buffer is not released either.
        """
        target = self.target(buffer) if sync else None
        if target is None and not self._pending:
            self._release(buffer)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        paced = _Paced(buffer, -math.inf if target is None else target)
        self._pending += 1
        self._send.send_nowait(paced)
        try:
            await paced.done.wait()
        except BaseException:
            paced.withdrawn = True
            raise
        if paced.withdrawn:
            raise trio.ClosedResourceError("the sink was closed before the buffer was due")

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The clock task: sleep until each waiting buffer is due, release it."""
        task_status.started()
        async for paced in self._receive:
            try:
                await trio.sleep_until(paced.target)
            finally:
                self._pending -= 1
                if self.closed:
                    paced.withdrawn = True
                elif not paced.withdrawn:
                    self._release(paced.buffer)
                paced.done.set()

    def close(self) -> None:
        """Release nothing more; senders still waiting get ClosedResourceError."""
        self.closed = True
        self._send.close()
        while True:
            try:
                paced = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            paced.withdrawn = True
            paced.done.set()
