"""Placement: where a new client starts (docs/semantics.rst, "Placement: where
a new client starts" and "Worked examples of placement").

Every sync method and burst, decided at add time against the history as it is
then. Conventions (also in conftest.py): ``b(n)`` is buffer number n, 10 bytes
unless stated; ``k0`` / ``d1`` are a keyframe / a delta unit. Where trio_msink
differs from GStreamer, the docstring says what GStreamer would do (the quirk
numbers are those of docs/gstreamer.rst, "Quirks, and what trio_msink does").
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import (
    Events,
    RecordingStream,
    b,
    bs,
    frame,
    frames,
    payload,
    pts_buffer,
    send_each,
    settle,
    stats,
)

from trio_msink import Buffer, Format, Sink, SyncMethod

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_latest_client_gets_every_buffer_sent_after_its_add() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            a, c = RecordingStream(), RecordingStream()
            sink.add(a)
            await sink.send(b(0))
            await sink.send(b(1))
            await settle()
            assert a.data == bs(0, 1)
            sink.add(c)
            await sink.send(b(2))
            await settle()
            assert a.data == bs(0, 1, 2)
            assert c.data == bs(2)
            assert sink.bytes_to_serve == 30
            assert sink.bytes_served == 40
            assert stats(sink, a).bytes_sent == 30
            assert stats(sink, c).bytes_sent == 10
            assert sink.num_handles == 2
            assert events.log == [("added", a, None), ("added", c, None)]


async def test_latest_client_gets_nothing_sent_before_its_add() -> None:
    with trio.fail_after(5):
        async with Sink(bytes_min=1000) as sink:
            for n in range(5):
                await sink.send(b(n))
            assert sink.buffers_queued == 5
            a = RecordingStream()
            sink.add(a)
            await settle()
            assert a.data == b""
            await sink.send(b(5))
            await sink.send(b(6))
            await settle()
            assert a.data == bs(5, 6)


async def test_burst_in_bytes_starts_where_the_minimum_is_reached_within_the_maximum() -> None:
    """Placement at add time, against b3..b7 (GStreamer places after b8
    arrives and gets b6 b7 b8 / b7 b8 / b5 b6 b7 b8)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(
            **events.callbacks(),
            bytes_min=45,
            sync_method=SyncMethod.BURST,
            burst_format=Format.BYTES,
            burst_value=25,
        ) as sink:
            for n in range(8):
                await sink.send(b(n))
            assert sink.buffers_queued == 5  # b3..b7
            plain, capped, wide, refused = (RecordingStream() for _ in range(4))
            sink.add(plain)  # min 25 bytes, no max
            sink.add_full(capped, SyncMethod.BURST, Format.BYTES, 25, Format.BYTES, 25)
            sink.add_full(wide, SyncMethod.BURST, Format.BYTES, 35, Format.BYTES, 1000)
            await settle()
            assert plain.data == bs(5, 6, 7)  # 30 >= 25
            assert capped.data == bs(6, 7)  # 30 would be over 25
            assert wide.data == bs(4, 5, 6, 7)  # 40 >= 35
            handles = sink.num_handles
            with pytest.raises(ValueError):
                sink.add_full(refused, SyncMethod.BURST, Format.BYTES, 25, Format.BYTES, 20)
            assert sink.num_handles == handles == 3
            assert sink.get_stats(refused) is None
            await sink.send(b(8))
            await settle()
            assert plain.data == bs(5, 6, 7, 8)
            assert capped.data == bs(6, 7, 8)
            assert wide.data == bs(4, 5, 6, 7, 8)
            assert refused.data == b""
            assert events.of(refused) == []
            assert [name for name, _, _ in events.log] == ["added"] * 3


