"""A served client: its stream, cursor, status, stats and cancel scope.

A :class:`Client` knows its sink only through :class:`ClientHost`, the few
things a client's tasks ask of the sink that serves it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import trio

from ._buffer import Buffer
from ._enums import ClientStatus, Format
from ._history import Cursor, CursorState, History
from ._inflight import InFlight
from ._stats import ClientStats

__all__ = ["Client", "ClientHost", "Flag"]


class ClientHost(Protocol):
    """What a client needs from its sink (the :class:`~trio_msink.Sink`)."""

    @property
    def timeout(self) -> float: ...

    def _dispatch_callback(self) -> Callable[[trio.abc.SendStream, Buffer], object] | None:
        """``on_dispatched`` when ``send_dispatched`` is on, else ``None``."""

    def _message_callback(self) -> Callable[[trio.abc.SendStream, bytes], object] | None:
        """``on_message`` when ``send_messages`` is on, else ``None``."""

    def _client_wrote(self, nbytes: int) -> None:
        """Count ``nbytes`` written to a client in ``bytes_served``."""

    def _remove_client(self, client: Client, status: ClientStatus) -> None:
        """Remove ``client`` with ``status`` (callbacks, unregistering)."""

    def _log_callback_error(self, callback: Callable[..., object]) -> None:
        """Log that a user callback raised."""


class Flag:
    """A one-shot event, like :class:`trio.Event` at a fraction of its size.

    A served client holds two and a parked writer one; ``trio.Event`` keeps a
    set per instance (200-odd bytes) even when nobody waits, which at ten
    thousand clients is a visible part of what a client costs.
    """

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[trio.lowlevel.Task] | None = None

    def set(self) -> None:
        """Set the flag and wake every task waiting for it."""
        if self._is_set:
            return
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for task in waiters or ():
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Wait until the flag is set (a checkpoint either way)."""
        if self._is_set:
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._waiters is not None and task in self._waiters:
                self._waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class Client:
    """The sink's record of one client (not public: users see the stream)."""

    # Slots: a connected client costs what its fields need, no dict.
    __slots__ = ("_progress_clock", "bytes_sent", "connect_clock", "connect_time", "cursor",
                 "disconnect_clock", "disconnect_time", "fd", "finished", "gone", "history",
                 "host", "inflight", "last_activity_time", "own_reader", "removed", "scope",
                 "status", "stream", "wait_scope", "writing")

    def __init__(self, host: ClientHost, stream: trio.abc.SendStream, history: History,
                 cursor: Cursor) -> None:
        self.host = host
        self.stream = stream
        self.history = history
        self.cursor = cursor
        self.status = ClientStatus.OK
        #: Cancels the client's writer and reader at once (``remove``); a
        #: plain socket client's task has none (see ``wait_scope``).
        self.scope: trio.CancelScope | None = None
        #: The wait for a writable socket, cancelled by ``remove`` too.
        self.wait_scope: trio.CancelScope | None = None
        self.removed = False
        #: True while a buffer is handed to the stream and not completely written.
        self.writing = False
        #: Socket clients: segments handed to the socket, not written yet.
        self.inflight = InFlight()
        #: The socket's fd, for the direct-write path and the read group; -1
        #: for other streams.
        self.fd = -1
        #: Whether the client's task also runs a reader (a readable stream
        #: that the sink's read group does not read).
        self.own_reader = False
        #: Set once the client is unregistered (after on_client_socket_removed).
        self.gone = Flag()
        #: Set once the client's tasks have ended.
        self.finished = Flag()
        self.bytes_sent = 0
        self.connect_time = time.time()
        self.connect_clock = trio.current_time()
        self.disconnect_time = 0.0
        self.disconnect_clock: float | None = None
        self.last_activity_time = self.connect_time
        # Start of the current stretch without write progress (trio clock).
        self._progress_clock = self.connect_clock

    # -- what the writers report -------------------------------------------
    def progressed(self, nbytes: int) -> None:
        """``nbytes`` more were written to the stream."""
        self.bytes_sent += nbytes
        self.host._client_wrote(nbytes)
        self.last_activity_time = time.time()
        self._progress_clock = trio.current_time()

    def dispatched(self, buffer: Buffer) -> None:
        """``buffer`` was completely written (``on_dispatched``)."""
        callback = self.host._dispatch_callback()
        if callback is not None:
            self.call(callback, self.stream, buffer)

    def became_busy(self) -> None:
        """Data is waiting again after an idle stretch: the stall clock restarts."""
        self._progress_clock = trio.current_time()

    def stall_deadline(self) -> float:
        """When the client is removed ``SLOW`` if it makes no progress (trio time)."""
        timeout = self.host.timeout
        if timeout <= 0:
            return math.inf
        return self._progress_clock + timeout

    def remove_slow(self) -> None:
        """Remove the client ``SLOW``: no write progress for ``timeout`` seconds."""
        self.host._remove_client(self, ClientStatus.SLOW)

    def remove_flushed(self) -> None:
        """Remove the client ``REMOVED``: its remove-flush wrote everything."""
        self.host._remove_client(self, ClientStatus.REMOVED)

    def remove(self, status: ClientStatus) -> None:
        """Remove the client with ``status`` (its stream closed or failed)."""
        self.host._remove_client(self, status)

    def cancel(self) -> None:
        """Stop the client's task (it has been removed): cancel what it waits in."""
        for scope in (self.scope, self.wait_scope):
            if scope is not None:
                scope.cancel()

    def received(self, data: bytes) -> None:
        """``data`` was read from the client (``on_message``)."""
        callback = self.host._message_callback()
        if callback is not None:
            self.call(callback, self.stream, data)

    # -- callbacks ---------------------------------------------------------
    def call(self, callback: Callable[..., object], *args: object) -> None:
        """Run a user callback about this client; if it raises, the client is
        removed with ERROR (the exception never reaches the sink's caller)."""
        try:
            callback(*args)
        except Exception:
            self.host._log_callback_error(callback)
            self.host._remove_client(self, ClientStatus.ERROR)

    # -- stats -------------------------------------------------------------
    def stats(self) -> ClientStats:
        cursor = self.cursor
        end = self.disconnect_clock if self.disconnect_clock is not None else trio.current_time()
        status = self.status
        if status == ClientStatus.OK and cursor.state is CursorState.FLUSHING:
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
            lag_buffers=int(self.history.lag(cursor)) if live else 0,
            lag_bytes=int(self.history.lag(cursor, Format.BYTES)) if live else 0,
        )
