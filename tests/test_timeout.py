"""timeout: removal for lack of write progress, never for idleness
(docs/semantics.rst, "Timeout"). Under Trio's mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import (
    ADDED,
    DelayedStream,
    Events,
    RecordingStream,
    SteppedStream,
    b,
    bs,
    frame,
    frames,
    lifecycle,
    payload,
    send_each,
    settle,
    socket_stream_pair,
)

from trio_msink import ClientStatus, Sink, SyncMethod

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_timeout_never_removes_an_idle_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Quirk Q10 in docs/gstreamer.rst fixed (GStreamer kicks a prompt client
    of a stalled stream)."""
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks(), timeout=0.2) as sink:
            a = RecordingStream()
            sink.add(a)
            await trio.sleep(10)
            await sink.send(b(0))
            await settle()
            await trio.sleep(10)
            await sink.send(b(1))
            await settle()
            assert a.data == bs(0, 1)
            assert events.of(a) == ADDED


async def test_timeout_never_removes_a_client_waiting_for_a_keyframe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        async with Sink(
            **events.callbacks(), timeout=0.2, sync_method=SyncMethod.NEXT_KEYFRAME,
        ) as sink:
            a = RecordingStream()
            sink.add(a)
            for n in range(20):
                await sink.send(frame(f"d{n}"))
                await trio.sleep(0.1)
            assert events.of(a) == ADDED
            await send_each(sink, frames("k20 d21"))
            assert a.data == payload("k20 d21")


async def test_timeout_removes_a_client_without_write_progress_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks(), timeout=0.2) as sink:
            f, s = RecordingStream(), RecordingStream(stalled=True)
            sink.add(f)
            sink.add(s)
            await trio.sleep(5)  # idle: the clock does not run for S
            start = trio.current_time()
            await sink.send(b(0))  # S's stream blocks inside send_all(b0)
            await trio.sleep(0.1)
            assert events.of(s) == ADDED
            await trio.sleep(1)
            assert events.of(s) == lifecycle(ClientStatus.SLOW)
            assert 0.2 <= events.removed_at(s) - start <= 0.4
            await sink.send(b(1))
            await settle()
            assert f.data == bs(0, 1)
            assert events.of(f) == ADDED


async def test_timeout_spares_a_client_that_completes_writes_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks(), timeout=0.2) as sink:
            s = SteppedStream()
            sink.add(s)
            for n in range(5):
                await sink.send(b(n))
            for _ in range(5):  # one buffer every 0.15 s: progress within the timeout
                await trio.sleep(0.15)
                s.allow()
            await settle()
            assert b"".join(s.writes) == bs(0, 1, 2, 3, 4)
            assert events.of(s) == ADDED


async def test_socket_without_progress_meets_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        server, peer = socket_stream_pair()
        async with Sink(**events.callbacks(), timeout=0.5) as sink:
            sink.add(server)
            for n in range(40):  # 2.5 MiB: more than any socket buffer
                await sink.send(b(n, 64 * 1024))
            last = trio.current_time()
            await trio.sleep(5)
            assert events.of(server) == lifecycle(ClientStatus.SLOW)
            assert events.removed_at(server) - last <= 0.5
        await server.aclose()
        await peer.aclose()


async def test_timeout_removes_a_stalled_client_but_never_an_idle_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = Events()
    removed_at: list[float] = []

    def on_removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
        removed_at.append(trio.current_time())
        events.on_client_removed(stream, status)

    stalled = RecordingStream(stalled=True)
    healthy = RecordingStream()
    idle = RecordingStream()
    async with Sink(timeout=3, **{**events.callbacks(), "on_client_removed": on_removed}) as sink:
        sink.add(stalled)
        sink.add(healthy)
        start = trio.current_time()
        await sink.send(b"frame")
        sink.add(idle)  # after the send: it has nothing to write
        await trio.sleep(2.9)
        assert events.removed == []
        await trio.sleep(0.2)
        assert events.removed == [(stalled, ClientStatus.SLOW)]
        assert removed_at[0] - start == pytest.approx(3)
        await trio.sleep(1000)
        assert events.removed == [(stalled, ClientStatus.SLOW)]
        assert healthy.data == b"frame"
        # after a long idle stretch, new data is not a stall
        await sink.send(b"late")
        await settle()
        assert idle.data == b"late"
        assert healthy.data == b"framelate"
        assert events.removed == [(stalled, ClientStatus.SLOW)]


async def test_timeout_does_not_remove_a_client_that_progresses_slowly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = Events()
    paced = DelayedStream(delay=2)
    async with Sink(timeout=3, **events.callbacks()) as sink:
        sink.add(paced)
        for i in range(5):
            await sink.send(b"%d" % i)
        await trio.sleep(20)  # 10 s of writing in all, never 3 s without progress
        assert paced.writes == [b"0", b"1", b"2", b"3", b"4"]
        assert events.removed == []