async def test_burst_bigger_than_history_gets_all_of_it() -> None:
    """Quirk Q4 fixed: a burst bigger than history gets all of it (GStreamer: all
    but the oldest)."""
    with trio.fail_after(5):
        async with Sink(
            bytes_min=1000, sync_method=SyncMethod.BURST, burst_format=Format.BYTES,
            burst_value=100,
        ) as sink:
            for n in range(3):
                await sink.send(b(n, 16))
            a = RecordingStream()
            sink.add(a)
            await sink.send(b(3, 16))
            await settle()
            assert a.data == bs(0, 1, 2, 3, size=16)


async def test_burst_without_minimum_is_the_newest_buffer() -> None:
    with trio.fail_after(5):
        async with Sink(bytes_min=1000, sync_method=SyncMethod.BURST) as sink:
            for n in range(3):
                await sink.send(b(n))
            a = RecordingStream()
            sink.add(a)
            await settle()
            assert a.data == bs(2)
            await sink.send(b(3))
            await settle()
            assert a.data == bs(2, 3)


async def test_burst_in_time_is_seconds_of_pts_span() -> None:
    """Seconds of PTS span, placed at add time against PTS 40..90
    (GStreamer, placing after PTS 100: 80 90 100 and 90 100)."""
    with trio.fail_after(5):
        async with Sink(
            time_min=45, sync=False, sync_method=SyncMethod.BURST,
            burst_format=Format.TIME, burst_value=20,
        ) as sink:
            for pts in range(0, 100, 10):
                await sink.send(pts_buffer(pts))
            a, c = RecordingStream(), RecordingStream()
            sink.add(a)  # 70..90 spans 20 >= 20
            sink.add_full(c, SyncMethod.BURST, Format.TIME, 20, Format.BYTES, 25)  # 30 bytes > 25
            await sink.send(pts_buffer(100))
            await settle()
            assert a.data == b"".join(pts_buffer(p).tobytes() for p in (70, 80, 90, 100))
            assert c.data == b"".join(pts_buffer(p).tobytes() for p in (80, 90, 100))
            assert stats(sink, a).first_buffer_ts == 70.0
            assert stats(sink, a).last_buffer_ts == 100.0
            assert stats(sink, c).first_buffer_ts == 80.0


def _keyframes_at_0_3_6(n: int) -> Buffer:
    return Buffer(b(n), delta_unit=n not in (0, 3, 6))


async def test_burst_keyframe_methods_start_on_a_keyframe_within_the_maximum() -> None:
    """docs/semantics.rst, "Worked examples of placement", bursts on keyframes:
    placed at add time against b1..b7 (keyframes b3 b6)."""
    with trio.fail_after(5):
        async with Sink(
            bytes_min=70, sync_method=SyncMethod.BURST_KEYFRAME, burst_format=Format.BYTES,
            burst_value=35,
        ) as sink:
            for n in range(8):
                await sink.send(_keyframes_at_0_3_6(n))
            assert sink.buffers_queued == 7  # b1..b7: 70 bytes
            default, max45, max30, with_kf30, with_kf_wide = (RecordingStream() for _ in range(5))
            sink.add(default)  # burst from b4 (40 >= 35) -> keyframe b3
            kf, bwk = SyncMethod.BURST_KEYFRAME, SyncMethod.BURST_WITH_KEYFRAME
            sink.add_full(max45, kf, Format.BYTES, 25, Format.BYTES, 45)  # b3 is 50 > 45 -> b6
            sink.add_full(max30, kf, Format.BYTES, 25, Format.BYTES, 30)  # b6, found looking newer
            sink.add_full(with_kf30, bwk, Format.BYTES, 25, Format.BYTES, 30)  # plain burst b5
            sink.add_full(with_kf_wide, bwk, Format.BYTES, 25, Format.BYTES, 1000)  # keyframe b3
            await sink.send(_keyframes_at_0_3_6(8))
            await settle()
            assert default.data == bs(3, 4, 5, 6, 7, 8)
            assert max45.data == bs(6, 7, 8)
            assert max30.data == bs(6, 7, 8)
            assert with_kf30.data == bs(5, 6, 7, 8)  # GStreamer: b7 b8 (its burst cap)
            assert with_kf_wide.data == bs(3, 4, 5, 6, 7, 8)


