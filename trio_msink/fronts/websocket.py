"""WebSocket front: every client is a WebSocket connection, every buffer one message.

:class:`WebSocketSendStream` adapts a ``trio_websocket.WebSocketConnection``
to ``trio.abc.SendStream``: each ``send_all(data)`` sends ``data`` as one
binary message. :class:`WebSocketStream` adds ``receive_some`` (the peer's
messages as bytes; ``b""`` once the peer has closed), which lets the sink's
reader notice a closed peer and remove the client with ``CLOSED`` even when
no data is flowing. :class:`WebSocketFront` serves the clients: its
``handle`` is a handler for ``trio_websocket.serve_websocket`` and its
``serve_stream`` one for ``trio.serve_tcp`` (it does the handshake itself)::

    front = WebSocketFront(sink)
    await trio_websocket.serve_websocket(front.handle, "0.0.0.0", 8081, None)
    # or
    await trio.serve_tcp(front.serve_stream, 8081)

The fast path: a client of :meth:`WebSocketFront.serve_stream` on a plain
TCP socket is served as a :class:`WebSocketFramedStream`, a
:class:`~trio_msink.FramedSocketStream` whose framing is a binary message
per buffer (:data:`BINARY_FRAMING`, shared by every such client): the sink
writes it as it writes a TCP client (batched non-blocking ``writev``, the
frame header made once per buffer size, no copy of the payload).
trio-websocket still does the handshake, reads the client's frames
(fragments, pings, close, ``max_message_size``), and its own writes (pong,
close) go through the sink's writer, between two whole data frames.

Other connections (TLS, :meth:`WebSocketFront.handle` under
``trio_websocket.serve_websocket``) use :class:`WebSocketStream`: one
``send_all`` per buffer, each sent by trio-websocket as one message (a
multi-segment :class:`~trio_msink.Buffer` is joined first). Either way a
client's messages are whole buffers in order, one message each, and a client
that does not read falls behind and meets the sink's limits and ``timeout``
as any other client.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import weakref
from collections.abc import Mapping
from contextlib import AbstractContextManager

import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from .. import ClientStatus, FramedSocketStream, Framing, Sink
from .._sockopts import find_socket
from . import ClientRegistry, format_address, peer_address
from ._access import Front, Gate, Refusal, Role, host_of
from ._stream import AdapterSendStream

__all__ = [
    "BINARY_FRAMING",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "WebSocketFramedStream",
    "WebSocketFront",
    "WebSocketSendStream",
    "WebSocketStream",
]

logger = logging.getLogger("trio_msink.fronts.websocket")

# Seconds the closing handshake may take after a client was removed; the same
# order as trio-websocket's own disconnect_timeout (60 s) but shorter, because
# a removed client (often a slow one) is not worth waiting for.
DEFAULT_CLOSE_TIMEOUT = 5.0
# Seconds a client of serve_stream gets to complete the opening handshake:
# as the HTTP front's header timeout (trio-websocket's own default is 60 s,
# nginx's client_header_timeout 60 s); the handshake is one small request.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


def binary_frame_header(size: int) -> bytes:
    """The header of an unfragmented, unmasked binary message of ``size``
    bytes, as a server sends it (RFC 6455, section 5.2: FIN, opcode 2, the
    shortest length encoding)."""
    if size < 126:
        return bytes((0x82, size))
    if size < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, size)
    return struct.pack("!BBQ", 0x82, 127, size)


#: One binary message per buffer: the framing of every fast-path client, so
#: that all of them share the headers and the segment lists of a batch.
BINARY_FRAMING = Framing(binary_frame_header)


class WebSocketSendStream(AdapterSendStream):
    """A ``trio.abc.SendStream`` that sends each ``send_all`` as one binary message.

    ``send_all`` raises :exc:`trio.BrokenResourceError` once the WebSocket is
    closed (by either side: the sink then removes the client ``CLOSED``),
    :exc:`trio.ClosedResourceError` after :meth:`aclose`, and
    :exc:`trio.BusyResourceError` if two tasks send at once. An empty
    ``send_all`` sends nothing. Cancelling ``send_all`` may leave a message
    partly written, which breaks the connection (as for any Trio stream).
    """

    _closed_message = "this WebSocket stream was closed"

    def __init__(self, connection: WebSocketConnection) -> None:
        super().__init__()
        self.connection = connection

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary message."""
        try:
            await self.connection.send_message(bytes(data))
        except ConnectionClosed as exc:
            raise trio.BrokenResourceError(f"the WebSocket is closed ({exc.reason})") from exc

    async def aclose(self) -> None:
        """Close the WebSocket (closing handshake, code 1000). Idempotent."""
        await self.close()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the WebSocket with ``code`` and ``reason``. Idempotent: once
        closed (by either side), later calls change nothing."""
        self._closed = True
        await self.connection.aclose(code, reason)


class WebSocketStream(WebSocketSendStream, trio.abc.Stream):
    """:class:`WebSocketSendStream` that also receives: ``receive_some``
    returns the peer's messages as bytes (text as UTF-8), at most
    ``max_bytes`` at a time, and ``b""`` once the peer has closed.

    Raises :exc:`trio.ClosedResourceError` after :meth:`aclose` and
    :exc:`trio.BusyResourceError` if two tasks receive at once.
    """

    def __init__(self, connection: WebSocketConnection) -> None:
        super().__init__(connection)
        self._messages = _MessageBytes()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes of the peer's messages; ``b""`` at end of stream."""
        return await self._receive_guarded(max_bytes, self._receive)

    async def _receive(self, max_bytes: int | None) -> bytes:
        return await self._messages.receive(self.connection, max_bytes)


