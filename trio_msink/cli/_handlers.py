"""What every serving process (the main one and each ``--workers`` process)
attaches to its Sink: the fronts' connection handlers and the log callbacks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from .. import ClientStatus, Sink
from ..fronts import ClientRegistry, HttpFront, WebSocketFront, peer_address
from ..fronts._access import Front, Gate, Role, host_of
from ..fronts.browser import BrowserVideo
from ._source_state import SourceState

if TYPE_CHECKING:
    from ..fronts.metrics import SinkMetrics

__all__ = ["VIDEO_PATH", "Handler", "front_handlers", "front_url", "logging_callbacks",
           "open_metrics"]

# The WebSocket path of the browser viewers' video (the raw stream stays on /).
VIDEO_PATH = "/video"
# The names the fronts register their clients under (the `front` label of
# /metrics, the `front` column of /stats).
FRONTS = ("tcp", "http", "websocket")

logger = logging.getLogger("trio_msink.cli")

Handler = Callable[[trio.abc.Stream], Awaitable[object]]


def front_url(front: str, sockname: Any) -> str:
    """The line printed for a listening front: ``tcp://H:P``, ``http://H:P/``, ``ws://H:P/``."""
    host, port = sockname[0], sockname[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{front}://{host}:{port}" + ("" if front == "tcp" else "/")


def front_handlers(sink: Sink, registry: ClientRegistry,
                   content_type: str | Callable[[], str],
                   header_timeout: float,
                   source_status: Callable[[], dict[str, Any] | None] | None = None,
                   *, video: BrowserVideo | None = None,
                   fronts: Mapping[str, str] | None = None,
                   gate: Gate | None = None,
                   metrics: SinkMetrics | None = None) -> dict[str, Handler]:
    """The ``trio.serve_tcp`` handler of each front, all feeding ``sink``;
    ``source_status`` gives the ``"source"`` object of ``/stats``;
    ``content_type`` labels HTTP ``/stream`` (a callable: asked for each
    response, so that the label follows the detected format). With
    ``video``, the WebSocket front serves its browser viewers on
    ``/video``; ``fronts`` (name → URL) tells the page where everything is.
    ``gate`` decides who may watch (docs/security.md), on every path;
    ``metrics`` is served at ``/metrics`` (an operator's path, as ``/stats``).
    """

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
                     video=video, fronts=fronts, gate=gate, metrics=metrics)
    routes = {}
    if video is not None:  # behind the outer front's gate: counted once
        routes[VIDEO_PATH] = WebSocketFront(video.sink, registry=registry, name="video")
    ws = WebSocketFront(sink, registry=registry, routes=routes, gate=gate)
    return {"tcp": tcp, "http": http.serve, "ws": ws.serve_stream}


def open_metrics(registry: ClientRegistry,
                 source_status: Callable[[], dict[str, Any] | None] | None,
                 ) -> SinkMetrics | None:
    """The process's ``/metrics`` (its Sink is assigned once it exists), or
    ``None`` when prometheus-client is not installed (then ``/metrics`` is
    a 404, as a resource that does not exist)."""
    try:
        from ..fronts.metrics import SinkMetrics
    except ImportError:
        logger.debug("prometheus-client is not installed: no /metrics")
        return None
    return SinkMetrics(registry=registry, source_status=source_status,
                       source_states=[state.value for state in SourceState], fronts=FRONTS)


def logging_callbacks(index: int, registry: ClientRegistry,
                      metrics: SinkMetrics | None = None) -> dict[str, Any]:
    """Sink callbacks that log each client event with the worker's number
    (and count it in ``metrics``)."""
    name = f"worker {index}"

    def added(stream: trio.abc.SendStream) -> None:
        if metrics is not None:
            metrics.client_added(stream)
        logger.info("%s: client added: %s", name, registry.describe(stream))

    def removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
        if metrics is not None:
            metrics.client_removed(stream, status)
        logger.info("%s: client removed (%s): %s", name, status.name, registry.describe(stream))

    return {"on_client_added": added, "on_client_removed": removed}
