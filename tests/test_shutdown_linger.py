"""Leaving the ``async with Sink()`` block: linger, exceptions, cancellation,
aclose, and clients after the last buffer (docs/semantics.rst, "Removal")."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import (
    ADDED,
    Events,
    RecordingStream,
    b,
    bs,
    lag_of,
    lifecycle,
    read_all,
    read_exactly,
    seq_frame,
    settle,
    socket_stream_pair,
    stats,
    tcp_pair,
)

from trio_msink import ClientStatus, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_leaving_the_block_lingers_then_removes_everyone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        a, s = RecordingStream(), RecordingStream(stalled=True)
        async with Sink(**events.callbacks(), linger=5.0) as sink:
            sink.add(a)
            sink.add(s)
            for n in range(3):
                await sink.send(b(n))
            await settle()  # A caught up; S blocks inside send_all(b0), b1 b2 waiting
            closing = trio.current_time()
        assert trio.current_time() - closing == pytest.approx(5.0)
        assert events.removed_at(a) == closing
        assert events.removed_at(s) - closing == pytest.approx(5.0)
        assert a.data == bs(0, 1, 2)
        assert s.data == b""
        assert events.of(a) == lifecycle(ClientStatus.REMOVED)
        assert events.of(s) == lifecycle(ClientStatus.REMOVED)
        assert not a.closed
        assert not s.closed
        assert sink.num_handles == 0


async def test_leaving_the_block_ends_when_clients_drain_within_linger(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        s = RecordingStream(stalled=True)

        async def unstall_later() -> None:
            await trio.sleep(1)
            s.unstall()

        async with trio.open_nursery() as nursery:
            async with Sink(**events.callbacks(), linger=5.0) as sink:
                sink.add(s)
                for n in range(3):
                    await sink.send(b(n))
                await settle()
                closing = trio.current_time()
                nursery.start_soon(unstall_later)
            assert trio.current_time() - closing == pytest.approx(1.0)
        assert s.data == bs(0, 1, 2)
        assert events.of(s) == lifecycle(ClientStatus.REMOVED)
        assert not s.closed


async def test_an_exception_in_the_block_skips_the_linger(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        a, s = RecordingStream(), RecordingStream(stalled=True)
        with pytest.raises(KeyError, match="boom"):  # as raised: not in a group
            async with Sink(**events.callbacks(), linger=5.0) as sink:
                sink.add(a)
                sink.add(s)
                for n in range(3):
                    await sink.send(b(n))
                await settle()
                closing = trio.current_time()
                raise KeyError("boom")
        assert trio.current_time() == closing
        assert events.of(a) == lifecycle(ClientStatus.REMOVED)
        assert events.of(s) == lifecycle(ClientStatus.REMOVED)
        s.unstall()
        await settle()
        assert s.data == b""
        assert not s.closed


async def test_cancelling_the_block_skips_the_linger(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        s = RecordingStream(stalled=True)
        with trio.move_on_after(1):
            async with Sink(**events.callbacks(), linger=5.0) as sink:
                sink.add(s)
                await sink.send(b(0))
                await sink.send(b(1))
                await trio.sleep_forever()
        assert trio.current_time() == pytest.approx(1.0)
        assert events.of(s) == lifecycle(ClientStatus.REMOVED)
        assert events.removed_at(s) == pytest.approx(1.0)


async def test_aclose_is_leaving_the_block(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        events = Events()
        sink = Sink(**events.callbacks(), linger=2)
        async with sink:
            s = RecordingStream(stalled=True)
            sink.add(s)
            await sink.send(b(0))
            await settle()
            closing = trio.current_time()
            await sink.aclose()
            assert trio.current_time() - closing == pytest.approx(2.0)
            assert events.of(s) == lifecycle(ClientStatus.REMOVED)
            with pytest.raises(trio.ClosedResourceError):
                await sink.send(b(1))


async def test_after_the_last_buffer_clients_stay_and_drain(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No EOS in Trio: when the producer stops sending, clients stay
    registered and still receive what is queued."""
    with trio.fail_after(600):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            s = RecordingStream(stalled=True)
            sink.add(s)
            for n in range(3):
                await sink.send(b(n))
            await trio.sleep(60)
            assert sink.num_handles == 1
            assert stats(sink, s).lag_buffers == 2  # b0 being written, b1 b2 waiting
            s.unstall()
            await settle()
            assert s.data == bs(0, 1, 2)
            await trio.sleep(60)
            assert events.of(s) == ADDED
            assert stats(sink, s).bytes_sent == 30


