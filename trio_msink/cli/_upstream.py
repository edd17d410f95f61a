"""Pulled network sources: ``tcp://HOST:PORT`` and ``http://HOST:PORT/PATH``
(h11 as the client), reconnected with backoff, with fallback origins.

Losing the upstream is not the end of the stream. After a loss the next
source in the list is tried at once (the same one when there is only one),
then each failed attempt moves on to the next; when every source failed
once in a row, the task waits :class:`Backoff`'s delay. While a fallback is
live, the first source is probed in the background (after 1 s, then 2, 4,
8 and every 10 s); when it answers with data, the relay switches back to it, handing
the probe's connection over so no byte of it is lost.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from urllib.parse import urljoin

import h11
import trio

from ._source_state import Backoff, SourceStatus
from ._sources import (
    READ_SIZE,
    Item,
    NetSpec,
    SourceError,
    Upstream,
    describe_error,
    log_change,
    parse_net_spec,
)

__all__ = ["Connection", "PullSource", "UpstreamError", "open_connection"]


# Seconds a connection attempt (TCP handshake, and for HTTP the response
# head) may take when --source-timeout is 0 (off).
_CONNECT_TIMEOUT = 10.0
_USER_AGENT = "trio-msink"
# Redirects followed per attempt (curl's --max-redirs default is 50, a
# browser's about 20; a stream URL that redirects more is misconfigured).
_MAX_REDIRECTS = 5
# Seconds a connection must have delivered data for its loss to be retried
# at once; one dropped sooner waits for the backoff schedule, so that an
# origin that accepts and drops at once is not hammered.
_STEADY = 1.0


class UpstreamError(Exception):
    """The upstream answered, but not with a stream (``HTTP 404 Not Found``)."""


class Connection:
    """One open upstream connection: :meth:`receive` gives its bytes, ``b""``
    at the end. ``first`` holds bytes already read (by a probe, or after an
    HTTP response head)."""

    def __init__(self, stream: trio.SocketStream, http: h11.Connection | None = None) -> None:
        self.stream = stream
        self.http = http
        self.first: list[bytes] = []

    async def receive(self) -> bytes:
        if self.first:
            return self.first.pop(0)
        if self.http is None:
            return bytes(await self.stream.receive_some(READ_SIZE))
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(bytes(await self.stream.receive_some(READ_SIZE)))
            elif isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return b""
            # trailers or other events carry no stream bytes

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def open_connection(spec: NetSpec, redirects: int = _MAX_REDIRECTS) -> Connection:
    """Connect to ``spec``; for HTTP, send ``GET PATH`` and read the response
    head, following up to ``redirects`` redirects to other ``http://`` URLs.
    Raises OSError, :exc:`UpstreamError` (an answer that is not a stream) or
    :exc:`h11.RemoteProtocolError`."""
    stream = await trio.open_tcp_stream(spec.host, spec.port)
    if spec.scheme == "tcp":
        return Connection(stream)
    try:
        http = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=spec.path, headers=[
            ("Host", spec.authority), ("User-Agent", _USER_AGENT), ("Accept", "*/*"),
            ("Connection", "close")])
        await stream.send_all((http.send(request) or b"") + (http.send(h11.EndOfMessage()) or b""))
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(bytes(await stream.receive_some(READ_SIZE)))
            elif isinstance(event, h11.Response):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamError("closed before answering")
            # 1xx informational responses: keep reading
        location = _redirect(spec, event)
        if location is None and event.status_code != 200:
            reason = event.reason.decode("ascii", "replace")
            raise UpstreamError(f"HTTP {event.status_code} {reason}".rstrip())
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    if location is None:
        return Connection(stream, http)
    await trio.aclose_forcefully(stream)
    if redirects <= 0:
        raise UpstreamError(f"too many redirects (last to {location.text})")
    return await open_connection(location, redirects - 1)


def _redirect(spec: NetSpec, response: h11.Response) -> NetSpec | None:
    """Where a redirect response sends us (``None``: not a redirect)."""
    if response.status_code not in (301, 302, 303, 307, 308):
        return None
    raw = dict(response.headers).get(b"location")
    if raw is None:
        raise UpstreamError(f"HTTP {response.status_code} without a Location")
    target = urljoin(spec.text, raw.decode("ascii", "replace"))
    try:
        return parse_net_spec(target, "redirect")
    except SourceError:
        raise UpstreamError(f"redirect to an unsupported URL: {target}") from None


# Failures of one attempt or one connection (anything else is a bug and
# propagates).
_FAILURES = (OSError, trio.TooSlowError, trio.BrokenResourceError, UpstreamError,
             h11.RemoteProtocolError, h11.LocalProtocolError)


class _Lost(Exception):
    pass


@dataclass
class _Handover:
    connection: Connection | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class PullSource:
    """Pull ``specs[0]`` (falling back to the others in turn) forever, or
    until ``max_attempts`` attempts in a row failed (then
    :exc:`SourceError`). ``timeout``: seconds of silence that count as a
    loss (0: never); ``rng`` draws the jitter."""

    def __init__(self, specs: list[NetSpec], *, timeout: float,
                 max_attempts: int | None = None, rng: random.Random | None = None) -> None:
        self.specs = specs
        self.timeout = timeout
        self.backoff = Backoff(max_attempts=max_attempts)
        self.status = SourceStatus(specs[0].text)
        self._random = rng if rng is not None else random.Random()
        # (source, reason) pairs already logged in the current outage
        self._failures_logged: set[tuple[str, str]] = set()

    def _deadline(self) -> float:
        return self.timeout if self.timeout > 0 else _CONNECT_TIMEOUT

    async def _connect(self, spec: NetSpec) -> Connection:
        with trio.fail_after(self._deadline()):
            return await open_connection(spec)

    async def listen(self) -> str | None:
        return None

    async def run(self, send: trio.MemorySendChannel[Item]) -> None:
        async with send:
            index = 0
            tried = 0  # failed attempts since the last loss, for the round
            handed: Connection | None = None
            while True:
                spec = self.specs[index]
                connection, handed = handed, None
                if connection is None:
                    log_change(self.status.connecting(spec.text, trio.current_time()))
                    try:
                        connection = await self._connect(spec)
                    except _FAILURES as exc:
                        connection = None
                        error = describe_error(exc)
                if connection is not None:
                    live_since, error, handed = await self._stream(spec, index, connection,
                                                                   send)
                    if handed is not None:
                        index = 0
                        continue
                    if live_since is not None:
                        now = trio.current_time()
                        log_change(self.status.lost(error, now))
                        if now - live_since >= _STEADY:  # a loss: the next try comes at once
                            tried = 0
                            index = (index + 1) % len(self.specs)
                            continue
                        # a source that keeps dropping us at once is tried on the schedule
                        tried = len(self.specs) - 1
                self._note_failure(spec, error)
                if not self.backoff.failed():
                    raise SourceError(f"SOURCE {spec.text}: gave up after "
                                      f"{self.backoff.failures} failed attempts ({error})")
                tried += 1
                index = (index + 1) % len(self.specs)
                if tried >= len(self.specs):  # every source failed once: wait
                    tried = 0
                    await trio.sleep(self.backoff.next_delay(trio.current_time(),
                                                             self._random.random()))

    def _note_failure(self, spec: NetSpec, error: str) -> None:
        """Log a failed attempt the first time each source fails that way in
        an outage (an outage of hours is not a line every 10 s)."""
        line = self.status.lost(error, trio.current_time())
        if line is None and (spec.text, error) not in self._failures_logged:
            line = f"source {spec.text}: {self.status.state.value} ({error})"
        self._failures_logged.add((spec.text, error))
        log_change(line)

    async def _stream(self, spec: NetSpec, index: int, connection: Connection,
                      send: trio.MemorySendChannel[Item],
                      ) -> tuple[float | None, str, Connection | None]:
        """Relay ``connection`` until it is lost or the first source is back.
        Returns (when it first delivered data, None if never; why it ended;
        the first source's connection if the probe took over)."""
        handover = _Handover()
        live: float | None = None
        error = "closed by the origin"
        try:
            async with trio.open_nursery() as nursery:
                if index > 0:
                    nursery.start_soon(self._probe, handover)
                with handover.scope:
                    try:
                        while True:
                            with trio.move_on_after(self.timeout or float("inf")) as wait:
                                data = await connection.receive()
                            if wait.cancelled_caught:
                                raise _Lost(f"no data for {self.timeout:g} s")
                            if not data:
                                raise _Lost("closed by the origin")
                            now = trio.current_time()
                            if live is None:
                                live = now
                                self.backoff.succeeded()
                                self._failures_logged.clear()
                                log_change(self.status.live(spec.text, now))
                                await send.send(Upstream(spec.text))
                            self.status.received(len(data), now)
                            await send.send(data)
                    except _Lost as exc:
                        error = str(exc)
                    except _FAILURES as exc:
                        error = describe_error(exc)
                nursery.cancel_scope.cancel()
        finally:
            await connection.aclose()  # forceful: also when cancelled
        if handover.connection is not None:
            log_change(f"source {self.specs[0].text}: back, switching to it")
        return live, error, handover.connection

    async def _probe(self, handover: _Handover) -> None:
        """While a fallback is live: try the first source now and then;
        once it sends data, hand its connection over and stop the fallback."""
        schedule = Backoff(fast_window=0.0)  # 1, 2, 4, 8, then every 10 s
        while True:
            await trio.sleep(schedule.next_delay(trio.current_time(), self._random.random()))
            try:
                connection = await self._connect(self.specs[0])
            except _FAILURES:
                continue
            try:
                with trio.fail_after(self._deadline()):
                    data = await connection.receive()
            except _FAILURES:
                data = b""
            except BaseException:  # cancelled: the fallback ended first
                await connection.aclose()
                raise
            if not data:
                await connection.aclose()
                continue
            connection.first.append(data)
            handover.connection = connection
            handover.scope.cancel()
            return
