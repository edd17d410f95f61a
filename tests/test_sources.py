"""Sources that survive: the reconnect schedule and the source state (pure,
time passed in), source specs, and pulled sources (tcp://, http://) against
real origins on 127.0.0.1: reconnect, fallback and return, silence, HTTP
bodies of every framing."""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import math
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from _relaying import Collector, free_port, until
from _server import COMMAND, run_server

from trio_msink.cli import _upstream
from trio_msink.cli._errors import CommandError
from trio_msink.cli._source_state import Backoff, SourceState, SourceStatus
from trio_msink.cli._sources import (
    Item,
    NetSpec,
    SourceError,
    Upstream,
    describe_error,
    open_source,
    parse_net_spec,
)
from trio_msink.cli._upstream import Connection, PullSource


# -- the reconnect schedule ----------------------------------------------------------------
def test_backoff_retries_every_half_second_at_first_then_doubles_to_ten() -> None:
    backoff = Backoff(jitter=0.0)
    now, delays = 0.0, []
    while now < 60:
        delay = backoff.next_delay(now, 0.0)
        delays.append(delay)
        now += delay
    fast = [d for d in delays if d == 0.5]
    assert len(fast) == 20  # the first 10 s of the outage
    assert delays[20:25] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert max(delays) == 10.0


def test_backoff_jitter_shortens_each_delay_by_at_most_half() -> None:
    backoff = Backoff()
    assert backoff.next_delay(0.0, 0.0) == 0.5
    assert backoff.next_delay(0.1, 0.999) == pytest.approx(0.25, abs=0.001)


def test_backoff_starts_over_after_a_success() -> None:
    backoff = Backoff(jitter=0.0)
    for t in range(30):
        backoff.failed()
        backoff.next_delay(float(t), 0.0)
    assert backoff.next_delay(30.0, 0.0) == 10.0
    backoff.succeeded()
    assert backoff.failures == 0
    assert backoff.next_delay(100.0, 0.0) == 0.5


def test_backoff_bound_gives_up_after_max_attempts() -> None:
    backoff = Backoff(max_attempts=3)
    assert backoff.failed() and backoff.failed()
    assert not backoff.failed()
    assert Backoff().failed()  # no bound


class _NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


def test_the_run_loop_tries_each_source_then_waits_by_the_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[tuple[float, str]] = []

    async def refuse(spec: NetSpec, redirects: int = 0) -> Connection:
        attempts.append((trio.current_time(), spec.text))
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")

    monkeypatch.setattr(_upstream, "open_connection", refuse)
    specs = [parse_net_spec("tcp://a:1", "SOURCE"), parse_net_spec("tcp://b:2", "SOURCE")]
    source = PullSource(specs, timeout=5, max_attempts=60, rng=_NoJitter())

    async def run() -> float:
        send, receive = trio.open_memory_channel[Item](0)
        with pytest.raises(SourceError):
            async with receive:
                await source.run(send)
        return trio.current_time()

    end = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [spec for _, spec in attempts] == ["tcp://a:1", "tcp://b:2"] * 30
    starts = [t for t, _ in attempts[::2]]
    assert all(t == t2 for (t, _), (t2, _) in zip(attempts[::2], attempts[1::2], strict=True))
    waits = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert waits[:20] == [0.5] * 20  # one round of both every 0.5 s for 10 s
    assert waits[20:25] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert set(waits[25:]) == {10.0}
    assert end == starts[-1]
    assert source.status.last_error == "connection refused"


