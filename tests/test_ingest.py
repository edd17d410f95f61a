"""Push ingest (``--ingest``): one publisher at a time over TCP or HTTP
PUT/POST, a second one refused, clients kept between publishers; and an
ffmpeg publisher end to end through ``trio-msink serve --ingest``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import pytest
import trio
from _relaying import Collector, Player, check_player, until
from _server import need_tool, run_server

from trio_msink.cli._ingest import IngestSource
from trio_msink.cli._source_state import SourceState
from trio_msink.cli._sources import Upstream, parse_net_spec


@asynccontextmanager
async def ingest(url: str, silence: float = 5.0) -> AsyncIterator[tuple[IngestSource,
                                                                         Collector, str]]:
    source = IngestSource(parse_net_spec(url, "--ingest"), timeout=silence)
    address = await source.listen()
    assert address is not None
    collector = Collector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.run, source)
        yield source, collector, address
        nursery.cancel_scope.cancel()


def _port(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


async def _wait_state(source: IngestSource, state: SourceState) -> None:
    await until(lambda: source.status.state is state)


async def test_tcp_ingest_one_publisher_at_a_time_then_the_next() -> None:
    with trio.fail_after(20):
        async with ingest("tcp://127.0.0.1:0") as (source, collector, url):
            assert url.startswith("tcp://127.0.0.1:")
            assert source.status.state is SourceState.WAITING
            first = await trio.open_tcp_stream("127.0.0.1", _port(url))
            await first.send_all(b"one")
            await collector.wait_for(lambda items: b"one" in items)
            assert source.status.state is SourceState.LIVE
            second = await trio.open_tcp_stream("127.0.0.1", _port(url))
            await second.send_all(b"intruder")
            assert await second.receive_some() == b""  # refused: closed at once
            await first.send_all(b"more")
            await collector.wait_for(lambda items: b"more" in items)
            await first.aclose()
            await _wait_state(source, SourceState.WAITING)
            third = await trio.open_tcp_stream("127.0.0.1", _port(url))
            await third.send_all(b"three")
            await collector.wait_for(lambda items: b"three" in items)
            await third.aclose()
    assert b"intruder" not in collector.data()
    assert [i for i in collector.items if isinstance(i, Upstream)][1].detail.startswith(
        "127.0.0.1:")
    assert collector.data() == b"onemorethree"
    assert source.status.reconnects == 2


async def test_tcp_ingest_silent_publisher_is_dropped() -> None:
    with trio.fail_after(20):
        async with ingest("tcp://127.0.0.1:0", silence=0.3) as (source, collector, url):
            publisher = await trio.open_tcp_stream("127.0.0.1", _port(url))
            await publisher.send_all(b"x")
            await collector.wait_for(lambda items: b"x" in items)
            assert await publisher.receive_some() == b""  # we hung up on it
            assert source.status.state is SourceState.WAITING
            assert "silent for 0.3 s" in (source.status.last_error or "")


async def _http_request(port: int, request: h11.Request, body: list[bytes],
                        *, end: bool = True) -> tuple[trio.SocketStream, h11.Connection]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    await stream.send_all(conn.send(request) or b"")
    for part in body:
        await stream.send_all(conn.send(h11.Data(data=part)) or b"")
    if end:
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
    return stream, conn


async def _response(stream: trio.SocketStream, conn: h11.Connection) -> tuple[int, bytes]:
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(4096))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, body


def _put(port: int, method: bytes = b"PUT", path: bytes = b"/live",
         headers: list[tuple[str, str]] | None = None) -> h11.Request:
    return h11.Request(method=method, target=path, headers=[
        ("Host", f"127.0.0.1:{port}"), *(headers or [("Transfer-Encoding", "chunked")])])


@pytest.mark.parametrize(
    ("method", "headers"),
    [(b"PUT", [("Transfer-Encoding", "chunked")]),
     (b"POST", [("Content-Length", "9")]),
     (b"PUT", [("Transfer-Encoding", "chunked"), ("Expect", "100-continue")])],
    ids=["put-chunked", "post-content-length", "expect-100-continue"],
)
async def test_http_ingest_accepts_put_and_post(method: bytes,
                                                headers: list[tuple[str, str]]) -> None:
    with trio.fail_after(20):
        async with ingest("http://127.0.0.1:0/live") as (source, collector, url):
            assert url.endswith("/live")
            port = _port(url)
            stream, conn = await _http_request(port, _put(port, method, headers=headers),
                                               [b"abc", b"def", b"ghi"])
            status, _ = await _response(stream, conn)
            await stream.aclose()
            await _wait_state(source, SourceState.WAITING)
    assert status == 200
    assert collector.data() == b"abcdefghi"


async def test_http_ingest_refuses_a_second_publisher_with_409() -> None:
    with trio.fail_after(20):
        async with ingest("http://127.0.0.1:0/live") as (source, collector, url):
            port = _port(url)
            first, first_conn = await _http_request(port, _put(port), [b"live"], end=False)
            await collector.wait_for(lambda items: b"live" in items)
            second, conn = await _http_request(port, _put(port), [b"intruder"])
            status, body = await _response(second, conn)
            assert status == 409 and b"another publisher" in body
            await first.send_all(first_conn.send(h11.Data(data=b"still")) or b"")
            await collector.wait_for(lambda items: b"still" in items)
            await first.aclose()  # close-delimited end: the publisher is gone
            await _wait_state(source, SourceState.WAITING)
    assert collector.data() == b"livestill"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [(b"GET", b"/live", 405), (b"PUT", b"/other", 404)],
)
async def test_http_ingest_wrong_method_or_path(method: bytes, path: bytes, status: int) -> None:
    with trio.fail_after(20):
        async with ingest("http://127.0.0.1:0/live") as (source, _, url):
            port = _port(url)
            request = h11.Request(method=method, target=path,
                                  headers=[("Host", "x"), ("Content-Length", "0")])
            stream, conn = await _http_request(port, request, [])
            got, _ = await _response(stream, conn)
            assert source.status.state is SourceState.WAITING
    assert got == status


async def test_ingest_listen_failure_names_the_flag() -> None:
    with trio.fail_after(10):
        async with ingest("tcp://127.0.0.1:0") as (_, _, url):
            busy = IngestSource(parse_net_spec(url, "--ingest"), timeout=1)
            with pytest.raises(Exception) as info:
                await busy.listen()
    assert str(info.value) == f"--ingest {url}: address already in use"


async def test_ffmpeg_publishes_with_http_put_and_a_client_gets_the_stream() -> None:
    ffmpeg = need_tool("ffmpeg")
    with trio.fail_after(60):
        async with run_server(["serve", "--ingest", "http://127.0.0.1:0/publish",
                               "--http", "127.0.0.1:0", "--linger", "0"],
                              fronts=2) as server:
            ingest_url = server.urls[-1]
            http_port = server.port("http")
            client = await trio.open_tcp_stream("127.0.0.1", http_port)
            await client.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            publisher = await trio.lowlevel.open_process(
                [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                 "testsrc2=size=160x120:rate=25", "-t", "3", "-c:v", "libx264", "-g", "25",
                 "-preset", "ultrafast", "-f", "mpegts", "-method", "PUT", ingest_url],
                stdin=subprocess.DEVNULL)
            got = bytearray()
            while len(got) < 20_000:
                got += await client.receive_some()
            stats = await _get(http_port, b"/stats")
            assert stats["source"]["state"] == "live"
            assert stats["source"]["spec"] == f"ingest {ingest_url}"
            assert await publisher.wait() == 0
            await server.wait_log(b"waiting for publisher (publisher")
            assert server.process.returncode is None  # still serving, waiting
            await client.aclose()
    assert got.startswith(b"HTTP/1.1 200 OK")


async def _get(port: int, path: bytes) -> dict[str, object]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    async for chunk in stream:
        data += chunk
    result: dict[str, object] = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return result


async def test_http_ingest_accepts_a_body_that_runs_until_the_publisher_closes() -> None:
    with trio.fail_after(20):
        async with ingest("http://127.0.0.1:0/live") as (source, collector, url):
            stream = await trio.open_tcp_stream("127.0.0.1", _port(url))
            await stream.send_all(b"PUT /live HTTP/1.0\r\nHost: x\r\n\r\nfirst ")
            await collector.wait_for(lambda items: b"first " in items)
            await stream.send_all(b"second")
            await collector.wait_for(lambda items: b"second" in items)
            assert source.status.state is SourceState.LIVE
            await stream.aclose()
            await until(lambda: source.status.state is SourceState.WAITING)
    assert collector.data() == b"first second"


async def test_clients_stay_through_publishers_and_decode_each_one() -> None:
    ffmpeg = need_tool("ffmpeg")
    player = Player()
    with trio.fail_after(60):
        async with run_server(["serve", "--ingest", "tcp://127.0.0.1:0", "--tcp", "127.0.0.1:0",
                               "--sync-method", "latest-keyframe", "--linger", "0"],
                              fronts=2) as server, trio.open_nursery() as nursery:
            nursery.start_soon(player.run, server.port("tcp"))
            await server.wait_log(b"client added")
            for size in ("320x240", "160x120"):  # the second publisher's headers differ
                publisher = await trio.lowlevel.open_process(
                    [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                     f"testsrc2=size={size}:rate=25", "-t", "2", "-c:v", "libx264", "-g", "25",
                     "-preset", "ultrafast", "-f", "mpegts", server.urls[-1]],
                    stdin=subprocess.DEVNULL)
                assert await publisher.wait() == 0
                await server.wait_log(b"waiting for publisher (publisher", 1 + (size == "160x120"))
                await trio.sleep(1)  # a gap between the publishers
            assert server.process.returncode is None
            nursery.cancel_scope.cancel()
    check_player(ffmpeg, player, gaps=1)


async def test_http_ingest_speaks_icecast_source_method() -> None:
    with trio.fail_after(20):
        async with ingest("http://127.0.0.1:0/live") as (source, collector, url):
            stream = await trio.open_tcp_stream("127.0.0.1", _port(url))
            await stream.send_all(b"SOURCE /live HTTP/1.0\r\nAuthorization: Basic eDp5\r\n"
                                  b"Content-Type: video/mp2t\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(4096)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            await stream.send_all(b"icecast bytes")
            await collector.wait_for(lambda items: b"icecast bytes" in items)
            await stream.aclose()
            await until(lambda: source.status.state is SourceState.WAITING)
