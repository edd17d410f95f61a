"""HTTP front: real sockets on 127.0.0.1, except the timing test (memory streams
under the autojump clock)."""

from __future__ import annotations

import dataclasses
import json
import sys
from functools import partial

import trio
import trio.testing
from conftest import Events, read_all

from trio_msink import Buffer, ClientStatus, Sink
from trio_msink.fronts import ClientRegistry, HttpFront

GET_STREAM = b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n"


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_head(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ")
    assert version == "HTTP/1.1"
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers
        headers[name.lower()] = value.strip()
    return int(status), headers, rest


async def read_head(stream: trio.abc.ReceiveStream) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, f"connection closed inside the response head: {data!r}"
        data += chunk
    return parse_head(data)


async def fetch(port: int, raw: bytes) -> Response:
    """Send ``raw``, read until the server closes, parse the response."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(raw)
        status, headers, body = parse_head(await read_all(stream))
    return Response(status, headers, body)


async def start_front(nursery: trio.Nursery, front: HttpFront) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, front.serve, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_stream_body_is_the_raw_stream() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            front = HttpFront(sink)
            port = await start_front(nursery, front)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(GET_STREAM)
            status, headers, early = await read_head(client)
            assert status == 200
            assert headers["content-type"] == "video/mp2t"
            assert headers["connection"] == "close"
            assert "content-length" not in headers
            assert "transfer-encoding" not in headers
            assert early == b""
            await events.wait_added(1)
            assert len(front.registry) == 1
            await sink.send(b"first|")
            await sink.send(Buffer([b"sec", b"ond|"]))
            await sink.send(Buffer(b"\x00\xffthird", delta_unit=True))
            expected = b"first|second|\x00\xffthird"
            body = b""
            while len(body) < len(expected):
                body += await client.receive_some()
            # The sink lets go of the client; the front must close the connection.
            sink.remove(events.added[0])
            assert body + await read_all(client) == expected
            assert events.statuses == [ClientStatus.REMOVED]
            assert len(front.registry) == 0
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_client_closing_is_removed_closed() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            port = await start_front(nursery, HttpFront(sink, content_type="audio/mpeg"))
            async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                await client.send_all(GET_STREAM)
                _, headers, _ = await read_head(client)
                assert headers["content-type"] == "audio/mpeg"
                await events.wait_added(1)
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]
            nursery.cancel_scope.cancel()


async def test_head_stream_sends_headers_only() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            port = await start_front(nursery, HttpFront(sink))
            response = await fetch(port, b"HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            assert response.status == 200
            assert response.headers["content-type"] == "video/mp2t"
            assert "content-length" not in response.headers
            assert response.body == b""
            assert sink.num_handles == 0
            nursery.cancel_scope.cancel()


async def test_stats_json_lists_every_registered_client() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            registry = ClientRegistry()
            port = await start_front(nursery, HttpFront(sink, registry=registry))
            # A client of another front (say a CLI's plain TCP server) registers too.
            other_send, _ = trio.testing.memory_stream_one_way_pair()
            registry.register(other_send, "tcp", "10.0.0.1:1234")
            sink.add(other_send)
            # A streaming HTTP client.
            http_added = trio.Event()
            sink.on_client_added = lambda stream: http_added.set()
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(GET_STREAM)
            await read_head(client)
            await http_added.wait()
            for chunk in (b"a" * 100, b"b" * 50, b"c" * 7):
                await sink.send(chunk)
            got = b""
            while len(got) < 157:
                got += await client.receive_some()
            await trio.testing.wait_all_tasks_blocked()
            response = await fetch(port, b"GET /stats?pretty=0 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            assert int(response.headers["content-length"]) == len(response.body)
            doc = json.loads(response.body)
            assert doc["sink"] == dataclasses.asdict(sink.statistics())
            assert doc["sink"]["num_handles"] == 2
            assert doc["sink"]["bytes_to_serve"] == 157
            assert doc["sink"]["bytes_served"] == 2 * 157
            assert doc["sink"]["buffers_queued"] >= 1
            rows = {row["front"]: row for row in doc["clients"]}
            local_host, local_port = client.socket.getsockname()[:2]
            http_row = rows["http"]
            assert http_row["address"] == f"{local_host}:{local_port}"
            assert rows["tcp"]["address"] == "10.0.0.1:1234"
            for row in rows.values():
                assert row["status"] == "OK"
                assert row["bytes_sent"] == 157
                assert row["lag_buffers"] == 0
                assert row["lag_bytes"] == 0
                assert row["buffers_dropped"] == 0
                assert row["connect_duration"] >= 0
            assert len(doc["clients"]) == 2
            head = await fetch(port, b"HEAD /stats HTTP/1.1\r\nHost: t\r\n\r\n")
            assert head.status == 200 and head.body == b""
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_page_has_the_live_table() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            front = HttpFront(sink)
            other_send, _ = trio.testing.memory_stream_one_way_pair()
            front.registry.register(other_send, "tcp", "10.0.0.9:99")
            sink.add(other_send)
            await sink.send(b"12345")
            port = await start_front(nursery, front)
            response = await fetch(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/html")
            page = response.body.decode()
            assert '<table id="sink-stats">' in page
            assert '<td id="num_handles">1</td>' in page
            assert '<td id="bytes_to_serve">5</td>' in page
            assert '<td id="bytes_served">' in page
            assert '<td id="buffers_queued">1</td>' in page
            assert '<tbody id="client-rows">' in page
            assert '<td class="address">10.0.0.9:99</td>' in page
            assert '<td class="front">tcp</td>' in page
            assert 'data-stats="/stats"' in page  # page.js refreshes them from there
            assert '<script type="module" src="/page.js">' in page
            # HEAD answers the headers GET would: compared on a page with no
            # client, whose figures (connect time, bytes sent) cannot move
            # between the two requests.
            sink.remove(other_send)
            front.registry.unregister(other_send)
            response = await fetch(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await fetch(port, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert head.status == 200 and head.body == b""
            assert head.headers["content-length"] == response.headers["content-length"]
            nursery.cancel_scope.cancel()


async def test_error_responses() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            port = await start_front(nursery, HttpFront(sink))
            cases = [
                (b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404),
                (b"POST /stream HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", 405),
                (b"DELETE /stats HTTP/1.1\r\nHost: t\r\n\r\n", 405),
                (b"this is not http\r\n\r\n", 400),
                (b"GET /stream HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 requires Host
                # over max_header_size (16 KiB; h11 checks it between reads)
                (b"GET /stream HTTP/1.1\r\nHost: t\r\nX: " + b"x" * 65536 + b"\r\n\r\n", 431),
            ]
            for raw, status in cases:
                response = await fetch(port, raw)
                assert response.status == status, raw[:40]
                assert response.headers["connection"] == "close"
                assert int(response.headers["content-length"]) == len(response.body)
                assert response.body.startswith(str(status).encode())
                if status == 405:
                    assert response.headers["allow"] == "GET, HEAD"
            head = await fetch(port, b"HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n")
            assert head.status == 404 and head.body == b""
            assert int(head.headers["content-length"]) > 0  # as the GET's would be
            assert sink.num_handles == 0
            nursery.cancel_scope.cancel()


async def test_slow_header_client_is_dropped_others_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = Events()
    statuses: list[ClientStatus | None] = []
    served = [trio.Event(), trio.Event()]

    async def serve(front: HttpFront, stream: trio.abc.Stream) -> None:
        statuses.append(await front.serve(stream))
        served[len(statuses) - 1].set()

    with trio.fail_after(100):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            front = HttpFront(sink, header_timeout=10.0)
            slow, slow_server = trio.testing.memory_stream_pair()
            good, good_server = trio.testing.memory_stream_pair()
            start = trio.current_time()
            nursery.start_soon(serve, front, slow_server)
            nursery.start_soon(serve, front, good_server)
            await slow.send_all(b"GET /str")  # ... and never the rest
            await good.send_all(GET_STREAM)
            status, _, _ = await read_head(good)
            assert status == 200
            await events.wait_added(1)
            await sink.send(b"before")
            assert await good.receive_some() == b"before"
            # The slow client gets nothing, and is closed at the timeout.
            assert await slow.receive_some() == b""
            assert trio.current_time() - start == 10.0
            await served[0].wait()
            assert statuses == [None]
            await sink.send(b"after")
            assert await good.receive_some() == b"after"
            # The good client hangs up: removed CLOSED, and serve returns that.
            await good.aclose()
            await served[1].wait()
            assert statuses == [None, ClientStatus.CLOSED]
            assert trio.current_time() - start < 11.0


async def test_fronts_import_their_dependencies_lazily() -> None:
    code = (
        "import sys, trio_msink.fronts as fronts\n"
        "assert not {'h11', 'trio_websocket', 'anyio'} & set(sys.modules)\n"
        "fronts.HttpFront\n"
        "assert 'h11' in sys.modules and 'trio_websocket' not in sys.modules\n"
    )
    with trio.fail_after(30):
        result = await trio.run_process([sys.executable, "-c", code], check=False)
    assert result.returncode == 0
