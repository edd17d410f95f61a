"""A bounded channel per client over the shared history.

:class:`Fanout` is the sending side shared by all clients: ``send_nowait``
appends one buffer to the :class:`~trio_msink._history.History` and applies
every client's soft and hard limits at once. Each client gets a
:class:`ClientChannel`, its receiving side: a cursor into the same history
(buffers are shared, never copied) whose bound is the sink's limits rather
than a fixed count, which a plain ``trio.open_memory_channel`` cannot do (it
can neither skip to a keyframe nor count bytes or seconds).
"""

from __future__ import annotations

import trio

from ._buffer import Buffer
from ._enums import Format, SyncMethod
from ._history import Cursor, History, PushResult
from ._placement import Burst

__all__ = ["ClientChannel", "Fanout"]


class Fanout:
    """The shared history and the wake-up for writers that are caught up."""

    def __init__(self) -> None:
        self.history = History()
        self._arrived = trio.Event()

    def send_nowait(self, buffer: Buffer) -> PushResult:
        """Queue ``buffer`` for every channel; never blocks."""
        result = self.history.push(buffer)
        if result.queued:
            self.wake()
        return result

    def wake(self) -> None:
        """Wake every channel waiting in :meth:`ClientChannel.wait`."""
        self._arrived.set()
        self._arrived = trio.Event()

    def open_channel(self, handle: object, method: SyncMethod, burst: Burst) -> ClientChannel:
        """A channel placed by ``method`` against the history now."""
        return ClientChannel(self, self.history.add(handle, method, burst))


class ClientChannel:
    """One client's view of the stream: what is waiting, and taking it."""

    def __init__(self, fanout: Fanout, cursor: Cursor) -> None:
        self._fanout = fanout
        self.cursor = cursor

    @property
    def history(self) -> History:
        return self._fanout.history

    def peek(self, max_buffers: int) -> tuple[tuple[Buffer, ...], list[Buffer]]:
        """Headers due and up to ``max_buffers`` waiting data buffers, not taken."""
        return self.history.peek(self.cursor, max_buffers)

    def take(self, count: int) -> list[Buffer]:
        """Hand over ``count`` data buffers (headers due come first)."""
        return self.history.take(self.cursor, count)

    def has_waiting(self) -> bool:
        start, end = self.history.waiting(self.cursor)
        return start < end

    def lag(self, fmt: Format = Format.BUFFERS) -> float:
        return self.history.lag(self.cursor, fmt)

    def flushing(self) -> bool:
        return self.cursor.flush_end is not None

    def flushed(self) -> bool:
        return self.history.flushed(self.cursor)

    def start_flush(self) -> None:
        self.history.start_flush(self.cursor)
        self._fanout.wake()

    async def wait(self) -> None:
        """Wait until something is waiting (or a flush starts). Always a
        checkpoint; on a closed channel it waits until cancelled."""
        if not self.cursor.active:
            await trio.sleep_forever()
        if self.has_waiting() or self.flushing():
            await trio.lowlevel.checkpoint()
            return
        while self.cursor.active and not self.has_waiting() and not self.flushing():
            await self._fanout._arrived.wait()

    def close(self) -> None:
        """Detach from the history; nothing more is queued for this channel."""
        self.history.remove(self.cursor)
