"""HTTP front: serve a sink's stream, its stats and a stats page over HTTP/1.1.

One request per connection, parsed with h11 (the protocol state machine; the
I/O is here):

* ``GET /stream`` → ``200`` with ``Content-Type`` (default ``video/mp2t``),
  ``Connection: close`` and neither ``Content-Length`` nor
  ``Transfer-Encoding``: the body is close-delimited (RFC 9112 §6.3 rule 8)
  and *is* the stream. After the response head the connection itself is
  handed to :meth:`Sink.serve`, so buffers go out as raw bytes (one
  ``writev`` for many buffers on a plain TCP socket), with every limit and
  policy of the sink.
* ``GET /stats`` → the sink's counters and every registered client as JSON.
* ``GET /`` → a small HTML page that polls ``/stats`` every second.
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

import dataclasses
import html
import json
import logging
import string
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from http import HTTPStatus
from typing import Any

import h11
import trio

from .. import ClientStatus, Sink
from . import ClientRegistry, peer_address
from ._access import Front, Gate, Refusal, Role, host_of

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
# Bytes asked for per read while parsing a request head.
_RECEIVE_SIZE = 4096
# Lingering close after an error response (see _lingering_close).
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1024 * 1024


def stats_document(sink: Sink, registry: ClientRegistry,
                   source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``/stats`` JSON document: ``{"sink": {...}, "clients": [...]}``,
    plus ``"source": {...}`` when ``source`` is given.

    ``sink`` holds the four fields of :meth:`Sink.statistics`
    (``num_handles``, ``bytes_to_serve``, ``bytes_served``,
    ``buffers_queued``); ``clients`` is :meth:`ClientRegistry.snapshot`.
    ``source`` is where the stream comes from, as the server reports it
    (``trio-msink serve``: ``spec``, ``state``, ``uptime`` in seconds,
    ``bytes_in``, ``bitrate_in`` in bits per second, ``reconnects``,
    ``last_error``).
    """
    doc: dict[str, Any] = {
        "sink": dataclasses.asdict(sink.statistics()),
        "clients": registry.snapshot(sink),
    }
    if source is not None:
        doc["source"] = source
    return doc


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

    ``content_type`` is sent with ``/stream``; ``stream_path``,
    ``stats_path`` and ``page_path`` name the three resources. Timeouts are
    seconds; ``max_header_size`` is bytes (oversized heads get 431).
    ``source_status``, if given, returns the ``"source"`` object of
    ``/stats`` and the page (see :func:`stats_document`).
    ``gate`` (a ``Gate`` of ``trio_msink.fronts._access``, default none)
    decides who may make which request (tokens, the viewers' limits; see
    docs/security.md): a refused request gets its 401, 403 or 503.
    Raises :exc:`ValueError` for a negative timeout or a non-positive size.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        registry: ClientRegistry | None = None,
        name: str = "http",
        content_type: str = "video/mp2t",
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        stream_path: str = "/stream",
        stats_path: str = "/stats",
        page_path: str = "/",
        source_status: Callable[[], dict[str, Any] | None] | None = None,
        gate: Gate | None = None,
    ) -> None:
        if header_timeout < 0 or response_timeout < 0:
            raise ValueError("timeouts must be >= 0 seconds")
        if max_header_size <= 0:
            raise ValueError("max_header_size must be > 0")
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
        self.gate = gate
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
                request = await _read_request(conn, stream)
            except h11.RemoteProtocolError as exc:
                await self._send_error(conn, stream, exc.error_status_hint, str(exc))
                return None
        if scope.cancelled_caught:
            logger.debug("dropping %r: no request head within %s s", stream, self.header_timeout)
            return None
        if request is None:  # the peer closed before sending a request
            return None
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        head = request.method == b"HEAD"
        if path not in {self.stream_path, self.stats_path, self.page_path}:
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
            return await self._respond(conn, stream, path, head)

    def _enter(self, stream: trio.abc.Stream, path: str,
               request: h11.Request) -> AbstractContextManager[Refusal | None]:
        """The gate's verdict on a request (docs/security.md): the operator's
        paths need the operator's token, the stream is a viewer's; other
        resources (static files, the clock) hold no data and are public."""
        if path in {self.stats_path, self.page_path}:
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
                       head: bool) -> ClientStatus | None:
        if path == self.stream_path:
            return await self._serve_stream(stream, head)
        if path == self.stats_path:
            source = self.source_status() if self.source_status is not None else None
            body = json.dumps(stats_document(self.sink, self.registry, source)).encode()
            await self._send_simple(conn, stream, 200, body, "application/json", head=head)
        else:
            source = self.source_status() if self.source_status is not None else None
            body = render_page(self.sink, self.registry, self.stats_path, source).encode()
            await self._send_simple(conn, stream, 200, body, "text/html; charset=utf-8",
                                    head=head)
        return None

    # -- /stream -----------------------------------------------------------------
    def _stream_headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.content_type),
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
        await _lingering_close(stream)


