"""The Trio shell: :class:`Sink` owns a nursery and serves every client in it.

Each client has one writer: in the task that called :meth:`Sink.serve`, or
in a task of the sink's nursery for :meth:`Sink.add`. Plain sockets are read
(``handle_read``) by the sink's one :class:`~trio_msink._readers.ReadGroup`
task, other readable streams by a reader task beside their writer.
``remove`` stops the writer at once (it cancels what the writer waits in);
``remove_flush`` marks the client's cursor so the writer finishes what was
queued and then removes the client itself. A clock task paces delivery by
PTS when ``sync`` is on. Every rule about which buffer goes where is decided
by the pure core (:mod:`trio_msink._history`); this module only runs tasks.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TypeGuard

import trio

from ._buffer import Buffer, as_buffer
from ._client import Client
from ._clock import Clock
from ._direct import DirectWriter
from ._enums import ClientStatus, Format, SyncMethod
from ._fanout import Fanout
from ._history import CursorState
from ._limits import Limits
from ._placement import Burst
from ._properties import SinkProperties, check_burst, check_sync
from ._readers import GROUPED, ReadGroup
from ._sockopts import apply_dscp
from ._stats import ClientStats, SinkStatistics
from ._tasks import run_client

__all__ = ["Sink"]

logger = logging.getLogger("trio_msink")


def _plain_socket(stream: object) -> TypeGuard[trio.SocketStream]:
    """Whether ``stream`` is a ``trio.SocketStream`` on a TCP-like socket
    (one the read group and ``writev`` can use directly)."""
    return type(stream) is trio.SocketStream and stream.socket.type == socket.SOCK_STREAM


class Sink(SinkProperties):
    """Fan one stream of buffers out to many ``trio.abc.SendStream`` clients.

    Use it as ``async with Sink(**properties) as sink:``. Every property is
    keyword-only, readable and assignable as an attribute at any time; an
    assignment is validated like the constructor argument and a refused value
    (:exc:`~trio_msink.PropertyTypeError`, a :exc:`TypeError`, for a wrong
    type; :exc:`~trio_msink.PropertyValueError`, a :exc:`ValueError`, for a
    wrong value; both carry the property's ``name``) changes nothing. The
    properties are declared once, in :meth:`properties` and :meth:`callbacks`.
    Times are seconds; -1 means "unset" and, for the four
    ``*_max``/``*_soft_max`` limits, 0 also means "no limit".

    The sink never closes a stream it was given: after
    ``on_client_socket_removed(stream)`` (or after :meth:`serve` returns) the
    stream is the caller's again.
    """

    def __post_init__(self) -> None:
        self._fanout = Fanout()
        self._clients: dict[trio.abc.SendStream, Client] = {}
        # Socket clients that keep up are written from send, without waking
        # a task per client per buffer.
        self._direct = DirectWriter(self._fanout.history,
                                    lambda: self._dispatch_callback() is not None)
        # With handle_read, every plain socket is read by one task.
        self._readers = ReadGroup()
        self._bytes_served = 0
        self._nursery: trio.Nursery | None = None
        self._lifetime: AbstractAsyncContextManager[None] | None = None
        self._closed = False
        self._started = False
        self._exited = False
        self._clock = Clock(self._queue)
        self._apply_values()

    # -- properties ------------------------------------------------------------
    def _values_changed(self, changes: dict[str, object]) -> None:
        self._apply_values()
        if "qos_dscp" in changes:
            for client in self._clients.values():
                apply_dscp(client.stream, self.qos_dscp)
        if "timeout" in changes:
            self._fanout.wake()

    def _default_burst(self) -> Burst:
        """The burst of :meth:`add`: ``burst_format``/``burst_value``, no maximum."""
        return Burst(self.burst_format, self.burst_value, Format.UNDEFINED, -1)

    def _apply_values(self) -> None:
        history = self._fanout.history
        history.limits = Limits(
            self.buffers_max, self.buffers_soft_max, self.unit_format,
            self.units_max, self.units_soft_max,
        )
        history.recover_policy = self.recover_policy
        history.sync_method = self.sync_method
        history.default_burst = self._default_burst()
        history.bytes_min = self.bytes_min
        history.time_min = self.time_min
        history.buffers_min = self.buffers_min
        history.resend_streamheader = self.resend_streamheader

    # -- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> Sink:
        if self._started:
            raise RuntimeError("a Sink can be entered only once")
        self._started = True
        self._lifetime = self._run()
        await self._lifetime.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._exited:
            return None
        self._exited = True
        assert self._lifetime is not None
        return await self._lifetime.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        """The nursery's lifetime. The body's exception is held while the
        nursery closes and re-raised after, so it reaches the caller as it
        was raised (not inside an ExceptionGroup)."""
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._clock.run)
                nursery.start_soon(self._direct.run)
                nursery.start_soon(self._readers.run)
                try:
                    yield
                    await self._drain()
                except BaseException as exc:
                    failure = exc
                finally:
                    self._stop()
                    nursery.cancel_scope.cancel()
        finally:
            self._readers.close()
        if failure is not None:
            raise failure

    async def _drain(self) -> None:
        """Refuse new work, let clients drain for ``linger`` seconds, stop."""
        if self._closed:
            self._stop()
            return
        self._closed = True
        try:
            await self._linger()
        finally:
            self._stop()

    def _stop(self) -> None:
        """Remove every client now and release senders waiting in the clock."""
        self._closed = True
        self.clear()
        self._clock.close()

    async def aclose(self) -> None:
        """Close the sink as leaving the ``async with`` block normally does:
        clients get up to ``linger`` seconds to receive what is queued, then
        the rest are removed. Leaving the block afterwards does nothing more.

        Unlike leaving the block, ``aclose`` may be called from inside nested
        nurseries (say, one that runs ``trio.serve_tcp`` handlers, which then
        see their clients removed and return)."""
        if self._lifetime is None or self._exited:
            self._closed = True
            return
        await self._drain()

    async def _linger(self) -> None:
        linger = self.linger
        deadline = math.inf if linger < 0 else trio.current_time() + linger
        with trio.move_on_at(deadline):
            for stream in list(self._clients):
                self.remove_flush(stream)
            while self._clients:
                await next(iter(self._clients.values())).gone.wait()

    def _check_running(self) -> trio.Nursery:
        if self._closed or self._nursery is None:
            state = "closed" if self._closed else "not running (use `async with Sink()`)"
            raise trio.ClosedResourceError(f"the sink is {state}")
        return self._nursery

    # -- read-only counters ----------------------------------------------------
    @property
    def num_handles(self) -> int:
        """Clients registered now."""
        return len(self._clients)

    @property
    def bytes_to_serve(self) -> int:
        """Bytes of data buffers accepted into the history (headers excluded)."""
        return self._fanout.history.bytes_to_serve

    @property
    def bytes_served(self) -> int:
        """Bytes written to all clients together, headers included."""
        return self._bytes_served

    @property
    def buffers_queued(self) -> int:
        """History length after the last :meth:`send`."""
        return self._fanout.history.buffers_queued

    def statistics(self) -> SinkStatistics:
        """A frozen snapshot of the four counters."""
        return SinkStatistics(
            self.num_handles, self.bytes_to_serve, self.bytes_served, self.buffers_queued
        )

    # -- clients -----------------------------------------------------------------
    def add(self, stream: trio.abc.SendStream) -> None:
        """Start serving ``stream`` with the sink's ``sync_method`` and
        ``burst_format``/``burst_value`` (no burst maximum). Returns at once.

        Raises :exc:`TypeError` if ``stream`` is not a ``trio.abc.SendStream``
        and :exc:`trio.ClosedResourceError` on a closed sink.
        """
        self._add(stream, self.sync_method, self._default_burst())

    def add_full(
        self,
        stream: trio.abc.SendStream,
        sync_method: SyncMethod,
        min_format: Format,
        min_value: float,
        max_format: Format,
        max_value: float,
    ) -> None:
        """:meth:`add` with an explicit method and burst minimum and maximum.

        Raises :exc:`ValueError` (registering nothing) when both limits are
        set in the same format and ``max_value < min_value``.
        """
        self._add(stream, check_sync("sync_method", sync_method),
                  check_burst(min_format, min_value, max_format, max_value))

    def _add(self, stream: trio.abc.SendStream, method: SyncMethod, burst: Burst,
             start: bool = True) -> Client | None:
        """Register ``stream``; with ``start`` its task starts in the sink's
        nursery, else the caller runs it (``serve`` does, in its own task:
        a served client costs no task of its own)."""
        if not isinstance(stream, trio.abc.SendStream):
            raise TypeError(f"stream must be a trio.abc.SendStream, not {type(stream).__name__}")
        nursery = self._check_running()
        if stream in self._clients:
            callback = self.on_client_removed
            if callback is not None:
                self._call_quietly(callback, stream, ClientStatus.DUPLICATE)
            return None
        history = self._fanout.history
        client = Client(self, stream, history, history.add(stream, method, burst))
        self._clients[stream] = client
        apply_dscp(stream, self.qos_dscp)
        if self.handle_read and isinstance(stream, trio.abc.ReceiveStream):
            if GROUPED and _plain_socket(stream):
                client.fd = stream.socket.fileno()
                self._readers.add(client)
            else:
                client.own_reader = True
        if start:
            nursery.start_soon(run_client, client, self._fanout, self._direct,
                               client.own_reader)
        if self.on_client_added is not None:
            client.call(self.on_client_added, stream)
        return client

    async def serve(
        self,
        stream: trio.abc.SendStream,
        *,
        sync_method: SyncMethod | None = None,
        min_format: Format | None = None,
        min_value: float = -1,
        max_format: Format | None = None,
        max_value: float = -1,
    ) -> ClientStatus:
        """Add ``stream``, then wait until it is removed; returns its final status.

        Defaults are the sink's properties (``sync_method``, ``burst_format``,
        ``burst_value``; no maximum). Cancelling ``serve`` removes the client.
        Made to be a ``trio.serve_tcp`` handler::

            await trio.serve_tcp(sink.serve, port)
        """
        method = self.sync_method
        if sync_method is not None:
            method = check_sync("sync_method", sync_method)
        burst = self._default_burst()
        if (min_format, min_value, max_format, max_value) != (None, -1, None, -1):
            burst = check_burst(
                burst.min_format if min_format is None else min_format,
                burst.min_value if min_value == -1 and min_format is None else min_value,
                burst.max_format if max_format is None else max_format,
                max_value,
            )
        client = self._add(stream, method, burst, start=False)
        if client is None:
            await trio.lowlevel.checkpoint()
            return ClientStatus.DUPLICATE
        try:
            # The client's writer runs here, in the caller's task (one frame
            # less per client than a wrapper method).
            await run_client(client, self._fanout, self._direct, client.own_reader)
            await client.gone.wait()
        except BaseException:
            self._remove_client(client, ClientStatus.REMOVED)
            raise
        return client.status

    def remove(self, stream: trio.abc.SendStream) -> None:
        """Remove ``stream`` now: data not yet written is discarded; status
        ``REMOVED``. Unknown streams are ignored. Overrides a pending
        :meth:`remove_flush`."""
        client = self._clients.get(stream)
        if client is not None:
            self._remove_client(client, ClientStatus.REMOVED)

    def remove_flush(self, stream: trio.abc.SendStream) -> None:
        """Finish writing what is already queued for ``stream`` (nothing that
        arrives later), then remove it with status ``REMOVED``. A client with
        nothing queued or being written is removed at once."""
        client = self._clients.get(stream)
        if client is None or client.removed or client.cursor.state is CursorState.FLUSHING:
            return
        self._fanout.start_flush(client.cursor)
        if self._fanout.history.flushed(client.cursor) and not client.writing:
            self._remove_client(client, ClientStatus.REMOVED)
        else:
            self._direct.unpark(client)

    def clear(self) -> None:
        """Remove every client with status ``REMOVED``."""
        for client in list(self._clients.values()):
            self._remove_client(client, ClientStatus.REMOVED)

    def get_stats(self, stream: trio.abc.SendStream) -> ClientStats | None:
        """A frozen :class:`ClientStats` for ``stream``, or ``None`` if unknown."""
        client = self._clients.get(stream)
        return None if client is None else client.stats()

    # -- the stream ----------------------------------------------------------------
    def set_streamheader(self, buffers: Iterable[Buffer | bytes] | None) -> None:
        """Set the headers every client receives before its first data buffer
        (and, with ``resend_streamheader``, again when they change); ``None``
        or ``[]`` clears them."""
        if buffers is None:
            buffers = []
        if isinstance(buffers, (str, bytes, bytearray, memoryview, Buffer)) or not isinstance(
            buffers, Iterable
        ):
            raise TypeError(
                f"buffers must be a list of Buffers or bytes, or None, not {type(buffers).__name__}"
            )
        headers = [as_buffer(b, f"buffers[{i}]") for i, b in enumerate(buffers)]
        self._fanout.history.set_streamheader(headers)

    async def send(self, buffer: Buffer | bytes) -> None:
        """Queue ``buffer`` for every client.

        Never waits for a client; with ``sync`` it waits until the buffer's
        PTS is due (see ``sync``). When it returns the buffer is queued and every limit
        applied: a client over the hard limit has been removed ``SLOW``.
        If cancelled while waiting for its time, the buffer is not queued.
        """
        item = as_buffer(buffer)
        self._check_running()
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._clock.send(item, sync=self.sync)

    def _queue(self, buffer: Buffer) -> None:
        """Queue ``buffer`` now (the clock says it is due) and act on what the
        history did: remove the clients over a hard limit, write the batch."""
        result = self._fanout.send_nowait(buffer)
        for cursor in result.over_hard:
            client = self._clients.get(cursor.handle)  # type: ignore[call-overload]
            if client is not None:
                self._remove_client(client, ClientStatus.SLOW)
        if result.queued:
            self._direct.on_buffer_queued()

    def _remove_client(self, client: Client, status: ClientStatus) -> None:
        if client.removed:
            return
        client.removed = True
        client.status = status
        client.disconnect_time = time.time()
        client.disconnect_clock = trio.current_time()
        self._fanout.history.remove(client.cursor)
        self._readers.discard(client)
        client.cancel()
        self._direct.unpark(client)
        stream = client.stream
        try:
            if self.on_client_removed is not None:
                self._call_quietly(self.on_client_removed, stream, status)
        finally:
            if self._clients.get(stream) is client:
                del self._clients[stream]
            if self.on_client_socket_removed is not None:
                self._call_quietly(self.on_client_socket_removed, stream)
            client.gone.set()

    # -- what clients ask of the sink (ClientHost) -----------------------------
    def _dispatch_callback(self) -> Callable[[trio.abc.SendStream, Buffer], object] | None:
        return self.on_dispatched if self.send_dispatched else None

    def _message_callback(self) -> Callable[[trio.abc.SendStream, bytes], object] | None:
        return self.on_message if self.send_messages else None

    def _client_wrote(self, nbytes: int) -> None:
        self._bytes_served += nbytes

    def _call_quietly(self, callback: Callable[..., object], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            self._log_callback_error(callback)

    def _log_callback_error(self, callback: Callable[..., object]) -> None:
        logger.exception("callback %r raised", callback)


