"""WebSocket front: every client is a WebSocket connection, every write one message.

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

Message boundaries: for streams that are not plain sockets the sink makes
one ``send_all`` per buffer (a multi-segment :class:`~trio_msink.Buffer` is
joined first), so every buffer is exactly one message, and a client's
messages are whole buffers in order.

Backpressure: trio-websocket writes each message with ``send_all`` on its
TCP stream, so a client that does not read blocks its own ``send_all``; the
sink then counts its waiting buffers as lag and applies its limits and
``timeout`` as for any other client.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager

import trio
from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from .. import ClientStatus, Sink
from . import ClientRegistry, format_address
from ._access import Front, Gate, Refusal, Role, host_of
from ._stream import AdapterSendStream

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
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
        self._pending = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes of the peer's messages; ``b""`` at end of stream."""
        return await self._receive_guarded(max_bytes, self._receive)

    async def _receive(self, max_bytes: int | None) -> bytes:
        while not self._pending:
            try:
                message = await self.connection.get_message()
            except ConnectionClosed:
                return b""
            # An empty message is not end of stream: skip it.
            self._pending = message.encode() if isinstance(message, str) else message
        if max_bytes is None or max_bytes >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data


def _remote_address(connection: WebSocketConnection | WebSocketRequest) -> str | None:
    remote = connection.remote
    if isinstance(remote, Endpoint):
        return format_address((str(remote.address), remote.port))
    return format_address(remote)


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

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Handler for ``trio.serve_tcp``: the opening handshake on a raw
        stream, then :meth:`handle`; closes the stream at the end. A client
        that has not completed the handshake within ``handshake_timeout`` is
        dropped. Never raises for anything the peer does."""
        try:
            async with trio.open_nursery() as nursery:
                request: WebSocketRequest | None = None
                with trio.move_on_after(self.handshake_timeout):
                    request = await wrap_server_stream(
                        nursery, stream, max_message_size=self.max_message_size
                    )
                if request is None:
                    logger.debug("dropping %r: no WebSocket handshake within %s s",
                                 stream, self.handshake_timeout)
                else:
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
        turned away first, whatever path it asks for."""
        with self._enter(request) as refusal:
            if refusal is not None:
                await _refuse(request, refusal)
                return
            await self._accept_and_serve(request)

    async def _accept_and_serve(self, request: WebSocketRequest) -> None:
        if self.path is not None and request.path.split("?", 1)[0] != self.path:
            with contextlib.suppress(ConnectionClosed):
                await request.reject(404, body=b"no stream here\n")
            return
        try:
            connection = await request.accept()
        except ConnectionClosed:
            return
        try:
            await self.serve_connection(connection)
        except trio.ClosedResourceError:
            logger.debug("the sink is closed: WebSocket client %s refused", connection)

    def _enter(self, request: WebSocketRequest) -> AbstractContextManager[Refusal | None]:
        """The gate's verdict on a handshake (docs/security.md): origin,
        token, and a place among the viewers."""
        if self.gate is None:
            return contextlib.nullcontext(None)
        local = request.local
        port = local.port if isinstance(local, Endpoint) else None
        return self.gate.enter(Front.WEBSOCKET, Role.VIEWER,
                               host_of(_remote_address(request)), request.path,
                               request.headers, ws_port=port)

    async def serve_connection(self, connection: WebSocketConnection) -> ClientStatus:
        """Serve an open ``connection`` until its client is removed; returns
        the final :class:`ClientStatus` (``CLOSED`` when the peer closed).
        Closes the connection afterwards (code 1000; 1001 when the sink is
        closed, and then :exc:`trio.ClosedResourceError` is raised)."""
        stream = WebSocketStream(connection)
        code, reason = 1000, None
        try:
            with self.registry.registered(stream, self.name, _remote_address(connection)):
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

    async def _watch(self, stream: WebSocketStream) -> None:
        """Discard the peer's messages; remove the client when it closes."""
        while await stream.receive_some():
            pass
        # Public API only: the status is REMOVED, not CLOSED, in this mode.
        self.sink.remove(stream)
