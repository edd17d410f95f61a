"""Writing to clients: whole buffers in order, segmented and zero-length
buffers, partial writes and long backlogs (docs/semantics.rst, "The model: one
history, one cursor per client").

Socket buffers here are self-describing frames (``seq_frame`` in conftest.py):
an 8-byte header and a payload derived from the sequence number, so a reader
can check order, wholeness and content byte for byte.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from conftest import (
    LOCALHOST,
    Address,
    Events,
    RecordingStream,
    b,
    bs,
    lag_of,
    name_of,
    parse_seq_frames,
    peer_of,
    poll_until,
    read_all,
    read_exactly,
    seq_frame,
    serving,
    settle,
    socket_stream_pair,
    stats,
    tcp_pair,
)

from trio_msink import Buffer, ClientStatus, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_hundred_tcp_clients_each_receive_what_was_sent_after_they_joined() -> None:
    events = Events()
    sent: list[bytes] = []
    joined_at: dict[Address, int] = {}
    received: dict[Address, bytes] = {}

    def on_added(stream: trio.abc.SendStream) -> None:
        joined_at[peer_of(stream)] = len(sent)
        events.on_client_added(stream)

    async def send_next(sink: Sink) -> None:
        seq = len(sent)
        sent.append(seq_frame(seq, (seq * 7919) % 3000))
        await sink.send(sent[-1])

    async def client(port: int) -> None:
        stream = await trio.open_tcp_stream(LOCALHOST, port)
        async with stream:
            received[name_of(stream)] = await read_all(stream)

    with trio.fail_after(60):
        async with (
            Sink(**{**events.callbacks(), "on_client_added": on_added}) as sink,
            serving(sink.serve) as port,
            trio.open_nursery() as clients,
        ):
            for i in range(100):
                clients.start_soon(client, port)
                await events.wait_added(i + 1)
                for _ in range(i % 3):
                    await send_next(sink)
            for _ in range(20):
                await send_next(sink)
            for stream in events.added:
                sink.remove_flush(stream)
        # the clients have read to EOF: serve returned and serve_tcp closed each stream

    assert len(received) == 100
    assert len(set(joined_at.values())) > 60, "clients should join at many points"
    for address, data in received.items():
        start = joined_at[address]
        assert parse_seq_frames(data) == list(range(start, len(sent))), address
        assert data == b"".join(sent[start:]), address
    assert sorted(status for _, status in events.removed) == [ClientStatus.REMOVED] * 100
    assert sink.bytes_served == sum(len(data) for data in received.values())


_SEGMENTS = [f"seg{i}".encode() for i in range(11)]  # 45 bytes


_THREE = [b"one-", b"two-", b"three"]


async def test_segmented_buffer_is_written_as_its_bytes() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a = RecordingStream()
            sink.add(a)
            eleven = Buffer(_SEGMENTS)
            assert len(eleven) == 45
            await sink.send(eleven)
            await sink.send(Buffer(_THREE))
            await settle()
            assert a.data == b"".join(_SEGMENTS) + b"one-two-three"
            assert sink.bytes_served == 45 + 13


async def test_segmented_buffer_is_written_as_its_bytes_to_a_socket() -> None:
    with trio.fail_after(5):
        server, peer = socket_stream_pair()
        async with Sink() as sink:
            sink.add(server)
            await sink.send(Buffer(_SEGMENTS))
            await sink.send(Buffer(_THREE))
            got = await read_exactly(peer, 58)
            assert got == b"".join(_SEGMENTS) + b"one-two-three"
            await settle()
            assert sink.bytes_served == 58
        await server.aclose()
        await peer.aclose()


async def test_zero_length_buffers_send_nothing() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a = RecordingStream()
            sink.add(a)
            for buffer in (b(0), b"", Buffer([b"", b""]), b(1), b""):
                await sink.send(buffer)
            await settle()
            assert a.data == bs(0, 1)
            assert sink.bytes_to_serve == 20
            assert sink.bytes_served == 20
            assert stats(sink, a).lag_buffers == 0


async def test_zero_length_buffers_send_nothing_to_a_socket() -> None:
    with trio.fail_after(5):
        server, peer = socket_stream_pair()
        async with Sink() as sink:
            sink.add(server)
            for buffer in (b"", b(0), b"", Buffer([b"", b""]), b(1), b""):
                await sink.send(buffer)
            assert await read_exactly(peer, 20) == bs(0, 1)
            await settle()
            assert stats(sink, server).lag_buffers == 0
            await sink.send(b(2))
            assert await read_exactly(peer, 10) == bs(2)
        await server.aclose()
        await peer.aclose()


async def test_partial_writes_on_a_small_socket_deliver_every_byte() -> None:
    with trio.fail_after(10):
        server, peer = socket_stream_pair()
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        size = 300 * 1024
        buffers = [bytes([i]) * size for i in range(1, 5)]
        total = sum(map(len, buffers))
        received = bytearray()
        reads = 0

        async def reader() -> None:
            nonlocal reads
            while len(received) < total:
                chunk = await peer.receive_some(8192)
                assert chunk
                received.extend(chunk)
                reads += 1

        async with Sink() as sink, trio.open_nursery() as nursery:
            sink.add(server)
            nursery.start_soon(reader)
            for data in buffers:
                await sink.send(data)
        assert bytes(received) == b"".join(buffers)
        assert reads > len(buffers)  # many partial writes
        assert sink.bytes_served == total
        await server.aclose()
        await peer.aclose()


async def test_multi_segment_and_large_buffers_arrive_intact() -> None:
    server, client = await tcp_pair()
    segments: list[bytes | bytearray | memoryview] = []
    for i in range(11):
        chunk = bytes([i]) * (i * 997)  # segment 0 is empty
        kinds = (bytes, bytearray, memoryview)
        segments.append(kinds[i % 3](chunk))
    multi = Buffer(segments)
    large = Buffer(bytes(range(256)) * (300 * 1024 // 256))
    assert len(segments) == 11
    assert len(large) == 300 * 1024
    expected = multi.tobytes() + large.tobytes()
    with trio.fail_after(10):
        async with Sink() as sink:
            sink.add(server)
            await sink.send(multi)
            await sink.send(large)
            received = await read_exactly(client, len(expected))
            assert received == expected
            assert sink.bytes_served == len(received)
            assert sink.bytes_to_serve == len(expected)
            stats = sink.get_stats(server)
            assert stats is not None
            assert stats.bytes_sent == len(received)
            sink.remove(server)
    # nothing more than the two buffers was written
    await server.aclose()
    assert await read_all(client) == b""
    await client.aclose()


async def test_backlog_of_thousands_of_buffers_is_written_exactly_in_many_writev_calls() -> None:
    """A client that does not read piles up more buffers than one writev takes
    (IOV_MAX); once it reads, partial writes cut buffers and segments anywhere
    and the bytes still arrive exactly, and every buffer is dispatched once."""
    server, client = await tcp_pair(rcvbuf=4096, sndbuf=8192)
    sent: list[Buffer] = []
    dispatched: list[Buffer] = []

    def on_dispatched(stream: trio.abc.SendStream, buffer: Buffer) -> None:
        assert stream is server
        dispatched.append(buffer)

    for seq in range(3000):
        data = seq_frame(seq, (seq * 37) % 701)
        if seq % 5 == 0:
            sent.append(Buffer([data[:3], data[3:11], b"", data[11:]]))
        else:
            sent.append(Buffer(data))
        if seq % 7 == 0:
            sent.append(Buffer(b""))  # zero-length buffers are fine
    expected = b"".join(b.tobytes() for b in sent)
    with trio.fail_after(30):
        async with Sink(send_dispatched=True, on_dispatched=on_dispatched) as sink:
            sink.add(server)
            for buffer in sent:
                await sink.send(buffer)
            assert lag_of(sink, server) > 1024
            received = await read_exactly(client, len(expected))
            await poll_until(lambda: len(dispatched) == len(sent))
            assert sink.bytes_served == len(expected)
    assert received == expected
    assert parse_seq_frames(received) == list(range(3000))
    assert [id(b) for b in dispatched] == [id(b) for b in sent]
    await server.aclose()
    await client.aclose()
