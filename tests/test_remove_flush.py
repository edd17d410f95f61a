"""remove_flush: a client gets what was queued for it, then is removed
(docs/semantics.rst, "Removal")."""

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
    lifecycle,
    settle,
    stats,
)

from trio_msink import ClientStatus, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_remove_flush_sends_what_was_queued_and_nothing_later() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            a = RecordingStream()
            sink.add(a)
            await sink.send(b(0))
            await settle()
            assert a.data == bs(0)  # caught up
            a.stall()
            await sink.send(b(1))
            await settle()  # A's stream blocks inside send_all(b1)
            await sink.send(b(2))
            await sink.send(b(3))
            sink.remove_flush(a)
            assert events.of(a) == ADDED
            assert stats(sink, a).status == ClientStatus.FLUSHING
            await sink.send(b(4))
            await sink.send(b(5))
            assert events.of(a) == ADDED
            a.unstall()
            await settle()
            assert a.data == bs(0, 1, 2, 3)
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            assert sink.num_handles == 0


async def test_remove_flush_finishes_the_buffer_being_written() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            a = RecordingStream(stalled=True)
            sink.add(a)
            await sink.send(b(0))
            await settle()  # A's stream blocks inside send_all(b0): nothing waiting
            sink.remove_flush(a)
            assert events.of(a) == ADDED
            await sink.send(b(1))
            a.unstall()
            await settle()
            assert a.data == bs(0)
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)


async def test_timeout_still_applies_while_flushing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks(), timeout=0.5) as sink:
            a = RecordingStream(stalled=True)
            sink.add(a)
            await sink.send(b(0))
            await sink.send(b(1))
            start = trio.current_time()
            sink.remove_flush(a)
            await trio.sleep(2)
            assert events.of(a) == lifecycle(ClientStatus.SLOW)
            assert events.removed_at(a) - start == pytest.approx(0.5)


async def test_remove_flush_of_a_caught_up_client_removes_at_once() -> None:
    """Quirk Q7 in docs/gstreamer.rst fixed (GStreamer waits for the next push and withholds it)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            a = RecordingStream()
            sink.add(a)
            await sink.send(b(0))
            await settle()
            sink.remove_flush(a)
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            assert sink.num_handles == 0
            await sink.send(b(1))
            await settle()
            assert a.data == bs(0)


async def test_remove_overrides_a_pending_remove_flush() -> None:
    """Quirk Q21 in docs/gstreamer.rst fixed: remove during a pending
    remove_flush removes at once."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            a = RecordingStream(stalled=True)
            sink.add(a)
            await sink.send(b(0))
            await settle()  # A's stream blocks inside send_all(b0)
            await sink.send(b(1))
            sink.remove_flush(a)
            assert events.of(a) == ADDED
            sink.remove(a)
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            assert sink.num_handles == 0
            a.unstall()
            await settle()
            assert a.data == b""
