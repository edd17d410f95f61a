"""Push ingest: an encoder connects to us and sends the stream.

* ``--ingest tcp://HOST:PORT``: the publisher's bytes are the stream
  (``ffmpeg -re -i in.mp4 -c copy -f mpegts tcp://HOST:PORT``).
* ``--ingest http://HOST:PORT/PATH``: a ``PUT`` or ``POST`` to PATH whose
  body (chunked, close-delimited or with a Content-Length; parsed by h11)
  is the stream (``ffmpeg ... -method PUT -f mpegts http://HOST:PORT/PATH``,
  ``curl -T - http://HOST:PORT/PATH``). ``Expect: 100-continue`` is
  answered; the final ``200`` comes when the body ends. Icecast's older
  ``SOURCE`` method gets its ``200`` at once and streams until it closes.
  No credentials are checked: listen where only the encoders reach.

One publisher at a time: while one is live, another is refused at once
(TCP: closed without reading; HTTP: ``409 Conflict`` with the reason) and
the refusal is logged. A publisher that leaves, or stays silent for
``--source-timeout`` seconds, ends its upstream only: the clients stay and
get the next publisher's stream, after its headers and a keyframe.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import h11
import trio

from ..fronts import peer_address
from ..fronts._h11 import lingering_close, read_request
from ._source_state import SourceState, SourceStatus
from ._sources import READ_SIZE, Item, NetSpec, Upstream, describe_error, listen_error, log_change

__all__ = ["IngestSource"]

logger = logging.getLogger("trio_msink.cli")

# Seconds a publisher has to send its HTTP request head (as the HTTP front's
# DEFAULT_HEADER_TIMEOUT: an encoder sends one small head at once).
_HEADER_TIMEOUT = 10.0
_MAX_HEADER_SIZE = 16 * 1024


class IngestSource:
    """Accept one publisher at a time on ``spec``; ``timeout``: seconds of
    silence after which a publisher is dropped (0: never)."""

    def __init__(self, spec: NetSpec, *, timeout: float) -> None:
        self.spec = spec
        self.timeout = timeout
        self.status = SourceStatus(f"ingest {spec.text}", SourceState.WAITING)
        self.listeners: list[trio.SocketListener] = []
        self._publisher: str | None = None
        self._send: trio.MemorySendChannel[Item] | None = None

    async def listen(self) -> str | None:
        """Open the listening sockets; returns the URL publishers use.
        Raises :exc:`CommandError` naming ``--ingest`` if that fails."""
        try:
            self.listeners = await trio.open_tcp_listeners(self.spec.port, host=self.spec.host)
        except OSError as exc:
            raise listen_error(f"--ingest {self.spec.text}", exc) from exc
        host, port = self.listeners[0].socket.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        url = f"{self.spec.scheme}://{host}:{port}{self.spec.path}"
        self.status.spec = f"ingest {url}"  # the real port, when asked for 0
        return url

    async def run(self, send: trio.MemorySendChannel[Item]) -> None:
        if not self.listeners:
            await self.listen()
        self._send = send
        log_change(f"source {self.status.spec}: {SourceState.WAITING.value}")
        async with send:
            handler = self._tcp if self.spec.scheme == "tcp" else self._http
            await trio.serve_listeners(handler, self.listeners)

    # -- the publisher ----------------------------------------------------------------
    def _claim(self, address: str) -> str | None:
        """Take the publisher slot; returns the live publisher if it is taken."""
        if self._publisher is not None:
            return self._publisher
        self._publisher = address
        return None

    async def _relay(self, address: str, receive: Callable[[], Awaitable[bytes | None]],
                     ) -> None:
        """Forward the publisher's bytes until it ends (``receive`` returns
        None); then the clients wait for the next publisher."""
        assert self._send is not None
        error = f"publisher {address} left"
        try:
            data: bytes | None = b""
            live = False
            while True:
                if data:
                    now = trio.current_time()
                    if not live:
                        live = True
                        log_change(self.status.live(self.status.spec, now, address))
                        await self._send.send(Upstream(self.status.spec, address))
                    self.status.received(len(data), now)
                    await self._send.send(data)
                with trio.move_on_after(self.timeout or float("inf")) as wait:
                    data = await receive()
                if wait.cancelled_caught:
                    error = f"publisher {address} silent for {self.timeout:g} s"
                    return
                if data is None:
                    return
        except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
            error = f"publisher {address}: {describe_error(exc)}"
        finally:
            self._publisher = None
            log_change(self.status.lost(error, trio.current_time(), push=True))

    async def _tcp(self, stream: trio.SocketStream) -> None:
        address = peer_address(stream) or "?"
        async with stream:
            busy = self._claim(address)
            if busy is not None:
                logger.info("ingest: refused %s: publisher %s is live", address, busy)
                return

            async def receive() -> bytes | None:
                return bytes(await stream.receive_some(READ_SIZE)) or None

            await self._relay(address, receive)

    async def _http(self, stream: trio.SocketStream) -> None:
        address = peer_address(stream) or "?"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_SIZE)
        async with stream:
            try:
                with trio.fail_after(_HEADER_TIMEOUT):
                    request = await read_request(conn, stream, READ_SIZE)
                if request is None:
                    return
                path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
                if path != self.spec.path:
                    await _answer(conn, stream, 404, f"no ingest at {path}; use {self.spec.path}")
                    return
                if request.method not in (b"PUT", b"POST", b"SOURCE"):
                    await _answer(conn, stream, 405, "publish with PUT or POST",
                                  [("Allow", "PUT, POST, SOURCE")])
                    return
                busy = self._claim(address)
                if busy is not None:
                    logger.info("ingest: refused %s: publisher %s is live", address, busy)
                    await _answer(conn, stream, 409, f"another publisher ({busy}) is live")
                    await _drain(stream)
                    return
                if request.method == b"SOURCE":
                    # Icecast's older source protocol: the client streams
                    # after a 200, with a body that runs until it closes.
                    await _answer(conn, stream, 200, "send the stream")
                elif conn.they_are_waiting_for_100_continue:
                    await stream.send_all(conn.send(h11.InformationalResponse(
                        status_code=100, headers=[])) or b"")
            except (OSError, trio.BrokenResourceError, trio.TooSlowError,
                    h11.RemoteProtocolError) as exc:
                logger.debug("ingest: %s: %s", address, describe_error(exc))
                if self._publisher == address:
                    self._publisher = None
                return

            async def receive() -> bytes | None:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))
                    elif isinstance(event, h11.Data):
                        if event.data:
                            return bytes(event.data)
                    elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        return None

            if _close_delimited(request):
                # A request body without a length (ffmpeg -chunked_post 0,
                # HTTP/1.0 source clients) runs until the publisher closes;
                # HTTP/1.1 says such a request has no body, so h11 would
                # stop here: read the connection itself from the head on.
                pending = [conn.trailing_data[0]]

                async def receive() -> bytes | None:
                    if pending:
                        data = pending.pop()
                        if data:
                            return data
                    return bytes(await stream.receive_some(READ_SIZE)) or None

            await self._relay(address, receive)
            if conn.their_state is h11.DONE and conn.our_state is h11.SEND_RESPONSE:
                with contextlib.suppress(OSError, trio.BrokenResourceError):
                    await _answer(conn, stream, 200, "stream received")


def _close_delimited(request: h11.Request) -> bool:
    """True for a request whose body has no declared length."""
    names = {name for name, _ in request.headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


async def _answer(conn: h11.Connection, stream: trio.SocketStream, status: int, text: str,
                  extra: list[tuple[str, str]] | None = None) -> None:
    body = f"{status} {text}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body))), ("Connection", "close"), *(extra or [])]
    reason = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed",
              409: b"Conflict"}.get(status, b"")
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
    data += (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    with trio.move_on_after(_HEADER_TIMEOUT):
        await stream.send_all(data)


async def _drain(stream: trio.SocketStream) -> None:
    """After refusing a publisher that may already be sending: a lingering
    close bounded to 1 s and 1 MiB, whatever the stream raises meanwhile."""
    with contextlib.suppress(OSError, trio.BrokenResourceError):
        await lingering_close(stream, seconds=1.0, max_bytes=1 << 20, receive_size=READ_SIZE)