async def _lingering_close(stream: trio.abc.Stream) -> None:
    """Half-close, then read and discard what the peer still sends, briefly.

    After an error response the peer may still be sending (a request body, an
    oversized head); closing with unread data makes the kernel send a reset,
    which can destroy the response before the peer reads it. Apache calls
    this a lingering close (2 s per read, 30 s at most); ours is bounded
    by ``_LINGER_SECONDS`` and ``_LINGER_BYTES`` in total.
    """
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return
    with trio.move_on_after(_LINGER_SECONDS):
        await stream.send_eof()
        left = _LINGER_BYTES
        while left > 0 and (data := await stream.receive_some(_RECEIVE_SIZE)):
            left -= len(data)


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Request | None:
    """Feed ``conn`` until it yields a request head; ``None`` if the peer
    closed first. Raises :exc:`h11.RemoteProtocolError` for a bad request."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
        elif isinstance(event, h11.Request):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:  # nothing else can come before a request head
            raise h11.RemoteProtocolError(f"unexpected {event!r}", error_status_hint=400)


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
# (JSON key and element id, column label)
_SINK_FIELDS = (("num_handles", "clients"), ("bytes_to_serve", "bytes to serve"),
                ("bytes_served", "bytes served"), ("buffers_queued", "buffers queued"))
_SOURCE_FIELDS = (("spec", "source"), ("state", "state"), ("uptime", "uptime (s)"),
                  ("bytes_in", "bytes in"), ("bitrate_in", "bitrate in (bit/s)"),
                  ("reconnects", "reconnects"), ("last_error", "last error"))
_CLIENT_FIELDS = (("address", "address"), ("front", "front"), ("status", "status"),
                  ("bytes_sent", "bytes sent"), ("lag_buffers", "lag (buffers)"),
                  ("lag_bytes", "lag (bytes)"), ("buffers_dropped", "dropped"))

_PAGE = string.Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>trio_msink</title>
<style>body { font-family: sans-serif; margin: 2em; } table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; } td { text-align: right; }</style>
</head>
<body>
<h1>trio_msink</h1>
<p>JSON: <a href="$stats_path">$stats_path</a> &middot;
<span id="updated">not updated yet</span></p>
<table id="source-stats"$source_hidden>
$source_rows
</table>
<table id="sink-stats">
$sink_rows
</table>
<table id="clients">
<thead><tr>$client_head</tr></thead>
<tbody id="client-rows">
$client_rows
</tbody>
</table>
<script>
const STATS_URL = $stats_url;
const SINK_FIELDS = $sink_fields;
const CLIENT_FIELDS = $client_fields;
const SOURCE_FIELDS = $source_fields;
// The page was opened with the operator's ?token= (docs/security.md): pass it on.
function withToken(url) {
  const token = new URLSearchParams(location.search).get("token");
  return token ? url + "?token=" + encodeURIComponent(token) : url;
}
async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const response = await fetch(withToken(STATS_URL), {cache: "no-store"});
    const stats = await response.json();
    for (const key of SINK_FIELDS) {
      document.getElementById(key).textContent = stats.sink[key];
    }
    if (stats.source) {
      document.getElementById("source-stats").hidden = false;
      for (const key of SOURCE_FIELDS) {
        const value = stats.source[key];
        document.getElementById("source-" + key).textContent = value === null ? "" : value;
      }
    }
    const rows = stats.clients.map((client) => {
      const tr = document.createElement("tr");
      for (const key of CLIENT_FIELDS) {
        const td = document.createElement("td");
        td.className = key;
        td.textContent = client[key] === null ? "" : client[key];
        tr.appendChild(td);
      }
      return tr;
    });
    document.getElementById("client-rows").replaceChildren(...rows);
    updated.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    updated.textContent = "stats unavailable: " + error;
  }
}
setInterval(refresh, 1000);
refresh();
</script>
</body>
</html>
""")


def _js_literal(value: object) -> str:
    # JSON is a JS literal, safe inside <script> once "</" cannot end the tag.
    return json.dumps(value).replace("</", "<\\/")


def render_page(sink: Sink, registry: ClientRegistry, stats_path: str = "/stats",
                source: dict[str, Any] | None = None) -> str:
    """The stats page, filled with the current numbers.

    Element ids: ``num_handles``, ``bytes_to_serve``, ``bytes_served``,
    ``buffers_queued`` (one ``<td>`` each, in ``table#sink-stats``); client
    rows are ``tbody#client-rows > tr`` with one ``td.<field>`` per column;
    the source (``table#source-stats``, hidden without ``source``) has one
    ``td#source-<field>`` per field of :func:`stats_document`'s ``source``.
    The inline script refreshes them from ``stats_path`` every second.
    """
    doc = stats_document(sink, registry, source)
    esc = html.escape
    sink_rows = "\n".join(
        f'<tr><th>{esc(label)}</th><td id="{key}">{doc["sink"][key]}</td></tr>'
        for key, label in _SINK_FIELDS
    )
    source_doc: dict[str, Any] = doc.get("source") or {}
    source_rows = "\n".join(
        f'<tr><th>{esc(label)}</th><td id="source-{key}">'
        f'{esc("" if source_doc.get(key) is None else str(source_doc[key]))}</td></tr>'
        for key, label in _SOURCE_FIELDS
    )
    client_rows = "\n".join(
        "<tr>" + "".join(
            f'<td class="{key}">{esc("" if row[key] is None else str(row[key]))}</td>'
            for key, _ in _CLIENT_FIELDS
        ) + "</tr>"
        for row in doc["clients"]
    )
    js = _js_literal
    return _PAGE.substitute(
        stats_path=esc(stats_path),
        stats_url=js(stats_path),
        sink_fields=js([key for key, _ in _SINK_FIELDS]),
        client_fields=js([key for key, _ in _CLIENT_FIELDS]),
        source_fields=js([key for key, _ in _SOURCE_FIELDS]),
        source_rows=source_rows,
        source_hidden="" if source_doc else " hidden",
        sink_rows=sink_rows,
        client_head="".join(f"<th>{esc(label)}</th>" for _, label in _CLIENT_FIELDS),
        client_rows=client_rows,
    )
