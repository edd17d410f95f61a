"""Framed socket clients: each buffer behind a header made once per buffer.

A protocol that wraps every buffer in a frame whose bytes are the same for
every client (a server-to-client WebSocket message is not masked, so its
frame header depends only on the payload's length) need not cost more per
client than a plain socket. :class:`FramedSocketStream` is such a client:
the sink writes it through the same direct-write path and non-blocking
``writev`` calls as a ``trio.SocketStream`` (:mod:`trio_msink._direct`,
:mod:`trio_msink._tasks`), each buffer's segments preceded by its header,
which :class:`Framing` makes once per buffer size and shares, as it shares
the lists of segments of one batch, between all clients of one framing. No
payload is copied.

The protocol's own messages (a WebSocket pong or close frame) go through
:meth:`FramedSocketStream.send_between`: while a sink serves the stream its
writer writes them, whole, between two whole buffers, so that frames never
interleave; otherwise they are written at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import trio

from ._buffer import Buffer
from ._client import Client
from ._inflight import InFlight

__all__ = ["FramedSocketStream", "Framing", "original", "write_message"]

# Header bytes are cached per payload size: a stream of fixed-size buffers
# uses one entry, a video stream one per distinct frame size seen lately.
# 4096 entries of ~50 bytes each bound the cache to ~200 KiB.
_HEADER_CACHE = 4096
# Framed Buffers are cached for the latest buffers, so that the clients that
# are behind at the same position share them too; 256 buffers is more than
# one batch (64). The cache keeps its payloads alive, possibly past the
# history: at most 256 of them and 4 MiB (the size of one write, see
# _direct.MAX_BYTES_PER_WRITE).
_FRAMED_CACHE = 256
_FRAMED_CACHE_BYTES = 4 * 1024 * 1024


class _FramedBuffer(Buffer):
    """A buffer as it goes on the wire: its header, then its payload's segments."""

    __slots__ = ("original",)
    original: Buffer

    @classmethod
    def of(cls, buffer: Buffer, header: memoryview) -> _FramedBuffer:
        """``buffer`` behind ``header``. Built without ``Buffer``'s checks,
        which ``buffer`` passed: this runs once per buffer and client for
        the clients that are behind (about 1 us instead of 4)."""
        framed = object.__new__(cls)
        setter = object.__setattr__
        segments = (header, *buffer.segments)
        setter(framed, "data", segments)
        setter(framed, "pts", buffer.pts)
        setter(framed, "duration", buffer.duration)
        setter(framed, "delta_unit", buffer.delta_unit)
        setter(framed, "header", buffer.header)
        setter(framed, "segments", segments)
        setter(framed, "size", header.nbytes + buffer.size)
        setter(framed, "original", buffer)
        return framed


def original(item: Buffer) -> Buffer:
    """The buffer the sink was given, for a buffer that ``item`` frames
    (``item`` itself otherwise): what ``on_dispatched`` reports."""
    return item.original if isinstance(item, _FramedBuffer) else item


class Framing:
    """How the buffers of :class:`FramedSocketStream` clients go on the wire.

    ``header(size)`` returns the bytes sent before a buffer of ``size``
    bytes (``size`` > 0; nothing at all is sent for an empty buffer). It
    must depend on the size only: it is called once per distinct size and
    the result is shared by every client and every buffer of that size. One
    ``Framing`` serves any number of streams; the sink shares the segment
    lists of a batch between the clients that have the same one.

    Raises :exc:`TypeError` if ``header`` is not callable; :meth:`header`
    raises :exc:`TypeError` if it returns something that is not bytes-like.
    """

    def __init__(self, header: Callable[[int], bytes | bytearray | memoryview]) -> None:
        if not callable(header):
            raise TypeError(f"header must be callable, not {type(header).__name__}")
        self._make_header = header
        self._headers: dict[int, memoryview] = {}
        self._framed: dict[int, tuple[Buffer, Buffer]] = {}
        self._framed_bytes = 0

    def header(self, size: int) -> memoryview:
        """The header of a buffer of ``size`` bytes (made once per size)."""
        found = self._headers.get(size)
        if found is None:
            made = self._make_header(size)
            if not isinstance(made, (bytes, bytearray, memoryview)):
                raise TypeError(f"header({size}) must return bytes, not {type(made).__name__}")
            found = memoryview(bytes(made))
            if len(self._headers) >= _HEADER_CACHE:
                self._headers.clear()
            self._headers[size] = found
        return found

    def framed(self, buffer: Buffer) -> Buffer:
        """``buffer`` as it goes on the wire (header then payload, no copy):
        made once for a recent buffer; an empty buffer as it is (nothing is
        sent for it)."""
        if not buffer.size:
            return buffer
        key = id(buffer)
        entry = self._framed.get(key)
        if entry is not None and entry[0] is buffer:
            return entry[1]
        framed = _FramedBuffer.of(buffer, self.header(buffer.size))
        cache = self._framed
        while cache and (len(cache) >= _FRAMED_CACHE
                         or self._framed_bytes + buffer.size > _FRAMED_CACHE_BYTES):
            oldest, _ = cache.pop(next(iter(cache)))
            self._framed_bytes -= oldest.size
        cache[key] = (buffer, framed)
        self._framed_bytes += buffer.size
        return framed

    def segments(self, buffers: Sequence[Buffer], max_segments: int,
                 max_bytes: int) -> tuple[list[memoryview], int, bool]:
        """The framed, non-empty segments of ``buffers`` for one ``writev``:
        ``(segments, total bytes, complete)``, as ``History.segments``."""
        segments: list[memoryview] = []
        total = 0
        header = self.header
        for buffer in buffers:
            size = buffer.size
            if not size:
                continue
            head = header(size)
            segments.append(head)
            segments.extend(s for s in buffer.segments if s.nbytes)
            total += head.nbytes + size
            if len(segments) > max_segments or total > max_bytes:
                return segments, total, False
        return segments, total, True


