"""Fanout.wait: the one place a writer waits for data (cancellation included)."""

from __future__ import annotations

import trio
import trio.testing

from trio_msink import Buffer, SyncMethod
from trio_msink._fanout import Fanout
from trio_msink._placement import Burst


async def test_wait_returns_once_a_buffer_is_queued_for_the_cursor() -> None:
    fanout = Fanout()
    cursor = fanout.history.add("c", SyncMethod.NEXT_KEYFRAME, Burst())
    woken = trio.Event()

    async def waiter() -> None:
        await fanout.wait(cursor)
        woken.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            fanout.send_nowait(Buffer(b"d", delta_unit=True))  # not for it: no keyframe yet
            await trio.testing.wait_all_tasks_blocked()
            assert not woken.is_set()
            fanout.send_nowait(Buffer(b"k"))
            await woken.wait()
    assert fanout.history.has_waiting(cursor)


async def test_wait_returns_when_a_remove_flush_starts() -> None:
    fanout = Fanout()
    cursor = fanout.history.add("c", SyncMethod.LATEST, Burst())
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fanout.wait, cursor)
            await trio.testing.wait_all_tasks_blocked()
            fanout.start_flush(cursor)
    assert fanout.history.flushed(cursor)


async def test_wait_on_a_removed_cursor_waits_until_cancelled() -> None:
    fanout = Fanout()
    cursor = fanout.history.add("c", SyncMethod.LATEST, Burst())
    fanout.history.remove(cursor)
    fanout.send_nowait(Buffer(b"x"))
    with trio.move_on_after(0.05) as scope:
        await fanout.wait(cursor)
    assert scope.cancelled_caught


async def test_wait_with_data_waiting_is_a_checkpoint_and_takes_nothing() -> None:
    fanout = Fanout()
    cursor = fanout.history.add("c", SyncMethod.LATEST, Burst())
    fanout.send_nowait(Buffer(b"x"))
    with trio.CancelScope() as scope:
        scope.cancel()
        await fanout.wait(cursor)  # a checkpoint: raises Cancelled here
    assert scope.cancelled_caught
    assert fanout.history.has_waiting(cursor)
