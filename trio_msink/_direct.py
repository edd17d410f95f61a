"""The direct-write path: ``send`` writes to socket clients that keep up.

A socket client's writer task that has nothing left to write *parks*: it
hands the client to the :class:`DirectWriter` and sleeps. From then on new
buffers reach that client without waking its task: the direct writer batches
what the producer sends in a burst and writes it with one non-blocking
``writev`` per client (clients at the same position share one list of
segments). A client whose socket takes everything stays parked; in any other
case (a partial write, headers due, a remove-flush, a backlog larger than one
call) the direct writer *unparks* it and its writer task carries on.

When the batch is written:

* once the producer pauses: the :meth:`DirectWriter.run` task waits while
  each pass of the scheduler brings new buffers, then writes them all;
  a paced producer gets each buffer written as soon as it yields;
* at once, from ``send``, when the batch reaches its size caps or half of a
  limit (so batching alone never pushes a keeping-up client over a limit).

So a producer that sends a burst costs one system call per client, not one
per buffer per client.

A :class:`~trio_msink._framed.FramedSocketStream` client (a WebSocket
viewer) is written the same way: its segments are the buffers' behind their
framing's headers, made once per batch and shared by the clients of that
framing at the same position.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import trio

from ._client import Client
from ._framed import FramedSocketStream, Framing, original
from ._history import History

__all__ = ["IOV_MAX", "MAX_BYTES_PER_WRITE", "DirectWriter"]

# Linux caps one writev at IOV_MAX (1024) segments; 4 MiB per call keeps
# a burst to one client from monopolising the loop (a 100 MB history would
# otherwise be offered in one call).
IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
MAX_BYTES_PER_WRITE = 4 * 1024 * 1024

# A batch is written at once, without waiting for the producer to pause,
# when it reaches either size: 64 buffers or 256 KiB keep one writev well
# under IOV_MAX and the socket buffer (Linux's default tcp_wmem is 16 KiB to
# 4 MiB; GStreamer's queue2 defaults to 100 buffers).
_BATCH_BUFFERS = 64
_BATCH_BYTES = 256 * 1024


class DirectWriter:
    """The parked socket clients of one sink, and the batch written to them."""

    def __init__(self, history: History, dispatching: Callable[[], bool]) -> None:
        self._history = history
        #: Whether each buffer written is to be reported (``on_dispatched``).
        self._dispatching = dispatching
        # The parked clients (in parking order) and the task of each (woken
        # directly: an Event per parked client would be a set per viewer).
        self._parked: dict[Client, trio.lowlevel.Task] = {}
        self._written_to = 0  # parked clients have been written up to here
        self._batch_started = trio.Event()

    # -- parking -------------------------------------------------------------
    async def park(self, client: Client) -> None:
        """Hand ``client`` (caught up, nothing in flight) to the direct writer
        until it needs its writer task again; returns then (or raises
        Cancelled, unparked, when the client's task is cancelled)."""
        task = self._parked[client] = trio.lowlevel.current_task()
        parked = self._parked

        def abort(_: object) -> trio.lowlevel.Abort:
            if parked.get(client) is task:
                del parked[client]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        client.became_busy()

    def unpark(self, client: Client) -> None:
        """Wake ``client``'s writer task; nothing if it is not parked."""
        task = self._parked.pop(client, None)
        if task is not None:
            trio.lowlevel.reschedule(task)

    # -- batching ------------------------------------------------------------
    def on_buffer_queued(self) -> None:
        """A buffer was queued: write the batch now if it is full, else let
        :meth:`run` write it once the producer pauses."""
        if not self._parked:
            return
        if self._history.batch_full(self._written_to, _BATCH_BUFFERS, _BATCH_BYTES):
            self.write_batch()
        else:
            self._batch_started.set()

    async def run(self) -> None:
        """The task that writes the batch once the producer pauses."""
        history = self._history
        while True:
            await self._batch_started.wait()
            self._batch_started = trio.Event()
            # Trio may run this task before or after the producer within one
            # pass of the scheduler, so only two passes in a row without a
            # new buffer show that the producer has really paused.
            seen, quiet = -1, 0
            while quiet < 2 and history.end > self._written_to:
                quiet = quiet + 1 if history.end == seen else 0
                seen = history.end
                await trio.lowlevel.checkpoint()
            if history.end > self._written_to:
                self.write_batch()

    def write_batch(self) -> None:
        """Write what arrived since the last batch to every parked client."""
        history = self._history
        end = self._written_to = history.end
        dispatching = self._dispatching()
        shared: dict[tuple[int, Framing | None], tuple[list[memoryview], int, bool]] = {}
        for client in list(self._parked):
            cursor = client.cursor
            stream = client.stream
            framing = stream.framing if isinstance(stream, FramedSocketStream) else None
            if not history.writable_directly(cursor):
                if history.has_waiting(cursor):
                    self.unpark(client)
                continue
            start, _ = history.waiting(cursor)
            if start >= end:
                continue
            found = shared.get((start, framing))
            if found is None:
                if framing is None:
                    found = history.segments(start, end, IOV_MAX, MAX_BYTES_PER_WRITE)
                else:
                    found = framing.segments(history.buffers(start, end), IOV_MAX,
                                             MAX_BYTES_PER_WRITE)
                shared[(start, framing)] = found
            segments, total, complete = found
            if not complete:
                self.unpark(client)
                continue
            try:
                written = os.writev(client.fd, segments) if segments else 0
            except BlockingIOError:
                written = 0
            except OSError:
                self.unpark(client)  # the writer meets the error again and reports it
                continue
            if written:
                client.progressed(written)
            if written == total:
                if dispatching:
                    for item in history.take(cursor, end - start):
                        client.dispatched(item)
                else:
                    history.advance(cursor, end)
                continue
            items = history.buffers(start, end)
            if framing is not None:
                items = [framing.framed(item) for item in items]
            booking = client.inflight.book((), items, written)
            history.take(cursor, booking.taken)
            for item in booking.completed:
                client.dispatched(original(item))
            client.writing = bool(client.inflight)
            self.unpark(client)