# -- the source state ------------------------------------------------------------------------
def test_status_log_lines_one_per_change() -> None:
    status = SourceStatus("tcp://o:1")
    assert status.connecting("tcp://o:1", 0.0) is None  # already connecting
    assert status.lost("connection refused", 0.5) is None  # still connecting
    assert status.state is SourceState.CONNECTING
    assert status.last_error == "connection refused"
    assert status.live("tcp://o:1", 1.0) == "source tcp://o:1: live"
    assert status.live("tcp://o:1", 1.5) is None
    assert status.lost("closed by the origin", 3.0) == (
        "source tcp://o:1: reconnecting (closed by the origin)")
    assert status.reconnects == 1
    assert status.connecting("tcp://o:1", 3.5) is None
    assert status.lost("connection refused", 4.0) is None
    assert status.connecting("tcp://backup:2", 4.0) is None  # a fallback: same state
    assert status.spec == "tcp://backup:2"
    assert status.live("tcp://backup:2", 4.5) == "source tcp://backup:2: live"
    assert status.ended(9.0) == "source tcp://backup:2: ended"


def test_status_push_source_waits_for_the_next_publisher() -> None:
    status = SourceStatus("ingest tcp://0:1")
    assert status.waiting(status.spec, 0.0) == "source ingest tcp://0:1: waiting for publisher"
    assert status.live(status.spec, 1.0, "127.0.0.1:5") == (
        "source ingest tcp://0:1: live (127.0.0.1:5)")
    line = status.lost("publisher left", 2.0, push=True)
    assert line == "source ingest tcp://0:1: waiting for publisher (publisher left)"
    assert status.state is SourceState.WAITING and status.reconnects == 1


def test_status_snapshot_uptime_bytes_and_bitrate() -> None:
    status = SourceStatus("tcp://o:1")
    status.live("tcp://o:1", 10.0)
    for i in range(41):  # 1000 bytes every 0.1 s for 4 s: 80 kbit/s
        status.received(1000, 10.0 + i * 0.1)
    snap = status.snapshot(14.0)
    assert snap["spec"] == "tcp://o:1" and snap["state"] == "live"
    assert snap["uptime"] == 4.0
    assert snap["bytes_in"] == 41000
    assert 70_000 <= snap["bitrate_in"] <= 90_000
    assert snap["reconnects"] == 0 and snap["last_error"] is None
    status.lost("closed by the origin", 15.0)
    later = status.snapshot(30.0)
    assert later["uptime"] == 0.0 and later["bitrate_in"] == 0
    assert later["state"] == "reconnecting" and later["last_error"] == "closed by the origin"


# -- specs -------------------------------------------------------------------------------------
def test_net_specs() -> None:
    tcp = parse_net_spec("tcp://127.0.0.1:9000", "SOURCE")
    assert (tcp.scheme, tcp.host, tcp.port) == ("tcp", "127.0.0.1", 9000)
    http = parse_net_spec("http://[::1]:8080/stream", "SOURCE")
    assert (http.host, http.port, http.path, http.authority) == (
        "::1", 8080, "/stream", "[::1]:8080")
    assert parse_net_spec("http://localhost/live", "SOURCE").port == 80
    assert parse_net_spec("http://localhost:81", "SOURCE").path == "/"


def _args(source: str, *fallbacks: str, **kw: object) -> argparse.Namespace:
    values: dict[str, object] = {"source": source, "fallbacks": list(fallbacks),
                                 "ingest": None, "source_timeout": 10.0,
                                 "reconnect_max": None, "test_seconds": None}
    values.update(kw)
    return argparse.Namespace(**values)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (_args("udp://127.0.0.1:5"), "SOURCE: unsupported URL"),
        (_args("tcp://127.0.0.1"), "SOURCE tcp://127.0.0.1: expected HOST:PORT"),
        (_args("http://127.0.0.1:99999/x"), "expected HOST:PORT"),
        (_args("/no/such/file.ts"), "SOURCE: no such file"),
        (_args("tcp://127.0.0.1:1", "/a/file"), "SOURCE: unsupported URL '/a/file'"),
        (_args("-", ingest="ftp://127.0.0.1:1"), "--ingest: unsupported URL"),
        (_args("tcp://127.0.0.1:1", ingest="tcp://127.0.0.1:2"), "replaces SOURCE"),
        (_args("tcp://127.0.0.1:1", source_timeout=-1.0), "--source-timeout"),
        (_args("tcp://127.0.0.1:1", reconnect_max=0), "--reconnect-max"),
    ],
)
def test_a_source_that_can_never_work_is_refused_before_serving(
    args: argparse.Namespace, text: str
) -> None:
    with pytest.raises(SourceError) as info:
        open_source(args)
    assert isinstance(info.value, CommandError)
    assert text in str(info.value)
    assert "\n" not in str(info.value)


