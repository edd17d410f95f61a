"""Who may watch and how many, at the fronts (docs/security.md): real
sockets on 127.0.0.1, a real Sink, the fronts behind the accept loop."""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import pytest
import trio
import trio.testing
from conftest import TLS, poll_until, read_all
from test_front_http import fetch, read_head
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket

from trio_msink import Buffer, Sink
from trio_msink.fronts import ClientRegistry, HttpFront, WebSocketFront
from trio_msink.fronts._accept import LOG_INTERVAL, AcceptLoop
from trio_msink.fronts._access import Admission, Gate, Tokens

pytestmark = pytest.mark.usefixtures("no_spin")


@dataclass
class Fronts:
    http: int
    ws: int
    tcp: int
    sink: Sink
    loop: AcceptLoop


@asynccontextmanager
async def fronts(gate: Gate, tls: ssl.SSLContext | None = None) -> AsyncIterator[Fronts]:
    """HTTP, WebSocket and TCP fronts of one sink behind ``gate`` (and TLS)."""
    registry = ClientRegistry()
    loop = AcceptLoop(gate, (lambda: tls) if tls is not None else None, handshake_timeout=5)
    async with Sink() as sink, trio.open_nursery() as nursery:
        http = HttpFront(sink, registry=registry, gate=gate)
        ws = WebSocketFront(sink, registry=registry, gate=gate)

        async def tcp(stream: trio.abc.Stream) -> None:
            from trio_msink.fronts import peer_address
            from trio_msink.fronts._access import Front, Role, host_of

            with gate.enter(Front.TCP, Role.VIEWER, host_of(peer_address(stream))) as refusal:
                if refusal is None:
                    await sink.serve(stream)

        ports = []
        for handler in (http.serve, ws.serve_stream, tcp):
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await nursery.start(partial(loop.serve, handler, listeners))
            ports.append(listeners[0].socket.getsockname()[1])
        gate.page_ports = {ports[0]}
        yield Fronts(*ports, sink=sink, loop=loop)
        nursery.cancel_scope.cancel()


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def stream_status(port: int, request: bytes) -> int:
    """Open ``/stream`` and return the status (without waiting for the end)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as client:
        await client.send_all(request)
        status, _, _ = await read_head(client)
    return status


def token_gate(**kwargs: object) -> Gate:
    return Gate(tokens=Tokens(["view-token"]), admin_tokens=Tokens(["admin-token"]),
                **kwargs)  # type: ignore[arg-type]


# -- HTTP tokens ------------------------------------------------------------------------------


async def test_http_tokens() -> None:
    with trio.fail_after(20):
        async with fronts(token_gate()) as f:
            missing = await fetch(f.http, get("/stream"))
            assert missing.status == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            wrong = await fetch(f.http, get("/stream?token=guess"))
            assert wrong.status == 403
            assert b"guess" not in wrong.body
            assert await stream_status(f.http, get("/stream?token=view-token")) == 200
            assert await stream_status(
                f.http, get("/stream", "Authorization: Bearer view-token")) == 200
            assert await stream_status(f.http, get("/stream?token=admin-token")) == 200


async def test_stats_and_page_are_the_operators() -> None:
    with trio.fail_after(20):
        async with fronts(token_gate()) as f:
            assert (await fetch(f.http, get("/stats"))).status == 401
            assert (await fetch(f.http, get("/stats?token=view-token"))).status == 403
            assert (await fetch(f.http, get("/?token=view-token"))).status == 403
            stats = await fetch(f.http, get("/stats", "Authorization: Bearer admin-token"))
            assert stats.status == 200 and b'"clients"' in stats.body
            page = await fetch(f.http, get("/?token=admin-token"))
            assert page.status == 200 and b"<html" in page.body


# -- how many -----------------------------------------------------------------------------------


async def test_viewers_over_the_limit_get_503_and_the_operator_still_gets_stats() -> None:
    gate = Gate(admission=Admission(2))
    with trio.fail_after(20):
        async with fronts(gate) as f, trio.open_nursery() as nursery:
            watching = []
            for _ in range(2):
                client = await trio.open_tcp_stream("127.0.0.1", f.http)
                await client.send_all(get("/stream"))
                assert (await read_head(client))[0] == 200
                watching.append(client)
            full = await fetch(f.http, get("/stream"))
            assert full.status == 503 and full.headers["retry-after"] == "5"
            tcp = await trio.open_tcp_stream("127.0.0.1", f.tcp)
            assert await read_all(tcp) == b""  # closed at once, nothing sent
            async with open_websocket("127.0.0.1", f.ws, "/", use_ssl=False) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1013
            stats = await fetch(f.http, get("/stats"))
            assert stats.status == 200
            await watching.pop().aclose()
            # the place is free once the sink has removed the client
            while (status := await stream_status(f.http, get("/stream"))) != 200:
                assert status == 503
                await trio.sleep(0.05)
            for client in watching:
                await client.aclose()
            nursery.cancel_scope.cancel()


async def test_per_address_limit() -> None:
    gate = Gate(admission=Admission(10, 1))
    with trio.fail_after(20):
        async with fronts(gate) as f, await trio.open_tcp_stream("127.0.0.1", f.http) as first:
            await first.send_all(get("/stream"))
            assert (await read_head(first))[0] == 200
            assert (await fetch(f.http, get("/stream"))).status == 503
            # another address (loopback is a /8) has its own count
            other = await trio.open_tcp_stream("127.0.0.1", f.http, local_address="127.0.0.2")
            async with other:
                await other.send_all(get("/stream"))
                assert (await read_head(other))[0] == 200


async def test_connections_over_the_reserve_are_closed_at_once() -> None:
    gate = Gate(admission=Admission(1, reserve=1))
    with trio.fail_after(20):
        async with fronts(gate) as f:
            # two idle connections (no request yet) fill viewers + reserve
            idle = [await trio.open_tcp_stream("127.0.0.1", f.http) for _ in range(2)]
            await trio.testing.wait_all_tasks_blocked()
            admission = gate.admission
            assert admission is not None
            await poll_until(lambda: admission.connections == 2)
            third = await trio.open_tcp_stream("127.0.0.1", f.http)
            await third.send_all(get("/stats"))
            assert await read_all(third) == b""
            assert f.loop.refused == 1
            for client in idle:
                await client.aclose()


# -- addresses -----------------------------------------------------------------------------------


async def test_allow_closes_other_addresses_at_once_on_every_front() -> None:
    gate = Gate(allow=["10.0.0.0/8"])
    with trio.fail_after(20):
        async with fronts(gate) as f:
            for port in (f.http, f.ws, f.tcp):
                async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                    await client.send_all(get("/stats"))
                    assert await read_all(client) == b""
            assert f.loop.refused == 3
    one_address = Gate(allow=["127.0.0.2/32"])
    with trio.fail_after(20):
        async with fronts(one_address) as f:
            async with await trio.open_tcp_stream("127.0.0.1", f.http) as refused:
                await refused.send_all(get("/stats"))
                assert await read_all(refused) == b""
            allowed = await trio.open_tcp_stream("127.0.0.1", f.http, local_address="127.0.0.2")
            async with allowed:
                await allowed.send_all(get("/stats"))
                assert (await read_all(allowed)).startswith(b"HTTP/1.1 200 ")


# -- WebSocket -----------------------------------------------------------------------------------


async def ws_first_message(port: int, resource: str = "/",
                           headers: list[tuple[bytes, bytes]] | None = None,
                           context: ssl.SSLContext | None = None) -> bytes | str:
    async with open_websocket("127.0.0.1" if context is None else "localhost", port, resource,
                              use_ssl=context if context is not None else False,
                              extra_headers=headers) as ws:
        return await ws.get_message()


async def test_websocket_tokens() -> None:
    with trio.fail_after(20):
        async with fronts(token_gate()) as f, trio.open_nursery() as nursery:
            with pytest.raises(ConnectionRejected) as missing:
                await ws_first_message(f.ws)
            assert missing.value.status_code == 401
            with pytest.raises(ConnectionRejected) as wrong:
                await ws_first_message(f.ws, "/?token=nope")
            assert wrong.value.status_code == 403
            received: list[bytes | str] = []

            async def watch(resource: str, headers: list[tuple[bytes, bytes]]) -> None:
                received.append(await ws_first_message(f.ws, resource, headers))

            nursery.start_soon(watch, "/?token=view-token", [])
            nursery.start_soon(watch, "/", [(b"Authorization", b"Bearer view-token")])
            await poll_until(lambda: f.sink.statistics().num_handles == 2)
            await f.sink.send(Buffer(b"hello"))
    assert received == [b"hello", b"hello"]


async def test_websocket_origin() -> None:
    with trio.fail_after(20):
        async with fronts(Gate(ws_origins=["https://viewer.example"])) as f:
            with pytest.raises(ConnectionRejected) as evil:
                await ws_first_message(f.ws, headers=[(b"Origin", b"http://evil.example")])
            assert evil.value.status_code == 403
            with pytest.raises(ConnectionRejected):
                await ws_first_message(f.ws, headers=[(b"Origin", b"http://127.0.0.1:1")])
            async with trio.open_nursery() as nursery:
                origins = [None, b"https://viewer.example", f"http://127.0.0.1:{f.http}".encode(),
                           f"http://localhost:{f.ws}".encode()]
                received: list[bytes | str] = []

                async def watch(origin: bytes | None) -> None:
                    headers = [] if origin is None else [(b"Origin", origin)]
                    received.append(await ws_first_message(f.ws, headers=headers))

                for origin in origins:
                    nursery.start_soon(watch, origin)
                await poll_until(lambda: f.sink.statistics().num_handles == len(origins))
                await f.sink.send(Buffer(b"x"))
            assert received == [b"x"] * len(origins)


# -- TLS -----------------------------------------------------------------------------------------


async def test_tls_on_every_front(tls: TLS) -> None:
    with trio.fail_after(30):
        async with fronts(token_gate(), tls.server) as f, trio.open_nursery() as nursery:
            tcp = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", f.tcp), tls.client,
                                 server_hostname="localhost")
            await tcp.do_handshake()
            https = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", f.http), tls.client,
                                   server_hostname="localhost")
            await https.send_all(get("/stream?token=view-token"))
            assert (await read_head(https))[0] == 200
            received: list[bytes | str] = []

            async def wss() -> None:
                received.append(await ws_first_message(f.ws, "/?token=view-token",
                                                       context=tls.client))

            nursery.start_soon(wss)
            await poll_until(lambda: f.sink.statistics().num_handles == 3)
            await f.sink.send(Buffer(b"secret bytes"))
            assert await tcp.receive_some() == b"secret bytes"
            assert await https.receive_some() == b"secret bytes"
            # a plain-text client on a TLS port is dropped, nothing logged as an error
            async with await trio.open_tcp_stream("127.0.0.1", f.http) as plain:
                await plain.send_all(get("/stats?token=admin-token"))
                assert b"HTTP/1.1 200" not in await read_all(plain)
            await tcp.aclose()
            await https.aclose()
    assert received == [b"secret bytes"]


# -- the fd limit ---------------------------------------------------------------------------------


class _FailingListener(trio.abc.Listener[trio.SocketStream]):
    """A real listener whose accept first fails ``failures`` times with EMFILE."""

    def __init__(self, failures: int) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        self.socket = trio.socket.from_stdlib_socket(sock)
        self.failures = failures
        self.calls = 0
        self.accepted_at = 1 << 30  # the first accept after the failures succeeds

    async def accept(self) -> trio.SocketStream:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        self.accepted_at = min(self.accepted_at, self.calls)
        if self.calls > self.accepted_at:
            await trio.sleep_forever()
        ours, theirs = trio.socket.socketpair()
        theirs.close()
        self.accepted_at = self.calls
        return trio.SocketStream(ours)

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


async def test_accept_backs_off_at_the_fd_limit_with_one_log_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "trio_msink.fronts")
    listener = _FailingListener(failures=200)
    loop = AcceptLoop()
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.serve, trio.aclose_forcefully, [listener])
        start = trio.current_time()
        while listener.failures:  # noqa: ASYNC110 (the mock clock jumps while we sleep)
            await trio.sleep(0.5)
        elapsed = trio.current_time() - start
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    # backing off: 200 failures take far longer than 200 x 100 ms of plain retries
    assert elapsed > 100
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert 1 <= len(lines) <= elapsed / LOG_INTERVAL + 1
    assert all(r.exc_info is None for r in caplog.records)
    assert sum("accepting connections again" in r.getMessage() for r in caplog.records) == 1


async def test_websocket_per_address_limit_and_addresses_on_the_fast_path() -> None:
    gate = Gate(admission=Admission(10, 1))
    with trio.fail_after(20):
        async with fronts(gate) as f, open_websocket("127.0.0.1", f.ws, "/",
                                                     use_ssl=False) as first:
            await poll_until(lambda: f.sink.statistics().num_handles == 1)
            async with open_websocket("127.0.0.1", f.ws, "/", use_ssl=False) as second:
                with pytest.raises(ConnectionClosed) as closed:
                    await second.get_message()
                assert closed.value.reason.code == 1013
            stats = await fetch(f.http, get("/stats"))
            assert b'"address": "127.0.0.1:' in stats.body  # not the transport's repr
            await f.sink.send(Buffer(b"still here"))
            assert await first.get_message() == b"still here"
