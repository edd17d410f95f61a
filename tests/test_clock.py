"""Sync pacing by PTS (docs/semantics.rst, "Sync pacing"), under trio.testing.MockClock."""

from __future__ import annotations

import trio
import trio.testing
from conftest import RecordingStream, settle

from trio_msink import Buffer, Sink
from trio_msink._clock import PacingBase


async def _timed_sends(sink: Sink, buffers: list[Buffer]) -> list[float]:
    start = trio.current_time()
    times = []
    for buffer in buffers:
        await sink.send(buffer)
        times.append(trio.current_time() - start)
    return times


async def test_first_pts_is_the_base_and_later_ones_wait_for_their_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with Sink(sync=True) as sink:
            client = RecordingStream()
            sink.add(client)
            await settle()
            times = await _timed_sends(sink, [Buffer(b"a", pts=10.0), Buffer(b"b", pts=10.5),
                                              Buffer(b"c", pts=12.0)])
            assert times == [0.0, 0.5, 2.0]
            await settle()
            assert client.data == b"abc"


async def test_late_buffers_and_buffers_without_pts_go_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with Sink() as sink:
            await sink.send(Buffer(b"a", pts=0.0))
            await trio.sleep(5)
            start = trio.current_time()
            await sink.send(Buffer(b"late", pts=1.0))  # due 4 s ago: at once
            await sink.send(Buffer(b"untimed"))
            await sink.send(Buffer(b"due", pts=5.5))
            assert trio.current_time() - start == 0.5


async def test_without_sync_nothing_waits(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with Sink(sync=False) as sink:
            times = await _timed_sends(sink, [Buffer(b"a", pts=0.0), Buffer(b"b", pts=100.0)])
            assert times == [0.0, 0.0]


async def test_a_buffer_without_pts_keeps_its_place_behind_a_waiting_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with Sink() as sink:
            client = RecordingStream()
            sink.add(client)
            await sink.send(Buffer(b"a", pts=0.0))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sink.send, Buffer(b"b", pts=3.0))
                await settle()
                nursery.start_soon(sink.send, Buffer(b"c"))
            await settle()
            assert client.data == b"abc"


async def test_a_cancelled_send_queues_nothing(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with Sink() as sink:
            client = RecordingStream()
            sink.add(client)
            await sink.send(Buffer(b"a", pts=0.0))
            with trio.move_on_after(1):
                await sink.send(Buffer(b"never", pts=2.0))
            await sink.send(Buffer(b"b"))
            await settle()
            assert client.data == b"ab"
            assert sink.bytes_to_serve == 2


async def test_closing_the_sink_releases_a_waiting_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcome: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sink = Sink(linger=0)
            await sink.__aenter__()
            await sink.send(Buffer(b"a", pts=0.0))

            async def sender() -> None:
                try:
                    await sink.send(Buffer(b"b", pts=100.0))
                except trio.ClosedResourceError:
                    outcome.append("closed")

            nursery.start_soon(sender)
            await settle()
            await sink.__aexit__(None, None, None)
    assert outcome == ["closed"]


def test_the_pacing_base_is_fixed_by_the_first_pts_and_late_buffers_are_due_now() -> None:
    pacing = PacingBase()
    assert pacing.due(None, 100.0) is None  # no PTS: never delayed, no base
    assert pacing.due(5.0, 100.0) is None  # the first PTS: base = 95
    assert pacing.due(7.0, 100.0) == 102.0
    assert pacing.due(6.0, 101.5) is None  # due at 101: late, so now
    assert pacing.due(None, 101.5) is None
    assert pacing.due(10.0, 103.0) == 105.0
