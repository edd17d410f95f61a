"""The WebSocket front on the fast path: real clients on 127.0.0.1.

Clients of ``WebSocketFront.serve_stream`` on a plain TCP socket are written
by the sink's direct-write path, one binary message per buffer, while
trio-websocket reads their frames and answers them (docs/front_websocket.md).
Two kinds of client check it: trio-websocket's, and a raw one on wsproto's
state machine, which sees every frame as it was sent and fails on any frame
cut or interleaved.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from _ws_client import RawClient
from conftest import TLS, Events, serving
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto.events import BytesMessage, CloseConnection, Event, Message, Ping, Pong

from trio_msink import Buffer, ClientStatus, FramedSocketStream, Framing, Sink
from trio_msink.fronts import WebSocketFramedStream, WebSocketFront, WebSocketStream
from trio_msink.fronts.websocket import BINARY_FRAMING, binary_frame_header


@asynccontextmanager
async def ws_server(sink: Sink, **kwargs: object) -> AsyncIterator[tuple[WebSocketFront, int]]:
    """A front's serve_stream under trio.serve_tcp on 127.0.0.1: (front, port)."""
    front = WebSocketFront(sink, **kwargs)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, front.serve_stream, 0, host="127.0.0.1"))
        yield front, listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def seq_message(seq: int, size: int) -> bytes:
    return struct.pack("!I", seq) + bytes([seq % 251]) * (size - 4)


# -- the framing -----------------------------------------------------------------


@pytest.mark.parametrize("size, header", [
    (1, b"\x82\x01"), (125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"),
    (65535, b"\x82\x7e\xff\xff"), (65536, b"\x82\x7f" + (65536).to_bytes(8, "big")),
])
def test_binary_frame_header_uses_the_shortest_length(size: int, header: bytes) -> None:
    assert binary_frame_header(size) == header
    assert bytes(BINARY_FRAMING.header(size)) == header


def test_framing_makes_a_buffer_once_without_copying_the_payload() -> None:
    calls: list[int] = []

    def header(size: int) -> bytes:
        calls.append(size)
        return b"<%d>" % size

    framing = Framing(header)
    payload = bytearray(b"abcd")
    buffer = Buffer([payload, b"ef"], pts=1.5, delta_unit=True)
    framed = framing.framed(buffer)
    assert framed is framing.framed(buffer)
    assert framed.tobytes() == b"<6>abcdef" and len(framed) == 9
    assert (framed.pts, framed.delta_unit) == (1.5, True)
    payload[0] = ord("A")  # the framed buffer shares the payload's memory
    assert framed.tobytes() == b"<6>Abcdef"
    framing.framed(Buffer(b"123456"))
    assert calls == [6]  # one header per size
    empty = Buffer(b"")
    assert framing.framed(empty) is empty  # nothing is sent for an empty buffer
    segments, total, complete = framing.segments([buffer, empty, Buffer(b"x")], 1024, 1 << 20)
    assert b"".join(segments) == b"<6>Abcdef<1>x" and total == 13 and complete
    assert not framing.segments([buffer, buffer], 4, 1 << 20)[2]


def test_framed_buffers_kept_for_sharing_are_bounded() -> None:
    framing = Framing(lambda size: b"h")
    big = [Buffer(bytes(1 << 20)) for _ in range(10)]
    for buffer in big:
        framing.framed(buffer)
    assert framing.framed(big[-1]) is framing.framed(big[-1])  # still shared
    kept = [entry[0] for entry in framing._framed.values()]
    assert sum(b.size for b in kept) <= 4 << 20 and kept[-1] is big[-1]
    for buffer in [Buffer(b"x") for _ in range(300)]:
        framing.framed(buffer)
    assert len(framing._framed) == 256


async def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="header"):
        Framing(b"\x82")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header"):
        Framing(lambda size: "text").header(3)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="socket_stream"):
        FramedSocketStream(trio.testing.MemorySendStream(), BINARY_FRAMING)  # type: ignore[arg-type]
    a, b = trio.socket.socketpair()
    with a, b, pytest.raises(TypeError, match="framing"):
        FramedSocketStream(trio.SocketStream(a), binary_frame_header)  # type: ignore[arg-type]


# -- the front -------------------------------------------------------------------


async def test_buffers_are_binary_messages_written_by_the_sink() -> None:
    events = Events()
    dispatched: list[Buffer] = []
    sent = [Buffer(b"a" * 10), Buffer([b"b" * 100, b"c" * 100]), Buffer(b"c" * 70_000),
            Buffer(b""), Buffer(b"d")]
    with trio.fail_after(20):
        async with Sink(**events.callbacks(), sync=False, send_dispatched=True,
                        on_dispatched=lambda stream, buffer: dispatched.append(buffer)
                        ) as sink, ws_server(sink) as (_, port):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await events.wait_added(1)
                [stream] = events.added
                assert isinstance(stream, WebSocketFramedStream)
                for buffer in sent:
                    await sink.send(buffer)
                got = [await ws.get_message() for _ in range(4)]
                assert got == [b.tobytes() for b in sent if b.size]
                # on_dispatched reports the buffers sent, not their frames
                assert dispatched == sent
                stats = sink.get_stats(stream)
                assert stats is not None
                assert stats.bytes_sent == sum(b.size for b in sent) + 2 + 4 + 10 + 2
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]