class _MessageBytes:
    """The peer's messages as a byte stream (what ``receive_some`` of both
    WebSocket streams returns): the rest of the current message first, then
    the next one; an empty message is skipped, not taken for end of stream."""

    def __init__(self) -> None:
        self._pending = b""

    async def receive(self, connection: WebSocketConnection, max_bytes: int | None) -> bytes:
        """Up to ``max_bytes`` (all pending if None); ``b""`` once the connection is closed."""
        while not self._pending:
            try:
                message = await connection.get_message()
            except ConnectionClosed:
                return b""
            self._pending = message.encode() if isinstance(message, str) else message
        if max_bytes is None or max_bytes >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data


class WebSocketFramedStream(FramedSocketStream, trio.abc.ReceiveStream):
    """A WebSocket client on the fast path: the sink writes each buffer as
    one binary message straight to ``socket_stream`` (see
    :class:`~trio_msink.FramedSocketStream`), while ``connection`` (set once
    the handshake is done) reads the client's frames and sends its control
    frames between two whole messages.

    ``receive_some`` and :meth:`close` behave as :class:`WebSocketStream`'s.
    """

    def __init__(self, socket_stream: trio.SocketStream,
                 framing: Framing = BINARY_FRAMING) -> None:
        super().__init__(socket_stream, framing)
        #: The trio-websocket connection, once the opening handshake is done.
        self.connection: WebSocketConnection | None = None
        self._receiving = False
        self._messages = _MessageBytes()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes of the peer's messages; ``b""`` at end of stream."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        if self.connection is None:
            raise trio.ClosedResourceError("the WebSocket handshake is not done")
        self._receiving = True
        try:
            return await self._messages.receive(self.connection, max_bytes)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close the WebSocket (closing handshake, code 1000). Idempotent."""
        await self.close()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the WebSocket with ``code`` and ``reason`` (idempotent);
        the socket is closed by whoever owns it (the front)."""
        if self.connection is not None:
            await self.connection.aclose(code, reason)
        self._closed = True


