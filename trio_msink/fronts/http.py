"""HTTP front: serve a sink's stream, its stats and a stats page over HTTP/1.1.

One request per connection, parsed with h11 (the protocol state machine; the
I/O is here):

* ``GET /stream`` → ``200`` with ``Content-Type`` (default ``video/mp2t``),
  ``Connection: close`` and neither ``Content-Length`` nor
  ``Transfer-Encoding``: the body is close-delimited (RFC 9112, section 6.3, rule 8)
  and *is* the stream. After the response head the connection itself is
  handed to :meth:`Sink.serve`, so buffers go out as raw bytes (one
  ``writev`` for many buffers on a plain TCP socket), with every limit and
  policy of the sink.
* ``GET /stats`` → the sink's counters and every registered client as JSON
  (:func:`stats_document`); ``?summary=1`` gives counts, totals and the lag
  distribution instead of the rows, ``?offset=N&limit=M`` a page of rows
  (these two forms are shared between requests for half a second).
* ``GET /time`` → ``{"time": ms}``: the server's clock (milliseconds since
  the epoch), for the page's latency estimate.
* ``GET /`` → the live page (``/page.js``, ``/page.css`` beside it): the
  video, when a :class:`~trio_msink.fronts.browser.BrowserVideo` is given,
  and the numbers, charts and viewers from ``/stats``.
* ``GET /metrics`` → the Prometheus text format, when the front is given a
  :class:`~trio_msink.fronts.metrics.SinkMetrics` (else 404).
* ``HEAD`` on the same paths → the same headers without a body.
* unknown path → 404, other methods → 405, a malformed request → 400 (or
  h11's more precise hint, e.g. 431 for oversized headers). The connection
  is closed after every response.

Use it as a ``trio.serve_tcp`` handler::

    async with Sink() as sink, trio.open_nursery() as nursery:
        front = HttpFront(sink)
        nursery.start_soon(trio.serve_tcp, front.serve, 8080)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import h11
import trio

from .. import ClientStatus, Sink
from . import ClientRegistry, peer_address
from ._access import Front, Gate, Refusal, Role, host_of
from ._h11 import lingering_close, read_request
from ._page import ASSETS, asset, fill_page
from ._stats_document import StatsQuery, stats_document

if TYPE_CHECKING:
    from .browser import BrowserVideo
    from .metrics import SinkMetrics

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_RESPONSE_TIMEOUT",
    "HttpFront",
    "render_page",
    "stats_document",
]

logger = logging.getLogger("trio_msink.fronts.http")

# Seconds a client gets to send its whole request head. Precedents: nginx
# client_header_timeout 60 s, Apache mod_reqtimeout 20-40 s, node.js
# headersTimeout 60 s. Ours is shorter because a legitimate client here is a
# player or a monitoring tool that sends one small GET in one packet; every
# connection that dawdles holds a socket, and a slow one never delays others.
DEFAULT_HEADER_TIMEOUT = 10.0
# Seconds a non-stream response (stats, page, errors) may take to go out
# before the connection is dropped; a client that does not read is not ours
# to wait for.
DEFAULT_RESPONSE_TIMEOUT = 10.0
# Largest request head accepted. h11's own default is 16 KiB; precedents:
# node.js 16 KiB, tomcat 8 KiB, nginx 8 KiB per line (large_client_header_buffers).
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
# Seconds a summary or paged /stats answer is shared between requests: the
# live page asks for those once a second each when there are many clients,
# so with 1,000 pages open the document is built twice a second, not 1,000
# times (each build reads every client's stats). The full form is not
# shared: it is what scripts read right after a change.
_STATS_SHARED_SECONDS = 0.5
_STATS_SHARED_ENTRIES = 32


def _reason(status: int) -> bytes:
    """The standard reason phrase of ``status`` (h11 sends none unless given)."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:  # a code with no registered phrase: the phrase is optional
        return b""


