"""Client-facing fronts: ways for clients to reach a :class:`~trio_msink.Sink`.

Every front is built on the sink's public API only (``sink.serve``,
``sink.get_stats``, ``sink.statistics``): it turns a connection into a
``trio.abc.SendStream`` and hands it to ``await sink.serve(stream)``.

* :class:`HttpFront` (needs ``h11``, extra ``http``): ``GET /stream`` is the
  raw stream as a close-delimited HTTP body, ``GET /stats`` the numbers as
  JSON, ``GET /`` the live page (the video, the numbers, charts, viewers).
* :class:`BrowserVideo`: the browser viewers' video, H.264 access units made
  once per buffer and served by a Sink of their own (with a
  :class:`WebSocketFront` on ``/video``).
* :class:`WebSocketFront` (needs ``trio-websocket``, extra ``websocket``):
  every buffer is one binary message.
* :class:`AnyioSendStream` / :class:`AnyioStream` (need ``anyio``, extra
  ``anyio``): hand an anyio application's connections to a sink.

The fronts share a :class:`ClientRegistry` so that one ``/stats`` page shows
every client of a sink, whichever front (or plain ``trio.serve_tcp`` handler)
it came through. The optional dependencies are imported only when one of
their names is first used.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .. import Sink
from .._sockopts import find_socket

if TYPE_CHECKING:
    from .anyio import AnyioSendStream, AnyioStream
    from .browser import BrowserVideo
    from .http import HttpFront, stats_document
    from .websocket import (
        WebSocketFramedStream,
        WebSocketFront,
        WebSocketSendStream,
        WebSocketStream,
    )

__all__ = [
    "AnyioSendStream",
    "AnyioStream",
    "BrowserVideo",
    "ClientInfo",
    "ClientRegistry",
    "HttpFront",
    "WebSocketFramedStream",
    "WebSocketFront",
    "WebSocketSendStream",
    "WebSocketStream",
    "format_address",
    "peer_address",
    "stats_document",
]

# name -> submodule; imported on first use so that `import trio_msink.fronts`
# works without h11, trio-websocket or anyio installed.
_LAZY = {
    "AnyioSendStream": "anyio",
    "AnyioStream": "anyio",
    "BrowserVideo": "browser",
    "HttpFront": "http",
    "stats_document": "http",
    "WebSocketFramedStream": "websocket",
    "WebSocketFront": "websocket",
    "WebSocketSendStream": "websocket",
    "WebSocketStream": "websocket",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a front knows about one of its clients."""

    #: Name of the front that registered the client (``"http"``, ``"websocket"``, ...).
    front: str
    #: The peer's address as ``"host:port"`` (``"[v6]:port"``), or ``None`` if unknown.
    address: str | None


class ClientRegistry:
    """Which streams of a sink came through which front, from which address.

    The sink knows its clients only as streams; a front registers each
    stream it hands to the sink so that a stats page can say where every
    client came from. Share one registry between all the fronts (and any
    ``trio.serve_tcp`` handler) of a sink. Plain synchronous bookkeeping:
    safe to call from any task and from sink callbacks.
    """

    def __init__(self) -> None:
        self._clients: dict[trio.abc.SendStream, ClientInfo] = {}

    def register(
        self, stream: trio.abc.SendStream, front: str, address: str | None = None
    ) -> None:
        """Record ``stream`` as a client of ``front`` at ``address`` (by
        default the stream's peer address, see :func:`peer_address`).
        Replaces an earlier record of the same stream."""
        if address is None:
            address = peer_address(stream)
        self._clients[stream] = ClientInfo(front, address)

    def unregister(self, stream: trio.abc.SendStream) -> None:
        """Forget ``stream``; unknown streams are ignored."""
        self._clients.pop(stream, None)

    @contextmanager
    def registered(
        self, stream: trio.abc.SendStream, front: str, address: str | None = None
    ) -> Iterator[None]:
        """Register ``stream`` for the duration of a ``with`` block::

            async def handler(stream: trio.SocketStream) -> None:
                with registry.registered(stream, "tcp"):
                    await sink.serve(stream)
        """
        self.register(stream, front, address)
        try:
            yield
        finally:
            self.unregister(stream)

    def get(self, stream: trio.abc.SendStream) -> ClientInfo | None:
        """The record of ``stream``, or ``None``."""
        return self._clients.get(stream)

    def __len__(self) -> int:
        return len(self._clients)

    def __contains__(self, stream: object) -> bool:
        return stream in self._clients

    def __iter__(self) -> Iterator[tuple[trio.abc.SendStream, ClientInfo]]:
        return iter(self.items())

    def items(self) -> list[tuple[trio.abc.SendStream, ClientInfo]]:
        """A snapshot of ``(stream, info)`` pairs, in registration order."""
        return list(self._clients.items())

    def describe(self, stream: trio.abc.SendStream) -> str:
        """A short label for logs: ``"http 127.0.0.1:50312"``; for an
        unregistered stream, its peer address or its type name."""
        info = self._clients.get(stream)
        if info is None:
            return peer_address(stream) or type(stream).__name__
        return f"{info.front} {info.address}" if info.address else info.front

    def snapshot(self, sink: Sink) -> list[dict[str, Any]]:
        """One JSON-ready row per registered client that ``sink`` serves now.

        Keys: ``address``, ``front``, ``status`` (a :class:`ClientStatus`
        name), ``bytes_sent``, ``lag_buffers``, ``lag_bytes``,
        ``buffers_dropped``, ``connect_duration`` (seconds). Streams the sink
        does not know (not yet added, or already removed) are left out.
        """
        rows = []
        for stream, info in self:
            stats = sink.get_stats(stream)
            if stats is None:
                continue
            rows.append({
                "address": info.address,
                "front": info.front,
                "status": stats.status.name,
                "bytes_sent": stats.bytes_sent,
                "lag_buffers": stats.lag_buffers,
                "lag_bytes": stats.lag_bytes,
                "buffers_dropped": stats.buffers_dropped,
                "connect_duration": _finite(stats.connect_duration),
            })
        return rows


def _finite(value: float) -> float:
    # JSON has no inf/nan; durations are finite in practice, but be safe.
    return value if math.isfinite(value) else 0.0


def format_address(address: object) -> str | None:
    """``"host:port"`` for an IPv4/IPv6 socket address tuple, ``"[host]:port"``
    for IPv6, the path for a Unix socket, else ``None``."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, str) and address:
        return address
    return None


def peer_address(stream: object) -> str | None:
    """The remote address of ``stream`` as ``"host:port"``, looking through
    ``SSLStream``-like layers (``transport_stream``); ``None`` when there is
    no socket (memory streams, pipes) or the peer is already gone."""
    sock = find_socket(stream)
    if sock is None:
        return None
    try:
        return format_address(sock.getpeername())
    except (OSError, AttributeError):
        return None