async def test_fragmented_and_control_frames_from_the_client() -> None:
    events = Events()
    with trio.fail_after(20):
        async with Sink(**events.callbacks(), sync=False, send_messages=True) as sink, \
                ws_server(sink) as (_, port):
            client = await RawClient.connect(port)
            await events.wait_added(1)
            await client.send(Message(b"frag", message_finished=False))
            await client.send(Ping(b"between fragments"))
            await client.send(Message(b"mented", message_finished=True))
            await sink.send(b"data")
            seen: list[Event] = []
            while len(seen) < 2:
                seen += await client.events()
            assert Pong(b"between fragments") in seen
            assert any(isinstance(e, BytesMessage) and e.data == b"data" for e in seen)
            await events.wait_for(lambda: len(events.messages) == 1)
            assert [data for _, data in events.messages] == [b"fragmented"]
            await client.send(CloseConnection(4000, "bye"))
            while not any(isinstance(e, CloseConnection) for e in await client.events()):
                pass
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]


async def test_pings_during_a_long_burst_get_pongs_between_whole_messages() -> None:
    # A small receive buffer and a slow reader keep the server's writes
    # partial, so each pong must wait for the message being written.
    count, size = 400, 20_000
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks(), sync=False) as sink, \
                ws_server(sink) as (_, port):
            client = await RawClient.connect(port, rcvbuf=16_384)
            await events.wait_added(1)

            async def produce() -> None:
                for seq in range(count):
                    await sink.send(seq_message(seq, size))
                    if seq % 50 == 0:
                        await trio.sleep(0.01)

            got: list[bytes] = []
            pongs: list[bytes] = []
            pings = 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                while len(got) < count:
                    if pings < 20 and len(got) >= pings * 15:
                        await client.send(Ping(b"p%d" % pings))
                        pings += 1
                    for event in await client.events(4096):
                        if isinstance(event, BytesMessage):
                            got.append(bytes(event.data))
                        elif isinstance(event, Pong):
                            pongs.append(bytes(event.payload))
                    await trio.lowlevel.checkpoint()
            assert got == [seq_message(seq, size) for seq in range(count)]
            while len(pongs) < pings:  # the last pongs may follow the burst
                await sink.send(b"x")
                pongs += [bytes(e.payload) for e in await client.events()
                          if isinstance(e, Pong)]
            assert pongs == [b"p%d" % i for i in range(pings)]


async def test_close_codes() -> None:
    events = Events()
    with trio.fail_after(20):
        async with Sink(**events.callbacks(), sync=False) as sink, \
                ws_server(sink) as (_, port):
            # The client closes with its code: removed CLOSED.
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await events.wait_added(1)
                await ws.aclose(4001, "leaving")
            await events.wait_socket_removed()
            # The sink removes the client: the front closes with 1000.
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await events.wait_added(2)
                await sink.send(b"last")
                assert await ws.get_message() == b"last"
                sink.remove(events.added[1])
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1000
            await events.wait_socket_removed(2)
            assert events.statuses == [ClientStatus.CLOSED, ClientStatus.REMOVED]


async def test_oversized_client_message_is_closed_with_1009() -> None:
    events = Events()
    with trio.fail_after(20):
        async with Sink(**events.callbacks(), sync=False) as sink, \
                ws_server(sink, max_message_size=1000) as (_, port):
            client = await RawClient.connect(port)
            await events.wait_added(1)
            await client.send(Message(b"x" * 600, message_finished=False))
            await client.send(Message(b"y" * 600, message_finished=True))
            closes: list[CloseConnection] = []
            while not closes:
                closes = [e for e in await client.events() if isinstance(e, CloseConnection)]
            assert closes[0].code == 1009
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]


async def test_many_clients_receive_the_same_messages() -> None:
    clients, count = 40, 200
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks(), sync=False) as sink, \
                ws_server(sink) as (_, port):
            results: list[list[bytes]] = []

            async def viewer(ready: trio.Event) -> None:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                    ready.set()
                    results.append([await ws.get_message() for _ in range(count)])

            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    ready = trio.Event()
                    nursery.start_soon(viewer, ready)
                    await ready.wait()
                await events.wait_added(clients)
                for seq in range(count):
                    await sink.send(seq_message(seq, 1000 + seq * 37))
                    if seq % 20 == 0:
                        await trio.lowlevel.checkpoint()
            expected = [seq_message(seq, 1000 + seq * 37) for seq in range(count)]
            assert len(results) == clients
            assert all(got == expected for got in results)


