"""remove and clear: immediate removal, which may cut the buffer being written
(docs/semantics.rst, "Removal")."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import (
    Events,
    RecordingStream,
    b,
    bs,
    lifecycle,
    settle,
)

from trio_msink import ClientStatus, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_remove_is_immediate_cuts_the_write_and_is_idempotent() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            a, f = RecordingStream(stalled=True), RecordingStream()
            sink.add(a)
            sink.add(f)
            await sink.send(b(0))
            await settle()  # A's stream blocks inside send_all(b0)
            await sink.send(b(1))
            sink.remove(a)  # callbacks run on the caller, before remove returns
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            assert sink.num_handles == 1
            assert sink.get_stats(a) is None
            sink.remove(a)
            sink.remove(RecordingStream())
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            assert len(events.log) == 4  # f added, a added/removed/socket_removed
            a.unstall()
            await sink.send(b(2))
            await settle()
            assert a.data == b""  # b0 cut, b1 discarded
            assert f.data == bs(0, 1, 2)
            assert not a.closed  # the sink never closes a stream it was given


async def test_remove_right_after_add() -> None:
    """A client removed before its task ever ran."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            a = RecordingStream()
            sink.add(a)
            sink.remove(a)
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            await settle()
            await sink.send(b(0))
            await settle()
            assert a.data == b""
            assert sink.num_handles == 0


async def test_clear_removes_every_client() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            a, s = RecordingStream(), RecordingStream(stalled=True)
            sink.add(a)
            sink.add(s)
            await sink.send(b(0))
            await settle()
            sink.clear()
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            assert events.of(s) == lifecycle(ClientStatus.REMOVED)
            assert sink.num_handles == 0
            await sink.send(b(1))
            s.unstall()
            await settle()
            assert a.data == bs(0)
            assert s.data == b""
