"""A served client: its stream, channel, status, stats and tasks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._buffer import Buffer
from ._channel import ClientChannel
from ._enums import ClientStatus, Format
from ._stats import ClientStats
from ._writer import InFlight

if TYPE_CHECKING:
    from ._sink import Sink

__all__ = ["Client"]


class Client:
    """The sink's record of one client (not public: users see the stream)."""

    def __init__(self, sink: Sink, stream: trio.abc.SendStream, channel: ClientChannel) -> None:
        self.sink = sink
        self.stream = stream
        self.channel = channel
        self.status = ClientStatus.OK
        #: Cancels the client's writer and reader at once (``remove``).
        self.scope = trio.CancelScope()
        self.removed = False
        #: True while a buffer is handed to the stream and not completely written.
        self.writing = False
        #: Socket clients: segments handed to the socket, not written yet.
        self.inflight = InFlight()
        #: The socket's fd, for writes straight from ``send`` while parked.
        self.fd = -1
        self.parked = False
        self._wakeup = trio.Event()
        #: Set once the client is unregistered (after on_client_socket_removed).
        self.gone = trio.Event()
        #: Set once the client's tasks have ended.
        self.finished = trio.Event()
        self.bytes_sent = 0
        self.connect_time = time.time()
        self.connect_clock = trio.current_time()
        self.disconnect_time = 0.0
        self.disconnect_clock: float | None = None
        self.last_activity_time = self.connect_time
        # Start of the current stretch without write progress (trio clock).
        self._progress_clock = self.connect_clock

    # -- Progress protocol (used by the writers) ---------------------------
    def progressed(self, nbytes: int) -> None:
        self.bytes_sent += nbytes
        self.sink._bytes_served += nbytes
        self.last_activity_time = time.time()
        self._progress_clock = trio.current_time()

    def dispatched(self, buffer: Buffer) -> None:
        callback = self.sink.on_dispatched
        if callback is not None and self.sink.send_dispatched:
            self.call(callback, self.stream, buffer)

    def stall_deadline(self) -> float:
        timeout = self.sink.timeout
        if timeout <= 0:
            return math.inf
        return self._progress_clock + timeout

    def stalled(self) -> None:
        self.sink._remove_client(self, ClientStatus.SLOW)

    def flushed(self) -> None:
        self.sink._remove_client(self, ClientStatus.REMOVED)

    async def park(self) -> None:
        """Caught up: let the sink write to the socket directly until it
        needs this task again (a partial write, new headers, a flush)."""
        self._wakeup = trio.Event()
        self.parked = True
        self.sink._parked[self] = None
        try:
            await self._wakeup.wait()
        finally:
            self.unpark()
        self.became_busy()

    def unpark(self) -> None:
        if self.parked:
            self.parked = False
            del self.sink._parked[self]
            self._wakeup.set()

    def became_busy(self) -> None:
        """Data is waiting again after an idle stretch: the stall clock restarts."""
        self._progress_clock = trio.current_time()

    # -- callbacks ---------------------------------------------------------
    def call(self, callback: Callable[..., object], *args: object) -> None:
        """Run a user callback about this client; if it raises, the client is
        removed with ERROR (the exception never reaches the sink's caller)."""
        try:
            callback(*args)
        except Exception:
            self.sink._log_callback_error(callback)
            self.sink._remove_client(self, ClientStatus.ERROR)

    # -- stats -------------------------------------------------------------
    def stats(self) -> ClientStats:
        cursor = self.channel.cursor
        end = self.disconnect_clock if self.disconnect_clock is not None else trio.current_time()
        status = self.status
        if status == ClientStatus.OK and self.channel.flushing():
            status = ClientStatus.FLUSHING
        live = not self.removed
        return ClientStats(
            bytes_sent=self.bytes_sent,
            connect_time=self.connect_time,
            disconnect_time=self.disconnect_time,
            connect_duration=max(0.0, end - self.connect_clock),
            last_activity_time=self.last_activity_time,
            buffers_dropped=cursor.buffers_dropped,
            first_buffer_ts=cursor.first_pts,
            last_buffer_ts=cursor.last_pts,
            status=status,
            lag_buffers=int(self.channel.lag()) if live else 0,
            lag_bytes=int(self.channel.lag(Format.BYTES)) if live else 0,
        )
