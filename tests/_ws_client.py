"""A WebSocket client for the tests that must see every frame as it was
sent: a raw socket and wsproto's state machine, which raises on any frame
cut short or interleaved (docs/front_websocket.md)."""

from __future__ import annotations

import socket

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Event, Request


class RawClient:
    """A WebSocket client on a raw socket and wsproto's state machine."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._parts: list[bytes] = []

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        await client.send(Request(host="127.0.0.1", target="/"))
        while True:
            for event in await client.events():
                if isinstance(event, AcceptConnection):
                    return client
                raise AssertionError(f"handshake: {event!r}")

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def events(self, max_bytes: int = 65536) -> list[Event]:
        """The events of the next bytes read (whole messages only); a
        malformed frame raises wsproto's RemoteProtocolError."""
        data = await self.stream.receive_some(max_bytes)
        self.ws.receive_data(data or None)
        out: list[Event] = []
        for event in self.ws.events():
            if isinstance(event, BytesMessage):
                self._parts.append(bytes(event.data))
                if event.message_finished:
                    out.append(BytesMessage(b"".join(self._parts)))
                    self._parts = []
            else:
                out.append(event)
        return out
