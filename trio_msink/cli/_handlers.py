"""What every serving process (the main one and each ``--workers`` process)
attaches to its Sink: the fronts' connection handlers and the log callbacks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from .. import ClientStatus, Sink
from ..fronts import ClientRegistry, HttpFront, WebSocketFront, peer_address
from ..fronts._access import Front, Gate, Role, host_of
from ..fronts.browser import BrowserVideo

__all__ = ["VIDEO_PATH", "Handler", "front_handlers", "front_url", "logging_callbacks"]

# The WebSocket path of the browser viewers' video (the raw stream stays on /).
VIDEO_PATH = "/video"

logger = logging.getLogger("trio_msink.cli")

Handler = Callable[[trio.abc.Stream], Awaitable[object]]


def front_url(front: str, sockname: Any) -> str:
    """The line printed for a listening front: ``tcp://H:P``, ``http://H:P/``, ``ws://H:P/``."""
    host, port = sockname[0], sockname[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{front}://{host}:{port}" + ("" if front == "tcp" else "/")


def front_handlers(sink: Sink, registry: ClientRegistry, content_type: str,
                   header_timeout: float,
                   source_status: Callable[[], dict[str, Any] | None] | None = None,
                   *, video: BrowserVideo | None = None,
                   fronts: Mapping[str, str] | None = None,
                   gate: Gate | None = None) -> dict[str, Handler]:
    """The ``trio.serve_tcp`` handler of each front, all feeding ``sink``;
    ``source_status`` gives the ``"source"`` object of ``/stats``. With
    ``video``, the WebSocket front serves its browser viewers on
    ``/video``; ``fronts`` (name → URL) tells the page where everything is.
    ``gate`` decides who may watch (docs/security.md), on every path."""

    async def tcp(stream: trio.abc.Stream) -> None:
        if gate is not None:  # a raw TCP client is a viewer from its first byte
            with gate.enter(Front.TCP, Role.VIEWER, host_of(peer_address(stream))) as refusal:
                if refusal is None:
                    with registry.registered(stream, "tcp"):
                        await sink.serve(stream)
            return
        with registry.registered(stream, "tcp"):
            await sink.serve(stream)

    http = HttpFront(sink, content_type=content_type, registry=registry,
                     header_timeout=header_timeout, source_status=source_status,
                     video=video, fronts=fronts, gate=gate)
    routes = {}
    if video is not None:  # behind the outer front's gate: counted once
        routes[VIDEO_PATH] = WebSocketFront(video.sink, registry=registry, name="video")
    ws = WebSocketFront(sink, registry=registry, routes=routes, gate=gate)
    return {"tcp": tcp, "http": http.serve, "ws": ws.serve_stream}


def logging_callbacks(index: int, registry: ClientRegistry) -> dict[str, Any]:
    """Sink callbacks that log each client event with the worker's number."""
    name = f"worker {index}"

    def added(stream: trio.abc.SendStream) -> None:
        logger.info("%s: client added: %s", name, registry.describe(stream))

    def removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
        logger.info("%s: client removed (%s): %s", name, status.name, registry.describe(stream))

    return {"on_client_added": added, "on_client_removed": removed}