class _Control:
    """Protocol bytes waiting for the writer, and how far it got."""

    __slots__ = ("data", "done", "sent")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = 0
        self.done = trio.Event()


class FramedSocketStream(trio.abc.SendStream):
    """A socket client whose buffers go out framed by ``framing``.

    Given to :meth:`Sink.add <trio_msink.Sink.add>` (or ``serve``), it is
    written like a plain ``trio.SocketStream``: batched non-blocking
    ``writev`` calls of whole buffers, each preceded by
    ``framing.header(len(buffer))``; its limits, stats and removal are every
    client's. ``bytes_sent`` counts the headers too (bytes on the wire).

    :meth:`send_between` sends protocol bytes between two whole buffers;
    :meth:`send_all` sends one framed buffer the same way. Both raise
    :exc:`trio.BrokenResourceError` once a removal cut a buffer short (the
    peer would misread anything after it) or the socket failed, and
    :exc:`trio.ClosedResourceError` after :meth:`aclose`. The sink never
    closes the stream; :meth:`aclose` closes ``socket_stream``. Nothing else
    may write to ``socket_stream`` while a sink serves the stream (a
    ``send_between`` begun before ``add`` must have returned).

    Raises :exc:`TypeError` if ``socket_stream`` is not a
    ``trio.SocketStream`` (over a stream socket) or ``framing`` not a
    :class:`Framing`.
    """

    def __init__(self, socket_stream: trio.SocketStream, framing: Framing) -> None:
        if not isinstance(socket_stream, trio.SocketStream):
            raise TypeError("socket_stream must be a trio.SocketStream, "
                            f"not {type(socket_stream).__name__}")
        if not isinstance(framing, Framing):
            raise TypeError(f"framing must be a Framing, not {type(framing).__name__}")
        #: The connection the sink writes to.
        self.socket_stream = socket_stream
        #: How each buffer is framed.
        self.framing = framing
        self._lock = trio.StrictFIFOLock()
        self._pending: _Control | None = None
        # Set while a sink's writer serves the stream: wakes that writer.
        self._wake: Callable[[], None] | None = None
        self._cut = False
        self._closed = False

    @property
    def transport_stream(self) -> trio.SocketStream:
        """``socket_stream`` (where the sink finds the socket, e.g. for DSCP)."""
        return self.socket_stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one framed buffer, between two whole buffers of
        the sink's; empty ``data`` sends nothing."""
        if not len(data):
            self._check()
            await trio.lowlevel.checkpoint()
            return
        await self.send_between(bytes(self.framing.header(len(data))) + bytes(data))

    async def send_between(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as it is, between two whole buffers: by the writer
        of the sink that serves the stream, else directly. Returns once it
        is written. Senders are served one at a time, in order. Cancelled
        before the writer started on it, nothing is sent."""
        self._check()
        payload = bytes(data)
        async with self._lock:
            while payload:
                self._check()
                while self._pending is not None:  # one a cancelled sender left
                    await self._pending.done.wait()
                if self._wake is None:
                    await self.socket_stream.send_all(payload)
                    return
                control = self._pending = _Control(payload)
                self._wake()
                try:
                    await control.done.wait()
                finally:
                    if self._pending is control and not control.sent:
                        self._pending = None  # cancelled before the writer began
                if control.sent == len(payload):
                    return
                # The writer let go before finishing it: the rest goes directly
                # (or, when it had begun, _check finds the stream broken).
                payload = payload[control.sent:]
            await trio.lowlevel.checkpoint()

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._cut:
            raise trio.BrokenResourceError("a buffer was cut short: the stream is broken")

    async def wait_send_all_might_not_block(self) -> None:
        """As the socket's."""
        await self.socket_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Close ``socket_stream``. Idempotent."""
        self._closed = True
        await self.socket_stream.aclose()

    # -- the sink's writer ----------------------------------------------------
    @contextmanager
    def _served(self, wake: Callable[[], None], inflight: InFlight) -> Iterator[None]:
        """While a sink's writer serves the stream: ``wake`` wakes it for a
        message from :meth:`send_between`. On exit the stream is broken if
        a buffer (``inflight``) or a message was left partly written."""
        self._wake = wake
        try:
            yield
        finally:
            self._wake = None
            control = self._pending
            if bool(inflight) or (control is not None and 0 < control.sent < len(control.data)):
                self._cut = True
            if control is not None:
                self._pending = None
                control.done.set()

    def _message(self) -> memoryview | None:
        """What is left to write of the message waiting, if any."""
        control = self._pending
        return None if control is None else memoryview(control.data)[control.sent:]

    def _message_wrote(self, nbytes: int) -> None:
        """``nbytes`` more of the waiting message were written."""
        control = self._pending
        assert control is not None
        control.sent += nbytes
        if control.sent == len(control.data):
            self._pending = None
            control.done.set()


async def write_message(stream: FramedSocketStream, client: Client) -> bool:
    """Write the message waiting in ``stream`` (:meth:`~FramedSocketStream.send_between`),
    whole, to ``client``'s socket: the writer calls it between two whole
    buffers. False if no byte could be written for the client's ``timeout``."""
    while (rest := stream._message()) is not None:
        try:
            written = os.write(client.fd, rest)
        except BlockingIOError:
            written = 0
        if written:
            client.progressed(written)
            stream._message_wrote(written)
            continue
        with trio.move_on_at(client.stall_deadline()) as scope:
            await trio.lowlevel.wait_writable(client.fd)
        if scope.cancelled_caught:
            return False
    return True
