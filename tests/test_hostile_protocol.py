"""Hostile clients, by what they send: malformed HTTP, malformed WebSocket
frames, oversized messages and heads, ping floods.

One server for the module (``serve test`` on HTTP and WebSocket, a steady
ffmpeg viewer on HTTP), judged by the criteria of tests/_hostile.py, and
each answer checked: a malformed HTTP request gets a 4xx (never a 5xx, never
a stream) and is closed; a malformed WebSocket frame is closed at once,
with a protocol-error close code or none (never 1011, "internal error").
"""

from __future__ import annotations

import contextlib
import os
import random
import struct
from collections.abc import Iterator

import pytest
import trio
from _hostile import HostileServer, close_all, connect_many, rss, serving
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

# Malformed requests, each of a kind h11 (and so the front) must refuse.
# (Content-Length beside Transfer-Encoding is not among them: RFC 9112 6.3
# lets a server follow the Transfer-Encoding, and the front closes every
# connection after one response, so nothing can be smuggled behind it.)
MALFORMED_HTTP = {
    "garbage line": b"GARBAGE\r\n\r\n",
    "method only": b"GET\r\n\r\n",
    "HTTP/0.9": b"GET /stream\r\n\r\n",
    "no Host": b"GET /stream HTTP/1.1\r\n\r\n",
    "two spaces": b"GET  /stream HTTP/1.1\r\nHost: x\r\n\r\n",
    "space in target": b"GET /str eam HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad method": b"G@T /stream HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without colon": b"GET /stream HTTP/1.1\r\nHost x\r\n\r\n",
    "space before colon": b"GET /stream HTTP/1.1\r\nHost : x\r\n\r\n",
    "control byte in name": b"GET /stream HTTP/1.1\r\nHo\x01st: x\r\n\r\n",
    "NUL in value": b"GET /stream HTTP/1.1\r\nHost: x\x00y\r\n\r\n",
    "folded line first": b"GET /stream HTTP/1.1\r\n folded\r\nHost: x\r\n\r\n",
    "negative length": b"GET /stream HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "length not a number": b"GET /stream HTTP/1.1\r\nHost: x\r\nContent-Length: ab\r\n\r\n",
    "two lengths": (b"GET /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                    b"Content-Length: 2\r\n\r\n"),
    "unknown coding": b"GET /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "bad version": b"GET /stream HTTP/1.x\r\nHost: x\r\n\r\n",
    "POST to the stream": b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    "100 KiB header": b"GET /stream HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "10,000 headers": b"GET /stream HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n",
    "TLS hello": bytes.fromhex("16030100c4010000c00303") + bytes(190),
    "random bytes": random.Random(1).randbytes(4096) + b"\r\n\r\n",
}


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    args = ["serve", "test", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"]
    with serving(args, fronts=2) as running:
        yield running


async def http_answer(port: int, request: bytes) -> bytes:
    """The status line the server answers ``request`` with (b"" if none),
    after it has closed the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        # It may answer and close before taking everything: read on.
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(request)
        data = b""
        try:
            while chunk := await stream.receive_some():
                data += chunk
                if len(data) > 1 << 16:
                    break  # a stream: its status line says enough
        except trio.BrokenResourceError:
            pass
    return data.split(b"\r\n", 1)[0]


def refused(name: str, status_line: bytes) -> bool:
    """A 4xx; or 501 for a transfer coding the server does not know, as
    RFC 9112 6.1 asks (h11's answer: not a failure of the server)."""
    if name == "unknown coding" and status_line.startswith(b"HTTP/1.1 501"):
        return True
    return status_line.startswith(b"HTTP/1.1 4")


async def test_malformed_http_gets_4xx(server: HostileServer) -> None:
    """22 kinds of malformed request, 20 of each at once: every one gets a
    4xx (501 for an unknown transfer coding) and a close, never a stream,
    and fresh clients are served meanwhile."""
    base = await server.baseline()
    answers: dict[str, list[bytes]] = {name: [] for name in MALFORMED_HTTP}

    async def ask(name: str) -> None:
        answers[name].append(await http_answer(server.port("http"), MALFORMED_HTTP[name]))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for name in MALFORMED_HTTP:
                for _ in range(20):
                    nursery.start_soon(ask, name)
            await server.fresh_client()
    wrong = {name: sorted(set(got)) for name, got in answers.items()
             if len(got) != 20 or not all(refused(name, line) for line in got)}
    assert not wrong, wrong
    await server.check_recovered(base)


# -- WebSocket ------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True,
          length: int | None = None) -> bytes:
    """A client frame, masked unless told otherwise; ``length`` overrides
    the length field (a lie about the payload)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


MALFORMED_WS = {
    "unmasked": frame(0x2, b"hello", masked=False),
    "reserved bit": frame(0x2, b"hello", rsv=0x4),
    "reserved opcode": frame(0x3, b"hello"),
    "reserved control opcode": frame(0xB, b""),
    "long ping": frame(0x9, b"p" * 126),
    "fragmented ping": frame(0x9, b"p", fin=False),
    "lone continuation": frame(0x0, b"more"),
    "interleaved message": frame(0x1, b"a", fin=False) + frame(0x2, b"b"),
    "invalid UTF-8": frame(0x1, b"\xff\xfe\xfd"),
    "close with one byte": frame(0x8, b"\x03"),
    "close code 999": frame(0x8, struct.pack("!H", 999)),
    "length with top bit": b"\x82\xff" + b"\x80" + bytes(7) + os.urandom(4),
}
# How the server may end a connection that sent a malformed frame: with a
# close frame saying protocol error, invalid data or too big (RFC 6455
# 7.4.1), or with none: trio-websocket drops the TCP connection at once when
# wsproto cannot parse a frame (RFC 6455 7.1.7 makes the close frame a
# SHOULD). Never 1011 (internal error) nor 1000 (as if all were well).
PROTOCOL_CLOSE = {None, 1002, 1007, 1009}


async def ws_attack(port: int, attack: bytes, *, limit: float = 15.0) -> int | None:
    """Open a WebSocket (as a viewer), send ``attack`` raw, and read until
    the server closes: the code of its close frame (None if it sent none)."""
    ws = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    code: int | None = None
    async with stream:
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/")))
        accepted = False
        with trio.fail_after(limit):
            while not accepted:
                data = await stream.receive_some()
                assert data, "no handshake answer"
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        accepted = True
            with contextlib.suppress(trio.BrokenResourceError):  # refused before all of it
                await stream.send_all(attack)
            try:
                while data := await stream.receive_some():
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, CloseConnection) and code is None:
                            code = event.code
            except trio.BrokenResourceError:
                pass
    return code


async def test_malformed_websocket_frames_get_a_protocol_close(server: HostileServer) -> None:
    """12 kinds of malformed frame, 20 of each at once, from viewers: each is
    closed (within 15 s: at once, in fact), with a protocol-error code if
    any, and others are served meanwhile."""
    base = await server.baseline()
    codes: dict[str, list[int | None]] = {name: [] for name in MALFORMED_WS}

    async def attack(name: str) -> None:
        codes[name].append(await ws_attack(server.port("ws"), MALFORMED_WS[name]))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for name in MALFORMED_WS:
                for _ in range(20):
                    nursery.start_soon(attack, name)
            await server.fresh_client()
    wrong = {name: got for name, got in codes.items()
             if len(got) != 20 or not set(got) <= PROTOCOL_CLOSE}
    assert not wrong, wrong
    await server.check_recovered(base)


async def test_oversized_websocket_messages_get_1009(server: HostileServer) -> None:
    """50 clients at once announce a 64 MiB message (and send 1 MiB of it),
    50 more send 2 MiB in 1 KiB fragments: each is closed with 1009 (too
    big) without the server holding what they sent."""
    base = await server.baseline()
    codes: list[int | None] = []
    one_mib = os.urandom(1 << 20)
    huge = frame(0x2, b"", length=64 << 20)[:-4]  # the header only, unmasked key below
    huge += bytes(4) + one_mib  # a zero mask key: the payload goes as it is
    fragments = frame(0x2, b"x" * 1024, fin=False) + frame(0x0, b"x" * 1024, fin=False) * 2047

    async def attack(data: bytes) -> None:
        codes.append(await ws_attack(server.port("ws"), data))

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(attack, huge)
                nursery.start_soon(attack, fragments)
            await server.fresh_client()
            peak = rss(server.pid)
    assert codes == [1009] * 100, sorted(set(codes), key=str)
    assert peak - base.rss < 64 << 20, f"{(peak - base.rss) >> 20} MiB held"
    await server.check_recovered(base)


async def test_ping_flood(server: HostileServer) -> None:
    """20 clients each send pings (125 bytes) as fast as they can for 4 s
    and never read a pong: the server's memory stays bounded (its pongs
    wait in the sockets, then it stops reading), and others are served."""
    base = await server.baseline()
    ping = frame(0x9, b"p" * 125) * 1000  # 131 KiB a write
    sent: list[int] = []
    peak = base.rss

    async def flood(stream: trio.SocketStream) -> None:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        total = 0
        with trio.move_on_after(4):
            try:
                while True:
                    await stream.send_all(ping)
                    total += len(ping)
            except trio.BrokenResourceError:
                pass
        sent.append(total)

    with trio.fail_after(60):
        streams = await connect_many(server.port("ws"), 20)
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(flood, stream)
            for _ in range(3):
                await trio.sleep(1)
                await server.fresh_client()
                peak = max(peak, rss(server.pid))
        await close_all(streams)
    print(f"ping flood: {sum(sent) >> 20} MiB of pings sent, peak rss {peak >> 20} MiB "
          f"(before {base.rss >> 20} MiB)")
    assert peak - base.rss < 64 << 20, f"{(peak - base.rss) >> 20} MiB held"
    await server.check_recovered(base)
