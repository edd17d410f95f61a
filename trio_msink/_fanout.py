"""The shared history as the Trio shell holds it, and the wake-up of writers.

:class:`Fanout` owns the :class:`~trio_msink._history.History` (the pure
core) and one :class:`trio.Event` per round of arrivals: ``send_nowait``
pushes a buffer into the history, which applies every client's limits at
once, and wakes the writer tasks that wait for data. Each client is a
:class:`~trio_msink._history.Cursor` into the same history (buffers are
shared, never copied), bounded by the sink's limits rather than by a fixed
count, which a ``trio.open_memory_channel`` per client could not do (it can
neither skip to a keyframe nor count bytes or seconds).
"""

from __future__ import annotations

import trio

from ._buffer import Buffer
from ._history import Cursor, CursorState, History, PushResult

__all__ = ["Fanout"]


class Fanout:
    """The shared history and the wake-up for writers that are caught up."""

    def __init__(self) -> None:
        self.history = History()
        self._arrived = trio.Event()

    def send_nowait(self, buffer: Buffer) -> PushResult:
        """Queue ``buffer`` for every client; never blocks."""
        result = self.history.push(buffer)
        if result.queued:
            self.wake()
        return result

    def wake(self) -> None:
        """Wake every writer waiting in :meth:`wait`."""
        self._arrived.set()
        self._arrived = trio.Event()

    async def wait(self, cursor: Cursor) -> None:
        """Wait until something is waiting for ``cursor`` or its remove-flush
        has started.

        Always a checkpoint. Cancellation is the only way out for a removed
        cursor (it waits until cancelled); cancelling a wait loses nothing,
        since nothing is taken.
        """
        history = self.history
        if cursor.state is CursorState.REMOVED:
            await trio.sleep_forever()
        if history.has_waiting(cursor) or cursor.state is CursorState.FLUSHING:
            await trio.lowlevel.checkpoint()
            return
        while cursor.state in (CursorState.PLACED, CursorState.WAITING_FOR_KEYFRAME) \
                and not history.has_waiting(cursor):
            await self._arrived.wait()

    def start_flush(self, cursor: Cursor) -> None:
        """Queue nothing more for ``cursor`` than what is waiting now, and wake
        its writer so that it finishes that and then removes the client."""
        self.history.start_flush(cursor)
        self.wake()
