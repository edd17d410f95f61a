"""Hostile clients that may not watch, at scale: no token, a wrong token,
the viewer's token on the operator's endpoint, and addresses outside
``--allow`` (docs/security.md).

One server for the module, with a viewer token, an operator token and
``--allow 127.0.0.1/32``; the attackers come from 127.0.0.3 (outside it) or
without the right token, the steady ffmpeg viewer and the fresh clients
from 127.0.0.1 with the viewer token. Judged by the criteria of
tests/_hostile.py, and every refusal checked: HTTP 401 without a token, 403
with a wrong one (the WebSocket handshake the same), a TCP connection from
outside ``--allow`` closed before a byte of the stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
from _hostile import HostileServer, close_all, connect_many, serving

TOKEN = "viewer-token-h9"
ADMIN = "operator-token-h9"
OUTSIDE = "127.0.0.3"  # a loopback address that --allow leaves out
REQUESTS = 400  # of each kind of unauthorised request


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    args = ["serve", "test", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0",
            "--ws", "127.0.0.1:0", "--token", TOKEN, "--admin-token", ADMIN,
            "--allow", "127.0.0.1/32"]
    with serving(args, fronts=3, stream_path=f"/stream?token={TOKEN}") as running:
        yield running


async def status_of(port: int, request: bytes) -> bytes:
    """The status line the server answers ``request`` with; b"" if it
    closed without one."""
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            head = b""
            try:
                while b"\r\n" not in head:
                    chunk = await stream.receive_some()
                    if not chunk:
                        break
                    head += chunk
            except trio.BrokenResourceError:
                pass
    return head.split(b"\r\n", 1)[0]


def get(path: str, *headers: str) -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode()


def upgrade(path: str, *headers: str) -> bytes:
    return get(path, "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", *headers)


# (front, request, the status it must get)
ATTACKS = {
    "no token": ("http", get("/stream"), b"401"),
    "wrong token in the query": ("http", get("/stream?token=guess"), b"403"),
    "wrong bearer token": ("http", get("/stream", "Authorization: Bearer guess"), b"403"),
    "viewer token on /stats": ("http", get(f"/stats?token={TOKEN}"), b"403"),
    "no token on /stats": ("http", get("/stats"), b"401"),
    "WebSocket without a token": ("ws", upgrade("/"), b"401"),
    "WebSocket with a wrong token": ("ws", upgrade("/?token=guess"), b"403"),
}


async def test_unauthorised_and_wrong_token_clients_at_scale(server: HostileServer) -> None:
    """400 of each kind of unauthorised request (2,800), 100 at a time,
    while fresh authorised clients come: each gets its 401 or 403."""
    base = await server.baseline()
    wrong: dict[str, set[bytes]] = {}
    limit = trio.CapacityLimiter(100)

    async def attack(name: str) -> None:
        front, request, expected = ATTACKS[name]
        async with limit:
            line = await status_of(server.port(front), request)
        if line.split(b" ")[1:2] != [expected]:
            wrong.setdefault(name, set()).add(line)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(REQUESTS):
                for name in ATTACKS:
                    nursery.start_soon(attack, name)
            for _ in range(3):
                await server.fresh_client()
                await trio.sleep(0.5)
    assert not wrong, wrong
    # The operator's token opens /stats.
    assert (await status_of(server.port("http"), get(f"/stats?token={ADMIN}"))).startswith(
        b"HTTP/1.1 200")
    await server.check_recovered(base)


async def test_addresses_outside_allow_are_closed_at_once(server: HostileServer) -> None:
    """1,000 TCP viewers from an address outside --allow: each is closed
    before it gets a byte of the stream."""
    base = await server.baseline()

    got: list[bytes] = []

    async def read_to_eof(stream: trio.SocketStream) -> None:
        data = b""
        try:
            while chunk := await stream.receive_some():
                data += chunk
        except trio.BrokenResourceError:
            pass  # reset: closed too
        got.append(data)

    with trio.fail_after(120):
        for _ in range(5):
            streams = await connect_many(server.port("tcp"), 200, source=OUTSIDE)
            with trio.fail_after(30):  # closed at once, not at some timeout
                async with trio.open_nursery() as nursery:
                    for stream in streams:
                        nursery.start_soon(read_to_eof, stream)
            await close_all(streams)
            await server.fresh_client()
    assert got == [b""] * 1000, f"{sum(map(bool, got))} refused viewers got stream bytes"
    await server.check_recovered(base)