async def test_leaving_the_block_normally_lets_a_slow_reader_get_what_is_queued() -> None:
    events = Events()
    server, client = await tcp_pair(rcvbuf=4096, sndbuf=8192)
    frames = [seq_frame(seq, 64 * 1024) for seq in range(20)]
    expected = b"".join(frames)
    go = trio.Event()
    received = bytearray()

    async def slow_reader() -> None:
        await go.wait()
        while len(received) < len(expected):
            received.extend(await client.receive_some(4096))
            await trio.lowlevel.checkpoint()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            async with Sink(**events.callbacks()) as sink:
                sink.add(server)
                for data in frames:
                    await sink.send(data)
                assert lag_of(sink, server) > 0
                go.set()  # reading starts only as the block is left
            assert events.removed == [(server, ClientStatus.REMOVED)]
            assert events.socket_removed == [server]
    assert bytes(received) == expected
    await server.send_all(b"after")  # the sink left it open
    assert await read_exactly(client, 5) == b"after"
    await server.aclose()
    await client.aclose()


class _Boom(Exception):
    pass


async def test_an_exception_in_the_block_removes_clients_at_once() -> None:
    events = Events()
    server, client = await tcp_pair(rcvbuf=4096, sndbuf=8192)
    frames = [seq_frame(seq, 64 * 1024) for seq in range(20)]
    expected = b"".join(frames)
    reading = False
    reading_at_removal: list[bool] = []

    def on_removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
        reading_at_removal.append(reading)
        events.on_client_removed(stream, status)

    with trio.fail_after(10), pytest.raises(_Boom):  # as raised: not in a group
        # no linger limit: only an immediate removal lets this block end
        async with Sink(linger=-1, **{**events.callbacks(),
                        "on_client_removed": on_removed}) as sink:
            sink.add(server)
            for data in frames:
                await sink.send(data)
            assert lag_of(sink, server) > 0
            raise _Boom
    assert events.removed == [(server, ClientStatus.REMOVED)]
    assert reading_at_removal == [False]
    reading = True
    await server.aclose()  # ours to close
    with trio.fail_after(10):
        received = await read_all(client)
    assert len(received) < len(expected)
    assert received == expected[: len(received)]
    await client.aclose()


async def test_an_exception_in_the_block_comes_out_as_raised_not_in_a_group() -> None:
    """The exception the body raises is the one the caller catches: the same
    object, not wrapped in an ExceptionGroup, while the sink runs client tasks
    (one writing to a socket, one blocked inside ``send_all``)."""
    error = _Boom("from the body")
    writer, reader = socket_stream_pair()
    raised: BaseException | None = None
    with trio.fail_after(10):
        try:
            async with Sink() as sink:
                sink.add(writer)
                sink.add(RecordingStream(stalled=True))
                await sink.send(b(0))
                assert await read_exactly(reader, 10) == b(0)
                raise error
        except BaseException as caught:
            raised = caught
    assert type(raised) is _Boom
    assert raised is error
    await writer.aclose()
    await reader.aclose()


async def test_linger_expires_for_a_client_that_never_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = Events()
    stalled = RecordingStream(stalled=True)
    async with Sink(linger=5, **events.callbacks()) as sink:
        sink.add(stalled)
        await sink.send(b"stuck")
        await sink.send(b"waiting")
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(5)
    assert events.removed == [(stalled, ClientStatus.REMOVED)]
    assert events.socket_removed == [stalled]
