"""Peers that go away and streams that fail: a removal with CLOSED or ERROR,
never an exception out of the sink (docs/semantics.rst, "Removal")."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
import trio
import trio.testing
from conftest import (
    ADDED,
    Address,
    Events,
    RecordingStream,
    b,
    bs,
    connect,
    lag_of,
    lifecycle,
    name_of,
    peer_of,
    poll_until,
    read_exactly,
    seq_frame,
    serving,
    settle,
    socket_stream_pair,
    tcp_pair,
)

from trio_msink import Buffer, ClientStatus, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_peer_close_is_a_closed_removal_and_leaves_the_stream_open() -> None:
    with trio.fail_after(5):
        events = Events()
        server, peer = socket_stream_pair()
        async with Sink(**events.callbacks()) as sink:
            sink.add(server)
            await sink.send(b(0))
            assert await read_exactly(peer, 10) == bs(0)
            await peer.aclose()
            await settle()
            assert events.of(server) == lifecycle(ClientStatus.CLOSED)
            assert server.socket.fileno() != -1  # not closed by the sink
        await server.aclose()


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (trio.BrokenResourceError(), ClientStatus.CLOSED),
        (RuntimeError("boom"), ClientStatus.ERROR),
    ],
)
async def test_write_failure_is_a_removal_never_an_exception(
    failure: BaseException, status: ClientStatus
) -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            bad, good = RecordingStream(fail=failure), RecordingStream()
            sink.add(bad)
            sink.add(good)
            await sink.send(b(0))
            await settle()
            assert events.of(bad) == lifecycle(status)
            await sink.send(b(1))
            await settle()
            assert good.data == bs(0, 1)
            assert events.of(good) == ADDED


async def test_peer_that_closes_is_removed_closed_and_the_others_are_served() -> None:
    events = Events()
    served: dict[Address, ClientStatus] = {}
    frames = [seq_frame(seq, 100 + seq) for seq in range(10)]

    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink:

            async def handler(stream: trio.SocketStream) -> None:
                served[peer_of(stream)] = await sink.serve(stream)

            async with serving(handler) as port:
                quitter = await connect(port)
                stayer = await connect(port)
                await events.wait_added(2)
                quitter_server = events.server_for(quitter)
                stayer_server = events.server_for(stayer)
                quitter_name = name_of(quitter)
                await quitter.aclose()

                assert await events.wait_removed(quitter_server) == ClientStatus.CLOSED
                assert events.socket_removed == [quitter_server]
                await poll_until(lambda: quitter_name in served)
                assert served[quitter_name] == ClientStatus.CLOSED

                for data in frames:
                    await sink.send(data)
                assert await read_exactly(stayer, sum(map(len, frames))) == b"".join(frames)
                assert events.status(stayer_server) is None
                assert sink.num_handles == 1
                await stayer.aclose()
                assert await events.wait_removed(stayer_server) == ClientStatus.CLOSED


async def test_peer_reset_while_writing_is_removed_closed() -> None:
    """Without reading, the writer itself sees the reset (ECONNRESET / EPIPE)."""
    events = Events()
    server, client = await tcp_pair()
    other_server, other_client = await tcp_pair()
    with trio.fail_after(10):
        async with Sink(handle_read=False, **events.callbacks()) as sink:
            sink.add(server)
            sink.add(other_server)
            # SO_LINGER 0: close() sends RST
            client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()
            sent = 0
            while events.status(server) is None:
                await sink.send(seq_frame(sent, 1000))
                sent += 1
                await poll_until(lambda: lag_of(sink, other_server) == 0)
            assert events.status(server) == ClientStatus.CLOSED
            expected = b"".join(seq_frame(seq, 1000) for seq in range(sent))
            assert await read_exactly(other_client, len(expected)) == expected
            assert sink.num_handles == 1
    await server.aclose()
    await other_server.aclose()
    await other_client.aclose()


class FailingStream(trio.abc.SendStream):
    """A send stream whose ``send_all`` raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.attempts = 0
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.attempts += 1
        await trio.lowlevel.checkpoint()
        raise self.error

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize(
    "error",
    [RuntimeError("boom"), ValueError("bad"), OSError(errno.EIO, "I/O error")],
    ids=["RuntimeError", "ValueError", "OSError-EIO"],
)
async def test_stream_raising_in_send_all_is_removed_error_and_the_sink_keeps_running(
    error: Exception,
) -> None:
    events = Events()
    failing = FailingStream(error)
    server, client = await tcp_pair()
    frames = [seq_frame(seq, 500) for seq in range(6)]
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink:
            sink.add(failing)
            sink.add(server)
            for data in frames[:3]:
                await sink.send(data)
            assert await events.wait_removed(failing) == ClientStatus.ERROR
            assert failing.attempts == 1
            for data in frames[3:]:
                await sink.send(data)
            late_server, late_client = await tcp_pair()
            sink.add(late_server)
            await sink.send(b"late")
            assert await read_exactly(client, 6 * len(frames[0]) + 4) == b"".join(frames) + b"late"
            assert await read_exactly(late_client, 4) == b"late"
            assert sink.num_handles == 2
    # leaving the block normally raised nothing; the sink closed no stream
    assert not failing.closed
    assert events.socket_removed.count(failing) == 1
    for stream in (server, client, late_server, late_client):
        await stream.aclose()


async def test_serve_of_a_failing_stream_returns_error() -> None:
    failing = FailingStream(RuntimeError("boom"))
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            statuses: list[ClientStatus] = []

            async def serve() -> None:
                statuses.append(await sink.serve(failing))

            nursery.start_soon(serve)
            await poll_until(lambda: sink.num_handles == 1)
            await sink.send(b"x")
        assert statuses == [ClientStatus.ERROR]


async def test_raising_callback_removes_its_client_with_error_only() -> None:
    events = Events()
    victim, victim_client = await tcp_pair()
    server, client = await tcp_pair()

    def on_dispatched(stream: trio.abc.SendStream, buffer: Buffer) -> None:
        if stream is victim:
            raise RuntimeError("callback bug")

    with trio.fail_after(10):
        async with Sink(send_dispatched=True, on_dispatched=on_dispatched,
                        **events.callbacks()) as sink:
            sink.add(victim)
            sink.add(server)
            await sink.send(b"one")
            assert await events.wait_removed(victim) == ClientStatus.ERROR
            await sink.send(b"two")
            assert await read_exactly(client, 6) == b"onetwo"
            assert events.status(server) is None
    for stream in (victim, victim_client, server, client):
        await stream.aclose()