class HttpFront:
    """Serve one HTTP request per connection: the stream, stats, a page.

    ``serve(stream)`` is the per-connection handler (for ``trio.serve_tcp``
    or any ``trio.abc.Stream``). A client that has not sent its complete
    request head within ``header_timeout`` seconds is dropped without a
    response; other clients are not affected. Streaming clients are
    registered in ``registry`` (created if not given; share one between
    fronts to see every client on ``/stats``) under the front's ``name``.

    ``content_type`` is sent with ``/stream``: a string, or a callable
    returning one, called for each response (for a label that follows the
    stream, e.g. a format detected after start-up); ``stream_path``,
    ``stats_path``, ``time_path`` and ``page_path`` name the resources (the
    page's script and style sheet are beside ``page_path``). Timeouts are
    seconds; ``max_header_size`` is bytes (oversized heads get 431).
    ``source_status``, if given, returns the ``"source"`` object of
    ``/stats`` and the page (see :func:`stats_document`); ``video`` is the
    browser viewers' video (its status on ``/stats``, its viewers in the
    table) and ``fronts`` maps front names to the URLs they listen on
    (``"video"``: the WebSocket URL the page plays), for the page.
    ``gate`` (a ``Gate`` of ``trio_msink.fronts._access``, default none)
    decides who may make which request (tokens, the viewers' limits; see
    docs/security.md): a refused request gets its 401, 403 or 503.
    ``metrics``, if given, is served at ``metrics_path`` (see
    docs/fronts.md).
    Raises :exc:`ValueError` for a negative timeout or a non-positive size,
    :exc:`TypeError` for a ``content_type`` that is neither a string nor
    callable.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        registry: ClientRegistry | None = None,
        name: str = "http",
        content_type: str | Callable[[], str] = "video/mp2t",
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        stream_path: str = "/stream",
        stats_path: str = "/stats",
        page_path: str = "/",
        source_status: Callable[[], dict[str, Any] | None] | None = None,
        video: BrowserVideo | None = None,
        fronts: Mapping[str, str] | None = None,
        time_path: str = "/time",
        gate: Gate | None = None,
        metrics: SinkMetrics | None = None,
        metrics_path: str = "/metrics",
    ) -> None:
        if header_timeout < 0 or response_timeout < 0:
            raise ValueError("timeouts must be >= 0 seconds")
        if max_header_size <= 0:
            raise ValueError("max_header_size must be > 0")
        if not isinstance(content_type, str) and not callable(content_type):
            raise TypeError("content_type must be a str or a callable returning one, "
                            f"not {type(content_type).__name__}")
        self.sink = sink
        self.registry = registry if registry is not None else ClientRegistry()
        self.name = name
        self.content_type = content_type
        self.header_timeout = float(header_timeout)
        self.response_timeout = float(response_timeout)
        self.max_header_size = max_header_size
        self.stream_path = stream_path
        self.stats_path = stats_path
        self.page_path = page_path
        self.source_status = source_status
        self.video = video
        self.fronts = dict(fronts) if fronts is not None else None
        self.time_path = time_path
        base = page_path.rstrip("/")
        self._assets = {f"{base}/{name}": name for name in ASSETS}
        self._shared: dict[StatsQuery, tuple[float, bytes]] = {}
        self.gate = gate
        self.metrics = metrics
        self.metrics_path = metrics_path
        # Validate once so a bad content type fails here, not per request.
        _stream_head(self._stream_headers())

    async def serve(self, stream: trio.abc.Stream) -> ClientStatus | None:
        """Handle one connection and close it.

        Returns the client's final :class:`ClientStatus` for a ``GET
        /stream`` that was served, else ``None``. Never raises for anything
        the peer does (resets, garbage, timeouts); those are logged at debug
        level. Cancellation propagates as usual (and removes a streaming
        client from the sink).
        """
        try:
            return await self._handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            logger.debug("HTTP connection %r ended: %r", stream, exc)
            return None
        except Exception:
            logger.exception("HTTP front: unexpected error on %r", stream)
            return None
        finally:
            await trio.aclose_forcefully(stream)

    # -- request --------------------------------------------------------------
    async def _handle(self, stream: trio.abc.Stream) -> ClientStatus | None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_size)
        request: h11.Request | None = None
        with trio.move_on_after(self.header_timeout) as scope:
            try:
                request = await read_request(conn, stream)
            except h11.RemoteProtocolError as exc:
                await self._send_error(conn, stream, exc.error_status_hint, str(exc))
                return None
        if scope.cancelled_caught:
            logger.debug("dropping %r: no request head within %s s", stream, self.header_timeout)
            return None
        if request is None:  # the peer closed before sending a request
            return None
        path, _, query = request.target.decode("ascii", "replace").partition("?")
        head = request.method == b"HEAD"
        known = {self.stream_path, self.stats_path, self.page_path, self.time_path}
        if self.metrics is not None:
            known.add(self.metrics_path)
        if path not in known and path not in self._assets:
            await self._send_error(conn, stream, 404, f"no resource at {path}", head=head)
            return None
        if request.method not in (b"GET", b"HEAD"):
            await self._send_error(conn, stream, 405, "only GET and HEAD are allowed",
                                   [("Allow", "GET, HEAD")])
            return None
        with self._enter(stream, path, request) as refusal:
            if refusal is not None:
                await self._send_error(conn, stream, refusal.status, refusal.message,
                                       list(refusal.headers), head=head)
                return None
            return await self._respond(conn, stream, path, query, head, _accept(request))

    def _enter(self, stream: trio.abc.Stream, path: str,
               request: h11.Request) -> AbstractContextManager[Refusal | None]:
        """The gate's verdict on a request (docs/security.md): the operator's
        paths (``/stats``, the page, ``/metrics``) need the operator's token,
        the stream is a viewer's; other resources (static files, the clock)
        hold no data and are public."""
        if path in {self.stats_path, self.page_path, self.metrics_path}:
            role = Role.OPERATOR
        elif path == self.stream_path:
            role = Role.VIEWER
        else:
            return nullcontext(None)
        if self.gate is None:
            return nullcontext(None)
        return self.gate.enter(Front.HTTP, role, host_of(peer_address(stream)),
                               request.target, request.headers)

    async def _respond(self, conn: h11.Connection, stream: trio.abc.Stream, path: str,
                       query: str, head: bool, accept: str = "") -> ClientStatus | None:
        if path == self.stream_path:
            return await self._serve_stream(stream, head)
        if path == self.metrics_path and self.metrics is not None:
            body, content_type = self.metrics.render(accept)
            await self._send_simple(conn, stream, 200, body, content_type, head=head)
            return None
        if path == self.stats_path:
            try:
                stats_query = StatsQuery.parse(dict(parse_qsl(query)))
            except ValueError as exc:
                await self._send_error(conn, stream, 400, str(exc), head=head)
                return None
            body = self._stats_body(stats_query)
            await self._send_simple(conn, stream, 200, body, "application/json", head=head)
        elif path == self.time_path:
            body = json.dumps({"time": time.time() * 1000.0}).encode()
            await self._send_simple(conn, stream, 200, body, "application/json", head=head)
        elif path in self._assets:
            name = self._assets[path]
            await self._send_simple(conn, stream, 200, asset(name), ASSETS[name], head=head)
        else:
            source = self.source_status() if self.source_status is not None else None
            body = render_page(self.sink, self.registry, self.stats_path, source,
                               video=self.video, fronts=self.fronts, time_path=self.time_path,
                               stream_path=self.stream_path, page_path=self.page_path).encode()
            await self._send_simple(conn, stream, 200, body, "text/html; charset=utf-8",
                                    head=head)
        return None

    def _stats_body(self, query: StatsQuery) -> bytes:
        shared = query.summary or query.offset > 0 or query.limit is not None
        now = trio.current_time()
        if shared and (hit := self._shared.get(query)) and now - hit[0] < _STATS_SHARED_SECONDS:
            return hit[1]
        source = self.source_status() if self.source_status is not None else None
        body = json.dumps(stats_document(self.sink, self.registry, source, video=self.video,
                                         fronts=self.fronts, query=query)).encode()
        if shared:
            if len(self._shared) >= _STATS_SHARED_ENTRIES:
                self._shared.clear()
            self._shared[query] = (now, body)
        return body

    # -- /stream -----------------------------------------------------------------
    def _stream_headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", (self.content_type if isinstance(self.content_type, str)
                              else self.content_type())),
            ("Cache-Control", "no-cache, no-store"),
            ("Connection", "close"),
        ]

    async def _serve_stream(self, stream: trio.abc.Stream, head: bool) -> ClientStatus | None:
        with trio.move_on_after(self.response_timeout) as scope:
            await stream.send_all(_stream_head(self._stream_headers()))
        if scope.cancelled_caught or head:
            return None
        with self.registry.registered(stream, self.name, peer_address(stream)):
            return await self.sink.serve(stream)

    # -- simple responses ------------------------------------------------------------
    async def _send_simple(
        self,
        conn: h11.Connection,
        stream: trio.abc.Stream,
        status: int,
        body: bytes,
        content_type: str,
        extra: list[tuple[str, str]] | None = None,
        *,
        head: bool = False,
    ) -> None:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            *(extra or []),
        ]
        data = conn.send(h11.Response(status_code=status, headers=headers,
                                      reason=_reason(status))) or b""
        if not head:  # h11 knows a HEAD response has no body and would refuse one
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        with trio.move_on_after(self.response_timeout):
            await stream.send_all(data)

    async def _send_error(
        self,
        conn: h11.Connection,
        stream: trio.abc.Stream,
        status: int,
        message: str,
        extra: list[tuple[str, str]] | None = None,
        *,
        head: bool = False,
    ) -> None:
        # After a protocol error h11 still lets a server answer, as long as it
        # has not started a response (states IDLE / SEND_RESPONSE).
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{status} {message}\n".encode("utf-8", "replace")
        await self._send_simple(conn, stream, status, body, "text/plain; charset=utf-8", extra,
                                head=head)
        await lingering_close(stream)


def _accept(request: h11.Request) -> str:
    """The request's ``Accept`` header (every one of them, joined)."""
    return ", ".join(value.decode("latin-1") for name, value in request.headers
                     if name == b"accept")