class _Transport(trio.abc.Stream):
    """What trio-websocket reads and writes on the fast path: it reads the
    socket; what it writes (the handshake's response, pongs, close frames)
    goes between two whole messages (``send_between``)."""

    def __init__(self, framed: WebSocketFramedStream) -> None:
        self._framed = framed
        self._socket_stream = framed.socket_stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._framed.send_between(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._socket_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._socket_stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        # trio-websocket closes its stream after the closing handshake. The
        # socket must stay open while the sink may still write to it: the
        # front closes it once its client is gone (serve_stream's finally).
        if self._framed._wake is None:
            await self._socket_stream.aclose()
        else:
            await trio.lowlevel.checkpoint()


class _HandshakeGuard(trio.abc.Stream):
    """The stream trio-websocket reads in :meth:`WebSocketFront.serve_stream`:
    it passes everything through, and while the opening handshake is pending
    (``handshake`` set) it cancels that scope once the peer has gone (end of
    input, a broken or closed stream). trio-websocket's reader then stops,
    but ``wrap_server_stream`` would go on waiting for a request that can no
    longer come, holding the connection until ``handshake_timeout``."""

    def __init__(self, transport_stream: trio.abc.Stream) -> None:
        # Named as an SSLStream's layer, so that find_socket looks through it.
        self.transport_stream = transport_stream
        #: The scope of the pending opening handshake; ``None`` once it is done.
        self.handshake: trio.CancelScope | None = None
        #: Whether the peer went before the opening handshake was done.
        self.peer_gone = False

    def _gone(self) -> None:
        if self.handshake is not None:
            self.peer_gone = True
            self.handshake.cancel()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.transport_stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._gone()
            raise
        if not data:
            self._gone()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()


# serve_stream's fast-path clients, until their request is handled (by this
# front or by a front it routes the request to).
_FRAMED: weakref.WeakKeyDictionary[WebSocketRequest, WebSocketFramedStream] = \
    weakref.WeakKeyDictionary()
# The streams serve_stream was given, for the same time: trio-websocket sees
# only the _HandshakeGuard over them, whose addresses it cannot read.
_STREAMS: weakref.WeakKeyDictionary[WebSocketRequest, trio.abc.Stream] = \
    weakref.WeakKeyDictionary()


def _remote_address(connection: WebSocketConnection | WebSocketRequest) -> str | None:
    remote = connection.remote
    if isinstance(remote, Endpoint):
        return format_address((str(remote.address), remote.port))
    return format_address(remote)


def _addresses(request: WebSocketRequest) -> tuple[str | None, int | None]:
    """The client's ``"host:port"`` and the local port of ``request``'s
    connection (``None`` when unknown): read from the stream given to
    serve_stream if there was one, else from trio-websocket's view."""
    stream = _STREAMS.get(request)
    if stream is None:
        local = request.local
        return _remote_address(request), local.port if isinstance(local, Endpoint) else None
    sock = find_socket(stream)
    try:
        port: int | None = sock.getsockname()[1] if sock is not None else None
    except OSError:
        port = None
    return peer_address(stream), port


async def _refuse(request: WebSocketRequest, refusal: Refusal) -> None:
    """Turn a client away: refused for who it is (401, 403), the handshake
    is rejected with that status; refused for lack of room, the handshake
    completes and the connection is closed with ``refusal.close_code``
    (1013, "try again later"), which a WebSocket client can see, whereas
    browsers hide a rejected handshake's status from scripts."""
    with contextlib.suppress(ConnectionClosed):
        if refusal.close_code is None:
            await request.reject(refusal.status,
                                 extra_headers=[(name.encode(), value.encode())
                                                for name, value in refusal.headers],
                                 body=f"{refusal.status} {refusal.message}\n".encode())
            return
        connection = await request.accept()
        with trio.move_on_after(DEFAULT_CLOSE_TIMEOUT):
            await connection.aclose(refusal.close_code, refusal.message)


class WebSocketFront:
    """Serve a sink to WebSocket clients, one binary message per buffer.

    :meth:`handle` is the handler for ``trio_websocket.serve_websocket``;
    :meth:`serve_stream` the handler for ``trio.serve_tcp`` (a raw stream:
    it does the opening handshake, within ``handshake_timeout`` seconds);
    :meth:`serve_connection` serves a connection accepted elsewhere. Clients
    are registered in ``registry`` (created if not given) under ``name``.
    With ``path`` set, requests for any other path (query ignored) are
    rejected with 404. ``close_timeout`` bounds, in seconds, the closing
    handshake after a client was removed. ``max_message_size`` (bytes)
    bounds what a client may send, for :meth:`serve_stream` connections.
    ``routes`` maps other paths (query ignored) to the fronts that serve
    them on the same port, e.g. ``{"/video": WebSocketFront(video_sink)}``.
    ``gate`` (a ``Gate`` of ``trio_msink.fronts._access``, default none)
    decides who may connect (origin, token, the viewers' limits; see
    docs/security.md): a refused handshake gets 401 or 403, a client over
    the limits is closed with code 1013.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        registry: ClientRegistry | None = None,
        name: str = "websocket",
        path: str | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_message_size: int = 64 * 1024,
        routes: Mapping[str, WebSocketFront] | None = None,
        gate: Gate | None = None,
    ) -> None:
        if close_timeout < 0 or handshake_timeout < 0:
            raise ValueError("timeouts must be >= 0 seconds")
        if max_message_size <= 0:
            raise ValueError("max_message_size must be > 0")
        self.sink = sink
        self.registry = registry if registry is not None else ClientRegistry()
        self.name = name
        self.path = path
        self.close_timeout = float(close_timeout)
        self.handshake_timeout = float(handshake_timeout)
        self.max_message_size = max_message_size
        self.gate = gate
        self.routes = dict(routes or {})

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Handler for ``trio.serve_tcp``: the opening handshake on a raw
        stream, then :meth:`handle`; closes the stream at the end. A client
        that has not completed the handshake within ``handshake_timeout`` is
        dropped. A plain TCP ``trio.SocketStream`` is served on the fast path
        (:class:`WebSocketFramedStream`). Never raises for anything the peer
        does."""
        framed: WebSocketFramedStream | None = None
        transport: trio.abc.Stream = stream
        if type(stream) is trio.SocketStream:
            framed = WebSocketFramedStream(stream)
            transport = _Transport(framed)
        guard = _HandshakeGuard(transport)
        try:
            async with trio.open_nursery() as nursery:
                request: WebSocketRequest | None = None
                with trio.move_on_after(self.handshake_timeout) as guard.handshake:
                    request = await wrap_server_stream(
                        nursery, guard, max_message_size=self.max_message_size
                    )
                guard.handshake = None
                if request is None:
                    if guard.peer_gone:
                        logger.debug("dropping %r: the peer went during the WebSocket "
                                     "handshake", stream)
                    else:
                        logger.debug("dropping %r: no WebSocket handshake within %s s",
                                     stream, self.handshake_timeout)
                else:
                    _STREAMS[request] = stream
                    if framed is not None:
                        _FRAMED[request] = framed
                    await self.handle(request)
                nursery.cancel_scope.cancel()  # the connection's reader task
        except Exception:
            logger.debug("WebSocket connection %r failed", stream, exc_info=True)
        finally:
            await trio.aclose_forcefully(stream)

    async def handle(self, request: WebSocketRequest) -> None:
        """Accept ``request`` and serve the connection until the client is
        removed, then close it. Never raises for anything the peer does, nor
        when the sink is already closed (the client is then closed with
        code 1001, "going away"). With a ``gate``, a refused client is
        turned away first, whatever path it asks for (a route's front is
        best given no gate of its own: the client would be counted twice)."""
        with self._enter(request) as refusal:
            if refusal is not None:
                await _refuse(request, refusal)
                return
            await self._accept_and_serve(request)

    async def _accept_and_serve(self, request: WebSocketRequest) -> None:
        route = self.routes.get(request.path.split("?", 1)[0])
        if route is not None and route is not self:
            await route.handle(request)
            return
        if self.path is not None and request.path.split("?", 1)[0] != self.path:
            with contextlib.suppress(ConnectionClosed):
                await request.reject(404, body=b"no stream here\n")
            return
        framed = _FRAMED.pop(request, None)
        address = _addresses(request)[0]
        _STREAMS.pop(request, None)
        try:
            connection = await request.accept()
        except ConnectionClosed:
            return
        try:
            await self._serve(connection, framed, address)
        except trio.ClosedResourceError:
            logger.debug("the sink is closed: WebSocket client %s refused", connection)

    def _enter(self, request: WebSocketRequest) -> AbstractContextManager[Refusal | None]:
        """The gate's verdict on a handshake (docs/security.md): origin,
        token, and a place among the viewers."""
        if self.gate is None:
            return contextlib.nullcontext(None)
        remote, port = _addresses(request)
        return self.gate.enter(Front.WEBSOCKET, Role.VIEWER, host_of(remote), request.path,
                               request.headers, ws_port=port)

    async def serve_connection(self, connection: WebSocketConnection) -> ClientStatus:
        """Serve an open ``connection`` until its client is removed; returns
        the final :class:`ClientStatus` (``CLOSED`` when the peer closed).
        Closes the connection afterwards (code 1000; 1001 when the sink is
        closed, and then :exc:`trio.ClosedResourceError` is raised)."""
        return await self._serve(connection, None, _remote_address(connection))

    async def _serve(self, connection: WebSocketConnection,
                     framed: WebSocketFramedStream | None,
                     address: str | None) -> ClientStatus:
        """:meth:`serve_connection`, on the fast path when ``framed`` is the
        stream under ``connection``; ``address`` is the client's, for the
        registry."""
        stream: WebSocketStream | WebSocketFramedStream
        if framed is not None:
            framed.connection = connection
            stream = framed
        else:
            stream = WebSocketStream(connection)
        code, reason = 1000, None
        try:
            with self.registry.registered(stream, self.name, address):
                async with trio.open_nursery() as nursery:
                    if not self.sink.handle_read:
                        # Nobody else reads: without a reader trio-websocket
                        # stops processing frames once its queue is full, and
                        # a closed peer would go unnoticed while idle.
                        nursery.start_soon(self._watch, stream)
                    try:
                        status = await self.sink.serve(stream)
                    except trio.ClosedResourceError:
                        code, reason = 1001, "the stream has ended"
                        raise
                    nursery.cancel_scope.cancel()
                return status
        finally:
            with trio.move_on_after(self.close_timeout):
                await stream.close(code, reason)

    async def _watch(self, stream: WebSocketStream | WebSocketFramedStream) -> None:
        """Discard the peer's messages; remove the client when it closes."""
        while await stream.receive_some():
            pass
        # Public API only: the status is REMOVED, not CLOSED, in this mode.
        self.sink.remove(stream)