def test_error_descriptions_are_short() -> None:
    refused = OSError("all attempts to connect to 127.0.0.1:1 failed")
    refused.__cause__ = ExceptionGroup("x", [ConnectionRefusedError(111, "Error connecting")])
    assert describe_error(refused) == "connection refused"
    assert describe_error(trio.TooSlowError()) == "timed out"


# -- pulled sources against real origins ----------------------------------------------------------
Serve = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def origin(handler: Serve, port: int = 0) -> AsyncIterator[int]:
    """A TCP origin on 127.0.0.1 running ``handler`` per connection; yields its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, port, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def sender(*chunks: bytes, linger: float = 0.0) -> Serve:
    async def handler(stream: trio.SocketStream) -> None:
        for chunk in chunks:
            await stream.send_all(chunk)
        await trio.sleep(linger)

    return handler


def forever(chunk: bytes) -> Serve:
    async def handler(stream: trio.SocketStream) -> None:
        while True:
            await stream.send_all(chunk)
            await trio.sleep(0.05)

    return handler


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


async def test_a_lost_origin_is_reconnected_and_marked_as_a_new_upstream() -> None:
    with trio.fail_after(20):
        async with origin(sender(b"first", linger=0.2)) as port:
            source = PullSource([parse_net_spec(tcp(port), "SOURCE")], timeout=5)
            collector = Collector()
            await collector.run_until_upstreams(source, 3)
    items = collector.items
    assert isinstance(items[0], Upstream) and items[1] == b"first"
    assert collector.upstreams() == [tcp(port)] * 3
    assert source.status.reconnects >= 2
    assert source.status.last_error == "closed by the origin"


async def test_a_relay_started_before_its_origin_waits_for_it() -> None:
    with trio.fail_after(20):
        port = free_port()  # nothing behind it, for now
        source = PullSource([parse_net_spec(tcp(port), "SOURCE")], timeout=5)
        collector = Collector()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector.run, source)
            await until(lambda: source.backoff.failures >= 2)
            assert source.status.state is SourceState.CONNECTING
            assert source.status.last_error == "connection refused"
            async with origin(forever(b"late"), port):
                await collector.wait_for(lambda items: b"late" in items)
                assert source.status.state is SourceState.LIVE
            nursery.cancel_scope.cancel()


def test_reconnect_max_gives_up_with_one_line_naming_the_source() -> None:
    spec = parse_net_spec("tcp://127.0.0.1:1", "SOURCE")
    source = PullSource([spec], timeout=5, max_attempts=4, rng=random.Random(7))

    async def run() -> float:
        send, receive = trio.open_memory_channel[Item](0)
        start = trio.current_time()
        with pytest.raises(SourceError) as info:
            async with receive:
                await source.run(send)
        assert str(info.value) == ("SOURCE tcp://127.0.0.1:1: gave up after 4 failed "
                                   "attempts (connection refused)")
        return trio.current_time() - start

    taken = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    assert 0.75 <= taken <= 1.5  # three waits of 0.25..0.5 s (virtual time)


class _OneChunk(Connection):
    """An upstream that sends one chunk, then closes."""

    def __init__(self) -> None:
        self.first = [b"x"]

    async def receive(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.first.pop() if self.first else b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def test_an_origin_that_drops_us_at_once_is_retried_on_the_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[float] = []

    async def flap(spec: NetSpec, redirects: int = 0) -> Connection:
        attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        return _OneChunk()

    monkeypatch.setattr(_upstream, "open_connection", flap)
    source = PullSource([parse_net_spec("tcp://a:1", "SOURCE")], timeout=5, rng=_NoJitter())

    async def run() -> None:
        send, receive = trio.open_memory_channel[Item](math.inf)
        with trio.move_on_after(5):
            async with receive:
                await source.run(send)

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    waits = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) >= 9 and set(waits) == {0.5}  # 2 a second, not a tight loop
    assert source.status.reconnects == len(attempts)


async def test_silence_counts_as_a_loss() -> None:
    with trio.fail_after(20):
        async with origin(sender(b"hello", linger=30)) as port:
            source = PullSource([parse_net_spec(tcp(port), "SOURCE")], timeout=0.3)
            collector = Collector()
            await collector.run_until_upstreams(source, 2)
    assert source.status.last_error == "no data for 0.3 s"


async def test_fallback_origin_then_back_to_the_first() -> None:
    with trio.fail_after(30):
        async with origin(forever(b"B")) as backup:
            first_scope = trio.CancelScope()
            port_box: list[int] = []
            async with trio.open_nursery() as nursery:

                async def primary(*, task_status: trio.TaskStatus[None]) -> None:
                    with first_scope:
                        async with origin(forever(b"A"), free_port()) as port:
                            port_box.append(port)
                            task_status.started()
                            await trio.sleep_forever()

                await nursery.start(primary)
                port = port_box[0]
                specs = [parse_net_spec(tcp(port), "SOURCE"),
                         parse_net_spec(tcp(backup), "SOURCE")]
                source = PullSource(specs, timeout=5)
                collector = Collector()
                nursery.start_soon(collector.run, source)
                await collector.wait_for(lambda items: b"A" in items)
                first_scope.cancel()  # the first origin dies
                await collector.wait_for(lambda items: b"B" in items)
                assert source.status.spec == tcp(backup)
                count = len(collector.items)
                async with origin(forever(b"A"), port):  # ... and comes back
                    await collector.wait_for(lambda items: b"A" in items[count:])
                    assert source.status.spec == tcp(port)
                nursery.cancel_scope.cancel()
    assert collector.upstreams()[:3] == [tcp(port), tcp(backup), tcp(port)]


# -- HTTP pull ------------------------------------------------------------------------------
def http_origin(head: bytes, *body: bytes) -> Serve:
    async def handler(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        assert request.startswith(b"GET /live HTTP/1.1\r\n")
        assert b"\r\nhost: 127.0.0.1:" in request.lower()
        await stream.send_all(head)
        for part in body:
            await stream.send_all(part)
            await trio.sleep(0.01)
        await trio.sleep(0.2)

    return handler


@pytest.mark.parametrize(
    ("head", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n",
         [b"close-", b"delimited"]),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
         [b"6\r\nchunke\r\n", b"1\r\nd\r\n0\r\n\r\n"]),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\n", [b"len", b"gth"]),
    ],
    ids=["close-delimited", "chunked", "content-length"],
)
async def test_http_pull_reads_every_body_framing(head: bytes, body: list[bytes]) -> None:
    expected = b"".join(body)
    if b"chunked" in head:
        expected = b"chunked"
    with trio.fail_after(20):
        async with origin(http_origin(head, *body)) as port:
            spec = parse_net_spec(f"http://127.0.0.1:{port}/live", "SOURCE")
            source = PullSource([spec], timeout=5)
            collector = Collector()
            await collector.run_until_upstreams(source, 2)
    first = collector.items[1:collector.items.index(collector.items[0], 1)]
    assert b"".join(i for i in first if isinstance(i, bytes)) == expected


async def test_http_pull_non_200_is_a_failed_attempt() -> None:
    head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    with trio.fail_after(20):
        async with origin(http_origin(head)) as port:
            spec = parse_net_spec(f"http://127.0.0.1:{port}/live", "SOURCE")
            source = PullSource([spec], timeout=5)
            collector = Collector()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(collector.run, source)
                await until(lambda: source.backoff.failures >= 2)
                nursery.cancel_scope.cancel()
    assert source.status.last_error == "HTTP 404 Not Found"
    assert source.status.state is SourceState.CONNECTING
    assert collector.items == []


# -- the command: exit status ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["udp://127.0.0.1:5"], "SOURCE: unsupported URL 'udp://127.0.0.1:5'"),
        (["/no/such/file.ts"], "SOURCE: no such file"),
        (["http://127.0.0.1:port/x"], "SOURCE http://127.0.0.1:port/x: expected HOST:PORT"),
        (["tcp://127.0.0.1:1", "--ingest", "tcp://127.0.0.1:2"], "replaces SOURCE"),
    ],
)
def test_a_source_that_can_never_work_exits_2_with_one_line(args: list[str], text: str) -> None:
    result = subprocess.run([*COMMAND, "serve", *args, "--tcp", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=30, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("trio-msink: error: ") and text in lines[-1], lines
    assert "Traceback" not in result.stderr and len(lines) <= 2
    assert result.stdout == ""  # nothing was served


def test_reconnect_max_exits_1_with_one_line() -> None:
    port = free_port()
    result = subprocess.run(
        [*COMMAND, "serve", f"tcp://127.0.0.1:{port}", "--reconnect-max", "3",
         "--tcp", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"trio-msink: error: SOURCE tcp://127.0.0.1:{port}: gave up after 3 failed attempts "
        "(connection refused)")
    assert "Traceback" not in result.stderr


async def test_a_relay_without_its_origin_waits_shows_why_and_stops_only_on_a_signal() -> None:
    port = free_port()
    with trio.fail_after(30):
        async with run_server(["serve", f"tcp://127.0.0.1:{port}", "--tcp", "127.0.0.1:0",
                               "--http", "127.0.0.1:0"], fronts=2) as server:
            await server.wait_log(b"connecting (connection refused)")
            await trio.sleep(1.5)  # several more attempts: still running, nothing more logged
            assert server.process.returncode is None
            stream = await trio.open_tcp_stream("127.0.0.1", server.port("http"))
            await stream.send_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
            response = b""
            async for chunk in stream:
                response += chunk
            source = json.loads(response.split(b"\r\n\r\n", 1)[1])["source"]
            assert source["spec"] == f"tcp://127.0.0.1:{port}"
            assert source["state"] == "connecting"
            assert source["last_error"] == "connection refused"
            assert source["bytes_in"] == 0 and source["reconnects"] == 0
            server.process.send_signal(signal.SIGTERM)
            assert await server.process.wait() == 0
    assert b"Traceback" not in server.stderr
    assert server.stderr.count(b"connection refused") == 1  # one line per change


# -- the source shown everywhere: /stats, the page, the display ----------------------------
def _live_status() -> SourceStatus:
    status = SourceStatus("tcp://origin:9000")
    status.live("tcp://origin:9000", 100.0)
    status.received(250_000, 100.0)
    status.received(250_000, 104.0)
    status.lost("closed by the origin", 105.0)
    status.live("tcp://origin:9000", 106.0)
    return status


async def test_stats_document_and_page_show_the_source() -> None:
    from trio_msink import Sink
    from trio_msink.fronts import ClientRegistry
    from trio_msink.fronts.http import render_page, stats_document

    snapshot = _live_status().snapshot(108.0)
    async with Sink() as sink:
        registry = ClientRegistry()
        assert "source" not in stats_document(sink, registry)
        doc = stats_document(sink, registry, snapshot)
        page = render_page(sink, registry, "/stats", snapshot)
        bare = render_page(sink, registry)
    assert doc["source"] == {"spec": "tcp://origin:9000", "state": "live", "uptime": 2.0,
                             "bytes_in": 500_000, "bitrate_in": 250_000, "reconnects": 1,
                             "last_error": "closed by the origin"}
    assert '<table id="source-stats">' in page
    assert '<td id="source-state">live</td>' in page
    assert '<td id="source-last_error">closed by the origin</td>' in page
    assert '<td id="source-reconnects">1</td>' in page
    assert '<table id="source-stats" hidden>' in bare


async def test_the_display_has_a_source_line() -> None:
    from trio_msink.cli._display import Display
    from trio_msink.fronts import ClientRegistry

    display = Display(ClientRegistry(), interactive=True)
    display.source = _live_status()
    line = display.source_line(108.0)
    assert line == ("source tcp://origin:9000: live, up 2 s, 500.0 kB in, 250 kbit/s, "
                    "1 reconnects, last error: closed by the origin")
    assert Display(ClientRegistry(), interactive=True).source_line(0.0) == ""


# -- the command's defaults follow the detected format ------------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.properties: list[dict[str, object]] = []
        self.content_types: list[str] = []

    def set_properties(self, properties: dict[str, object]) -> None:
        self.properties.append(properties)

    def set_content_type(self, content_type: str) -> None:
        self.content_types.append(content_type)


def test_auto_detected_format_brings_its_defaults_except_the_flags_given() -> None:
    from trio_msink import SyncMethod
    from trio_msink.cli._defaults import format_defaults
    from trio_msink.cli._main import _parser, command_properties
    from trio_msink.cli._options import explicit_properties
    from trio_msink.cli._server import Server

    args, _ = _parser().parse_known_args(["serve", "-", "--timeout", "3"])
    args.explicit_properties = explicit_properties(args)
    server = Server(args, command_properties(args), {"tcp": ("127.0.0.1", 0)})
    output = _Recorder()
    server._apply_detected_defaults(output)  # type: ignore[arg-type]
    assert output.properties == []  # still probing: the video defaults stay
    server.framer.feed(b"\x01\x02\x03" * 3000)  # no sync bytes, no start codes: raw
    server._apply_detected_defaults(output)  # type: ignore[arg-type]
    server._apply_detected_defaults(output)  # type: ignore[arg-type]
    assert output.properties == [format_defaults("raw", {"timeout"})]
    assert output.properties[0]["sync_method"] == SyncMethod.LATEST
    assert "timeout" not in output.properties[0]


async def test_every_worker_process_reports_the_source_on_stats() -> None:
    with trio.fail_after(40):
        async with run_server(["serve", "test", "--workers", "2", "--http", "127.0.0.1:0"],
                              fronts=1) as server:
            await server.wait_log(b"source test: live")
            await trio.sleep(1.5)  # the status reaches the workers once a second
            sources = []
            for _ in range(4):  # connections are dealt round robin over the 2 processes
                stream = await trio.open_tcp_stream("127.0.0.1", server.port("http"))
                await stream.send_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
                response = b""
                async for chunk in stream:
                    response += chunk
                sources.append(json.loads(response.split(b"\r\n\r\n", 1)[1]).get("source"))
    assert all(s is not None and s["spec"] == "test" and s["state"] == "live"
               for s in sources), sources
    assert all(s["bytes_in"] > 0 for s in sources)


def redirecting_origin(locations: dict[bytes, bytes]) -> Serve:
    """Answers ``GET path`` with a 302 to ``locations[path]``, or with a
    close-delimited stream body ``b"at " + path`` for other paths."""

    async def handler(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        path = request.split(b" ", 2)[1]
        if path in locations:
            await stream.send_all(b"HTTP/1.1 302 Found\r\nLocation: " + locations[path]
                                  + b"\r\nContent-Length: 0\r\n\r\n")
        else:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nat " + path)
        await trio.sleep(0.2)

    return handler


async def test_http_pull_follows_redirects_and_bounds_them() -> None:
    with trio.fail_after(20):
        async with origin(redirecting_origin({b"/old": b"/live", b"/loop": b"/loop"})) as port:
            url = f"http://127.0.0.1:{port}"
            moved = PullSource([parse_net_spec(url + "/old", "SOURCE")], timeout=5)
            looping = PullSource([parse_net_spec(url + "/loop", "SOURCE")], timeout=5)
            collectors = [Collector(), Collector()]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(collectors[0].run, moved)
                nursery.start_soon(collectors[1].run, looping)
                await collectors[0].wait_for(lambda items: b"at /live" in items)
                await until(lambda: looping.backoff.failures >= 1)
                nursery.cancel_scope.cancel()
    assert looping.status.last_error == f"too many redirects (last to {url}/loop)"
    assert collectors[1].items == []