def _stream_head(headers: list[tuple[str, str]]) -> bytes:
    """The ``/stream`` response head, close-delimited.

    h11 validates the response (header names and values), but would frame a
    body of unknown length to an HTTP/1.1 peer as ``Transfer-Encoding:
    chunked``; the stream must be raw bytes that the sink writes itself, so
    the head is serialized here, without any framing header.
    """
    response = h11.Response(status_code=200, headers=headers, reason=b"OK")
    lines = [b"HTTP/1.1 200 OK\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in response.headers.raw_items()]
    lines.append(b"\r\n")
    return b"".join(lines)


# -- the page -----------------------------------------------------------------------
# Over this many clients the page starts from the summary and one page of rows.
_PAGE_MANY_CLIENTS = 100
_PAGE_ROWS = 50


def render_page(sink: Sink, registry: ClientRegistry, stats_path: str = "/stats",
                source: dict[str, Any] | None = None, *,
                video: BrowserVideo | None = None, fronts: Mapping[str, str] | None = None,
                time_path: str = "/time", stream_path: str = "/stream",
                page_path: str = "/") -> str:
    """The live page (``trio_msink/fronts/page/index.html``), filled with
    the current numbers; its script (``page.js``, served beside it) keeps
    them up to date from ``stats_path`` and plays ``video`` when given.

    Element ids: ``num_handles``, ``bytes_to_serve``, ``bytes_served``,
    ``buffers_queued`` (one ``<td>`` each, in ``table#sink-stats``); client
    rows are ``tbody#client-rows > tr`` with one ``td.<field>`` per column;
    the source (``table#source-stats``, hidden without ``source``) has one
    ``td#source-<field>`` per field of :func:`stats_document`'s ``source``.
    With many clients the page starts from the summary and the first rows.
    """
    query = StatsQuery(summary=True, limit=_PAGE_ROWS) if len(registry) > _PAGE_MANY_CLIENTS \
        else None
    doc = stats_document(sink, registry, source, video=video, fronts=fronts, query=query)
    return fill_page(doc, stats_path=stats_path, time_path=time_path, stream_path=stream_path,
                     asset_base=page_path.rstrip("/"))