async def test_burst_keyframe_may_start_at_the_oldest_buffer() -> None:
    """Quirk Q6 fixed: the only keyframe is the oldest buffer and the burst reaches
    it, so the client starts there (GStreamer waits for the next keyframe)."""
    with trio.fail_after(5):
        async with Sink(
            bytes_min=1000, sync_method=SyncMethod.BURST_KEYFRAME, burst_format=Format.BYTES,
            burst_value=60,
        ) as sink:
            for n in range(4):
                await sink.send(Buffer(b(n, 16), delta_unit=n != 0))
            a = RecordingStream()
            sink.add(a)
            await sink.send(Buffer(b(4, 16), delta_unit=True))
            await sink.send(Buffer(b(5, 16)))
            await settle()
            assert a.data == bs(0, 1, 2, 3, 4, 5, size=16)


async def test_burst_keyframe_waits_when_history_has_no_keyframe() -> None:
    with trio.fail_after(5):
        async with Sink(
            bytes_min=1000, sync_method=SyncMethod.BURST_KEYFRAME, burst_format=Format.BYTES,
            burst_value=60,
        ) as sink:
            for n in range(4):
                await sink.send(Buffer(b(n, 16), delta_unit=True))
            a = RecordingStream()
            sink.add(a)
            await sink.send(Buffer(b(4, 16), delta_unit=True))
            await settle()
            assert a.data == b""
            await sink.send(Buffer(b(5, 16)))
            await sink.send(Buffer(b(6, 16), delta_unit=True))
            await settle()
            assert a.data == bs(5, 6, size=16)


async def test_burst_in_buffers_counts_exactly() -> None:
    """Quirks Q1 and Q2 fixed: a burst of 3 buffers with 8 in history is 3 buffers; a
    maximum in buffers caps it (GStreamer: only the newest buffer)."""
    with trio.fail_after(5):
        async with Sink(
            buffers_min=8, sync_method=SyncMethod.BURST, burst_format=Format.BUFFERS,
            burst_value=3,
        ) as sink:
            for n in range(8):
                await sink.send(b(n))
            assert sink.buffers_queued == 8
            three, capped = RecordingStream(), RecordingStream()
            sink.add(three)
            sink.add_full(capped, SyncMethod.BURST, Format.BYTES, 50, Format.BUFFERS, 2)
            await settle()
            assert three.data == bs(5, 6, 7)
            assert capped.data == bs(6, 7)


async def test_latest_keyframe_starts_at_the_newest_keyframe_which_history_keeps() -> None:
    with trio.fail_after(5):
        async with Sink(sync_method=SyncMethod.LATEST_KEYFRAME) as sink:
            for n in range(7):
                await sink.send(Buffer(b(n), delta_unit=n not in (0, 3)))
            assert sink.buffers_queued == 4  # b3..b6: back to the newest keyframe
            a = RecordingStream()
            sink.add(a)
            await sink.send(Buffer(b(7), delta_unit=True))
            await settle()
            assert a.data == bs(3, 4, 5, 6, 7)


async def test_latest_keyframe_without_a_keyframe_waits_for_one() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a = RecordingStream()
            sink.add_full(a, SyncMethod.LATEST_KEYFRAME, Format.UNDEFINED, -1, Format.UNDEFINED, -1)
            await send_each(sink, frames("d0 d1 k2 d3"))
            assert a.data == payload("k2 d3")


async def test_next_keyframe_waits_for_a_keyframe_sent_after_the_add() -> None:
    with trio.fail_after(5):
        async with Sink(sync_method=SyncMethod.NEXT_KEYFRAME) as sink:
            await sink.send(frame("k9"))  # before the add: never sent
            a = RecordingStream()
            sink.add(a)
            await send_each(sink, frames("d0 d1 k2 d3"))
            assert a.data == payload("k2 d3")