async def test_a_never_reading_client_is_removed_without_stalling_the_others() -> None:
    events = Events()
    count, size = 300, 16_000
    with trio.fail_after(60):
        async with Sink(**events.callbacks(), sync=False, buffers_max=50) as sink, \
                ws_server(sink) as (_, port):
            stalled = await RawClient.connect(port, rcvbuf=4096)  # never reads again
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await events.wait_added(2)
                got: list[bytes] = []

                async def read() -> None:
                    while len(got) < count:
                        got.append(bytes(await ws.get_message()))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    for seq in range(count):
                        await sink.send(seq_message(seq, size))
                        await trio.sleep(0.001)
                assert got == [seq_message(seq, size) for seq in range(count)]
                assert events.removed == [(events.added[0], ClientStatus.SLOW)]
            # The removed client's connection is aborted, not sent garbage.
            with trio.fail_after(10):
                while True:
                    try:
                        data = await stalled.stream.receive_some(1 << 20)
                    except trio.BrokenResourceError:
                        break
                    if not data:
                        break
            await stalled.stream.aclose()


async def test_without_the_sinks_reader_the_front_notices_a_closed_peer() -> None:
    events = Events()
    with trio.fail_after(20):
        async with Sink(**events.callbacks(), sync=False, handle_read=False) as sink, \
                ws_server(sink) as (_, port):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await events.wait_added(1)
                assert isinstance(events.added[0], WebSocketFramedStream)
                await ws.ping(b"still answered")  # trio-websocket keeps reading
                await sink.send(b"data")
                assert await ws.get_message() == b"data"
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.REMOVED]  # the front's sink.remove


async def test_tls_connections_take_the_message_path(tls: TLS) -> None:
    events = Events()
    with trio.fail_after(20):
        async with Sink(**events.callbacks(), sync=False) as sink:
            front = WebSocketFront(sink)

            async def handler(stream: trio.SocketStream) -> None:
                await front.serve_stream(tls.server_stream(stream))

            async with serving(handler) as port, open_websocket_url(
                    f"wss://localhost:{port}/", ssl_context=tls.client) as ws:
                await events.wait_added(1)
                assert isinstance(events.added[0], WebSocketStream)
                await sink.send(Buffer([b"one ", b"message"]))
                assert await ws.get_message() == b"one message"


async def test_a_route_to_another_front_takes_the_fast_path_too() -> None:
    events, video_events = Events(), Events()
    with trio.fail_after(20):
        async with Sink(**events.callbacks(), sync=False) as sink, \
                Sink(**video_events.callbacks(), sync=False) as video:
            routes = {"/video": WebSocketFront(video, path="/video")}
            async with ws_server(sink, routes=routes) as (_, port), \
                    open_websocket_url(f"ws://127.0.0.1:{port}/video") as ws:
                await video_events.wait_added(1)
                assert isinstance(video_events.added[0], WebSocketFramedStream)
                assert events.added == []
                await video.send(b"unit")
                assert await ws.get_message() == b"unit"


# -- a FramedSocketStream with a framing of its own --------------------------------


def _parse_records(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """``kind(1) length(4) payload`` records, and the incomplete rest."""
    records = []
    while len(data) >= 5:
        length = int.from_bytes(data[1:5], "big")
        if len(data) < 5 + length:
            break
        records.append((data[:1], data[5:5 + length]))
        data = data[5 + length:]
    return records, data


async def test_messages_between_buffers_never_split_a_buffer() -> None:
    framing = Framing(lambda size: b"D" + size.to_bytes(4, "big"))
    count, size, messages = 300, 5000, 30
    server, client = trio.socket.socketpair()
    for sock, option in ((server, socket.SO_SNDBUF), (client, socket.SO_RCVBUF)):
        sock.setsockopt(socket.SOL_SOCKET, option, 8192)
    events = Events()
    sent = [seq_message(seq, size) for seq in range(count)]
    notes = [b"note %d" % i for i in range(messages)]
    with trio.fail_after(60):
        async with Sink(**events.callbacks(), sync=False) as sink:
            stream = FramedSocketStream(trio.SocketStream(server), framing)
            reader = trio.SocketStream(client)
            sink.add(stream)
            records: list[tuple[bytes, bytes]] = []

            async def read() -> None:
                rest = b""
                while len(records) < count + messages:
                    rest += await reader.receive_some(3000)  # a slow reader
                    found, rest = _parse_records(rest)
                    records.extend(found)
                    await trio.sleep(0.0005)

            async def talk() -> None:
                for note in notes:
                    await stream.send_between(b"C" + len(note).to_bytes(4, "big") + note)
                    await trio.sleep(0.002)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                nursery.start_soon(talk)
                for data in sent:
                    await sink.send(data)
                    await trio.lowlevel.checkpoint()
            assert [p for kind, p in records if kind == b"D"] == sent
            assert [p for kind, p in records if kind == b"C"] == notes
            assert {kind for kind, _ in records} == {b"D", b"C"}
            # Once the sink let go between two buffers, the stream writes itself.
            sink.remove(stream)
            await events.wait_socket_removed()
            await stream.send_all(b"after")
            got = b""
            while len(got) < 10:
                got += await reader.receive_some()
            assert got == b"D\x00\x00\x00\x05after"
            await stream.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_between(b"x")
            await reader.aclose()
