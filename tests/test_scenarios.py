"""Black-box scenarios of SPEC.md §20, re-read under API.md §4.

Each test reads like its scenario: push buffers, add clients, read what they
got, assert the bytes. Where trio_msink deliberately differs from GStreamer
(API.md §4 and §7: placement at add time, exact bursts and limits, fixed
quirks, seconds instead of nanoseconds) the expected values come from API.md,
and the docstring says what GStreamer would do instead.

Conventions: ``b(n)`` is buffer number n, 10 bytes unless stated; ``k0`` /
``d1`` are a keyframe / a delta unit; a "prompt" client is a
:class:`RecordingStream` that writes at once; a client whose "stream blocks
inside send_all(x)" is a stalled RecordingStream that has been given ``x``
(``x`` is being written: it is neither waiting nor part of the lag).
Streamheader scenarios (20-23) are in ``test_streamheader.py``.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RecordingStream, settle

from trio_msink import (
    Buffer,
    ClientStats,
    ClientStatus,
    Format,
    RecoverPolicy,
    Sink,
    SyncMethod,
)

# -- helpers -------------------------------------------------------------------


class Spinning(BaseException):
    """A test ran far past its ``trio.fail_after``: some task is spinning
    without a checkpoint, so Trio's own deadline can never fire."""


@pytest.fixture(autouse=True)
def _no_spin() -> Iterator[None]:
    """Turn a task that spins without checkpoints into a failure, not a hung suite.

    A BaseException, so that the sink's ``except Exception`` around client
    I/O cannot swallow it."""

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Spinning("no checkpoint for 15 s: a task is spinning")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 15)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)



def b(n: int, size: int = 10) -> bytes:
    """Buffer number ``n``: distinct, recognisable bytes, ``size`` long."""
    return f"b{n}".encode().ljust(size, b".")


def bs(*numbers: int, size: int = 10) -> bytes:
    """What a client reads after buffers ``numbers``."""
    return b"".join(b(n, size) for n in numbers)


def frame(name: str, pts: float | None = None) -> Buffer:
    """``"k0"`` is a keyframe, ``"d1"`` a delta unit; 10 bytes each."""
    return Buffer(name.encode().ljust(10, b"."), pts=pts, delta_unit=name.startswith("d"))


def frames(names: str) -> list[Buffer]:
    return [frame(name) for name in names.split()]


def payload(names: str) -> bytes:
    """What a client reads after the frames ``names`` (e.g. ``"k0 d1"``)."""
    return b"".join(name.encode().ljust(10, b".") for name in names.split())


def pts_buffer(pts: float, size: int = 10, *, keyframe: bool = True) -> Buffer:
    """A buffer whose bytes name its PTS (seconds)."""
    return Buffer(f"t{pts:g}".encode().ljust(size, b"."), pts=pts, delta_unit=not keyframe)


def stats(sink: Sink, stream: trio.abc.SendStream) -> ClientStats:
    found = sink.get_stats(stream)
    assert found is not None, "the client is not registered"
    return found


Event = tuple[str, ClientStatus | None]


def lifecycle(status: ClientStatus) -> list[Event]:
    """The callbacks a client gets from its add to its removal."""
    return [("added", None), ("removed", status), ("socket_removed", None)]


ADDED: list[Event] = [("added", None)]


class Events:
    """Records the sink's client callbacks, in order, with the Trio time."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object, ClientStatus | None]] = []
        self.times: dict[tuple[str, int], float] = {}

    def _record(self, name: str, stream: object, status: ClientStatus | None) -> None:
        self.log.append((name, stream, status))
        self.times[(name, id(stream))] = trio.current_time()

    def added(self, stream: object) -> None:
        self._record("added", stream, None)

    def removed(self, stream: object, status: ClientStatus) -> None:
        self._record("removed", stream, status)

    def socket_removed(self, stream: object) -> None:
        self._record("socket_removed", stream, None)

    @property
    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_client_added": self.added,
            "on_client_removed": self.removed,
            "on_client_socket_removed": self.socket_removed,
        }

    def of(self, stream: object) -> list[Event]:
        """The callbacks about ``stream``, in order."""
        return [(name, status) for name, s, status in self.log if s is stream]

    def removed_at(self, stream: object) -> float:
        return self.times[("removed", id(stream))]


def socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected pair of real (Unix) stream sockets: (sink side, reader side)."""
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await stream.receive_some(size - len(got))
        assert chunk, f"EOF after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


async def send_all(sink: Sink, buffers: list[Buffer], *, each: bool = True) -> None:
    """Push ``buffers``; with ``each``, let prompt clients read after every one."""
    for buffer in buffers:
        await sink.send(buffer)
        if each:
            await settle()


# -- 1, 2: latest ------------------------------------------------------------------


async def test_s01_fan_out_latest() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


async def test_s02_latest_never_sends_pre_add_data() -> None:
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


# -- 3: retention --------------------------------------------------------------------


async def test_s03_retention_by_bytes() -> None:
    with trio.fail_after(5):
        async with Sink(bytes_min=45) as sink:
            for n in range(8):
                await sink.send(b(n))
            assert sink.buffers_queued == 5  # b3..b7: 50 bytes >= 45, 40 would not do


async def test_s03_retention_unset_keeps_only_the_newest() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            for n in range(8):
                await sink.send(b(n))
                assert sink.buffers_queued == 1


async def test_s03_retention_by_time_in_seconds() -> None:
    """time_min is seconds of PTS span (GStreamer: 45 ns with PTS in ns)."""
    with trio.fail_after(5):
        async with Sink(time_min=45, sync=False) as sink:
            for pts in range(0, 100, 10):
                await sink.send(pts_buffer(pts))
            assert sink.buffers_queued == 6  # PTS 40..90: span 50 >= 45, 50..90 spans 40


async def test_s30_buffers_min_keeps_exactly_n() -> None:
    """Q3 fixed: buffers_min 4 keeps exactly 4 (GStreamer: 1, 2, 3, 1, 2, 3, ...)."""
    with trio.fail_after(5):
        async with Sink(buffers_min=4) as sink:
            queued = []
            for n in range(9):
                await sink.send(b(n))
                queued.append(sink.buffers_queued)
            assert queued == [1, 2, 3, 4, 4, 4, 4, 4, 4]


# -- 4 .. 8: bursts --------------------------------------------------------------------


async def test_s04_burst_bytes() -> None:
    """Placement at add time, against b3..b7 (GStreamer places after b8
    arrives and gets b6 b7 b8 / b7 b8 / b5 b6 b7 b8)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(
            **events.callbacks,
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


async def test_s05_burst_with_too_little_history_sends_all_of_it() -> None:
    """Q4 fixed: a burst bigger than history gets all of it (GStreamer: all
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


async def test_s05_burst_without_minimum_is_the_newest_buffer() -> None:
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


async def test_s06_burst_in_time() -> None:
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


async def test_s07_burst_keyframe_and_burst_with_keyframe() -> None:
    """§8.4 second list, placed at add time against b1..b7 (keyframes b3 b6)."""
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
            assert with_kf30.data == bs(5, 6, 7, 8)  # GStreamer: b7 b8 (Q4-style cap)
            assert with_kf_wide.data == bs(3, 4, 5, 6, 7, 8)


async def test_s08_burst_keyframe_may_start_at_the_oldest_buffer() -> None:
    """Q6 fixed: the only keyframe is the oldest buffer and the burst reaches
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


async def test_s08_burst_keyframe_waits_when_history_has_no_keyframe() -> None:
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


async def test_s30_burst_in_buffers_counts_exactly() -> None:
    """Q1/Q2 fixed: a burst of 3 buffers with 8 in history is 3 buffers; a
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


# -- 9, 10: keyframe methods -----------------------------------------------------------------


async def test_s09_latest_keyframe_and_retention() -> None:
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


async def test_s09_latest_keyframe_without_keyframe_waits_for_one() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a = RecordingStream()
            sink.add_full(a, SyncMethod.LATEST_KEYFRAME, Format.UNDEFINED, -1, Format.UNDEFINED, -1)
            await send_all(sink, frames("d0 d1 k2 d3"))
            assert a.data == payload("k2 d3")


async def test_s10_next_keyframe() -> None:
    with trio.fail_after(5):
        async with Sink(sync_method=SyncMethod.NEXT_KEYFRAME) as sink:
            await sink.send(frame("k9"))  # before the add: never sent
            a = RecordingStream()
            sink.add(a)
            await send_all(sink, frames("d0 d1 k2 d3"))
            assert a.data == payload("k2 d3")


# -- 11, 12: the worked example of API.md §4 ----------------------------------------------

_WORKED = "d1 d2 d3 k4 d5 d6 d7"


@pytest.mark.parametrize(
    ("policy", "reads", "dropped"),
    [
        (RecoverPolicy.NONE, "k0 d1 d2 d3 k4 d5 d6 d7", 0),
        (RecoverPolicy.RESYNC_LATEST, "k0 d7", 6),
        (RecoverPolicy.RESYNC_SOFT_LIMIT, "k0 d5 d6 d7", 4),
        (RecoverPolicy.RESYNC_KEYFRAME, "k0", 7),
    ],
)
async def test_s11_soft_limit_policies_worked_example(
    policy: RecoverPolicy, reads: str, dropped: int
) -> None:
    """API.md §4 worked example (GStreamer: latest k0 d5 d6 d7 / 4,
    soft-limit k0 k4 d5 d6 d7 / 3)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks, buffers_soft_max=3, recover_policy=policy) as sink:
            f, s = RecordingStream(), RecordingStream(stalled=True)
            sink.add(f)
            sink.add(s)
            await sink.send(frame("k0"))
            await settle()  # S's stream blocks inside send_all(k0)
            assert s.sends_started == 1
            await send_all(sink, frames(_WORKED))
            assert stats(sink, s).buffers_dropped == dropped
            s.unstall()
            await settle()
            assert s.data == payload(reads)
            assert f.data == payload("k0 " + _WORKED)
            assert stats(sink, f).buffers_dropped == 0
            assert stats(sink, s).buffers_dropped == dropped
            assert events.of(s) == ADDED


async def test_s11_resync_keyframe_resumes_on_a_keyframe_never_a_delta() -> None:
    with trio.fail_after(5):
        async with Sink(buffers_soft_max=3, recover_policy=RecoverPolicy.RESYNC_KEYFRAME) as sink:
            s = RecordingStream(stalled=True)
            sink.add(s)
            await sink.send(frame("k0"))
            await settle()
            await send_all(sink, frames(_WORKED))
            s.unstall()
            await settle()
            assert s.data == payload("k0")
            await send_all(sink, frames("d8 d9"))
            assert s.data == payload("k0")
            await send_all(sink, frames("k10 d11"))
            assert s.data == payload("k0 k10 d11")
            # the recovery skipped k4 d5 d6 d7 (and d1-d3 before); deltas that
            # arrive while it waits for a keyframe are never queued for it
            assert stats(sink, s).buffers_dropped == 7


async def test_s11_worked_example_with_a_hard_limit_instead() -> None:
    """buffers_max=5: S is removed SLOW inside the send of d6, the sixth
    buffer after k0."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks, buffers_max=5) as sink:
            f, s = RecordingStream(), RecordingStream(stalled=True)
            sink.add(f)
            sink.add(s)
            await sink.send(frame("k0"))
            await settle()  # S's stream blocks inside send_all(k0)
            await send_all(sink, frames("d1 d2 d3 k4 d5"))
            assert events.of(s) == ADDED
            await sink.send(frame("d6"))
            assert events.of(s) == lifecycle(ClientStatus.SLOW)
            await send_all(sink, frames("d7"))
            assert f.data == payload("k0 " + _WORKED)


@pytest.mark.parametrize("limit", ["buffers_max", "units_max"])
async def test_s12_hard_limit(limit: str) -> None:
    """Removed SLOW inside the send of the sixth buffer after b0, not the fifth."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks, **{limit: 5}) as sink:
            f, s = RecordingStream(), RecordingStream(stalled=True)
            sink.add(f)
            sink.add(s)
            await sink.send(b(0))
            await settle()  # S's stream blocks inside send_all(b0)
            for n in range(1, 6):
                await sink.send(b(n))
                assert stats(sink, s).lag_buffers == n
            assert events.of(s) == ADDED
            assert sink.num_handles == 2
            await sink.send(b(6))
            assert sink.num_handles == 1
            assert sink.get_stats(s) is None
            assert events.of(s) == lifecycle(ClientStatus.SLOW)
            await settle()
            assert f.data == bs(0, 1, 2, 3, 4, 5, 6)
            assert events.of(f) == ADDED
            s.unstall()
            await settle()
            assert s.data == b""  # the removal cut the buffer being written


@pytest.mark.parametrize(
    ("buffers_max", "units_max"), [(3, 1000), (10, 35)], ids=["buffers", "bytes"]
)
async def test_q11_buffers_limits_count_buffers_whatever_the_unit_format(
    buffers_max: int, units_max: int
) -> None:
    """Q11 fixed: with unit_format BYTES, buffers_max still counts buffers and
    both limits apply: the client goes when it waits 4 buffers (40 bytes)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(
            **events.callbacks, unit_format=Format.BYTES, buffers_max=buffers_max,
            units_max=units_max,
        ) as sink:
            s = RecordingStream(stalled=True)
            sink.add(s)
            await sink.send(b(0))
            await settle()
            for n in range(1, 4):
                await sink.send(b(n))
            assert events.of(s) == ADDED
            await sink.send(b(4))
            assert events.of(s) == lifecycle(ClientStatus.SLOW)


# -- 13, 14: limits in bytes and time ------------------------------------------------------


async def test_s13_soft_limit_in_bytes() -> None:
    """Exact (Q5 fixed): held at 30 bytes, 40 > 35; dropped grows by one per
    push from the 4th push after b0 (GStreamer: held at 50 bytes)."""
    with trio.fail_after(5):
        async with Sink(
            unit_format=Format.BYTES, units_soft_max=35,
            recover_policy=RecoverPolicy.RESYNC_SOFT_LIMIT,
        ) as sink:
            s = RecordingStream(stalled=True)
            sink.add(s)
            await sink.send(b(0))
            await settle()  # S's stream blocks inside send_all(b0)
            for n in range(1, 9):
                await sink.send(b(n))
                st = stats(sink, s)
                assert st.buffers_dropped == max(0, n - 3), n
                assert st.lag_bytes == 10 * min(n, 3), n
                assert st.lag_buffers == min(n, 3), n
            s.unstall()
            await settle()
            assert s.data == bs(0, 6, 7, 8)


@pytest.mark.parametrize(
    ("units_max", "kicked_at"), [(25, 4), (20, 4), (19.5, 3)]
)
async def test_s14_hard_limit_in_time(units_max: float, kicked_at: int) -> None:
    """Time lag in seconds = PTS(newest waiting) - PTS(oldest waiting),
    exact: 25 s is crossed by the 4th push after b0 (lag 30; GStreamer: 5th)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(
            **events.callbacks, sync=False, unit_format=Format.TIME, units_max=units_max,
        ) as sink:
            s = RecordingStream(stalled=True)
            sink.add(s)
            await sink.send(pts_buffer(0))
            await settle()  # S's stream blocks inside send_all(pts 0)
            for n in range(1, kicked_at):
                await sink.send(pts_buffer(10 * n))
                assert events.of(s) == ADDED, n
            await sink.send(pts_buffer(10 * kicked_at))
            assert events.of(s) == lifecycle(ClientStatus.SLOW)


# -- 15 .. 19: remove, remove_flush, duplicates ----------------------------------------------


async def test_s15_remove_flush_with_backlog() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


async def test_s15_remove_flush_finishes_the_buffer_being_written() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


async def test_s15_timeout_still_applies_while_flushing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks, timeout=0.5) as sink:
            a = RecordingStream(stalled=True)
            sink.add(a)
            await sink.send(b(0))
            await sink.send(b(1))
            start = trio.current_time()
            sink.remove_flush(a)
            await trio.sleep(2)
            assert events.of(a) == lifecycle(ClientStatus.SLOW)
            assert events.removed_at(a) - start == pytest.approx(0.5)


async def test_s16_remove_flush_of_a_caught_up_client_removes_at_once() -> None:
    """Q7 fixed (GStreamer waits for the next push and withholds it)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


async def test_s17_remove() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


async def test_s17_remove_right_after_add() -> None:
    """A client removed before its task ever ran."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
            a = RecordingStream()
            sink.add(a)
            sink.remove(a)
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            await settle()
            await sink.send(b(0))
            await settle()
            assert a.data == b""
            assert sink.num_handles == 0


async def test_s17_remove_overrides_a_pending_remove_flush() -> None:
    """Q21 fixed: remove during a pending remove_flush removes at once."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


async def test_s17_clear_removes_every_client() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


async def test_s18_duplicate_add() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
            h = RecordingStream()
            sink.add(h)
            sink.add(h)
            assert events.of(h) == [("added", None), ("removed", ClientStatus.DUPLICATE)]
            assert sink.num_handles == 1
            assert stats(sink, h).status == ClientStatus.OK
            await sink.send(b(0))
            await settle()
            assert h.data == bs(0)  # still streaming, and only once
            assert events.of(h) == [("added", None), ("removed", ClientStatus.DUPLICATE)]


async def test_s18_duplicate_serve_returns_duplicate() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            h = RecordingStream()
            sink.add(h)
            assert await sink.serve(h) == ClientStatus.DUPLICATE
            assert sink.num_handles == 1


async def test_s19_add_before_start_and_after_close() -> None:
    with trio.fail_after(5):
        events = Events()
        sink = Sink(**events.callbacks)
        a = RecordingStream()
        with pytest.raises((trio.ClosedResourceError, RuntimeError)):
            sink.add(a)
        assert sink.num_handles == 0
        assert events.log == []
        async with sink:
            pass
        with pytest.raises(trio.ClosedResourceError):
            sink.add(a)
        with pytest.raises(trio.ClosedResourceError):
            await sink.send(b(0))
        assert sink.num_handles == 0
        assert events.log == []


async def test_added_always_precedes_removed() -> None:
    """Q22 fixed: even a client removed from inside on_client_added."""
    with trio.fail_after(5):
        events = Events()
        sink = Sink(
            on_client_removed=events.removed, on_client_socket_removed=events.socket_removed,
        )

        def added(stream: Any) -> None:
            events.added(stream)
            sink.remove(stream)

        sink.on_client_added = added
        async with sink:
            a = RecordingStream()
            sink.add(a)
            await settle()
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            assert sink.num_handles == 0


# -- 24: timeout -------------------------------------------------------------------------


async def test_s24_timeout_never_kicks_an_idle_healthy_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Q10 fixed (GStreamer kicks a prompt client of a stalled stream)."""
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks, timeout=0.2) as sink:
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


async def test_s24_timeout_never_kicks_a_client_waiting_for_a_keyframe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        async with Sink(
            **events.callbacks, timeout=0.2, sync_method=SyncMethod.NEXT_KEYFRAME,
        ) as sink:
            a = RecordingStream()
            sink.add(a)
            for n in range(20):
                await sink.send(frame(f"d{n}"))
                await trio.sleep(0.1)
            assert events.of(a) == ADDED
            await send_all(sink, frames("k20 d21"))
            assert a.data == payload("k20 d21")


async def test_s24_timeout_kicks_a_client_without_write_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks, timeout=0.2) as sink:
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


class PacedStream(trio.abc.SendStream):
    """A client that completes one ``send_all`` per :meth:`allow` call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._credits = trio.Semaphore(0)

    def allow(self) -> None:
        self._credits.release()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)
        await self._credits.acquire()
        self.writes.append(chunk)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_s24_timeout_spares_a_slow_client_that_makes_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        async with Sink(**events.callbacks, timeout=0.2) as sink:
            s = PacedStream()
            sink.add(s)
            for n in range(5):
                await sink.send(b(n))
            for _ in range(5):  # one buffer every 0.15 s: progress within the timeout
                await trio.sleep(0.15)
                s.allow()
            await settle()
            assert b"".join(s.writes) == bs(0, 1, 2, 3, 4)
            assert events.of(s) == ADDED


# -- 25: segmented buffers ----------------------------------------------------------------

_SEGMENTS = [f"seg{i}".encode() for i in range(11)]  # 45 bytes
_THREE = [b"one-", b"two-", b"three"]


async def test_s25_segmented_buffer_recording_stream() -> None:
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


async def test_s25_segmented_buffer_socket() -> None:
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


# -- zero-length buffers (Q18) ------------------------------------------------------------


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


async def test_zero_length_buffers_send_nothing_socket() -> None:
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


# -- 26, 27: shutdown and end of stream -----------------------------------------------------


async def test_s26_shutdown_lingers_then_removes_everyone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        a, s = RecordingStream(), RecordingStream(stalled=True)
        async with Sink(**events.callbacks, linger=5.0) as sink:
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


async def test_s26_shutdown_lets_a_client_drain_within_linger(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        s = RecordingStream(stalled=True)

        async def unstall_later() -> None:
            await trio.sleep(1)
            s.unstall()

        async with trio.open_nursery() as nursery:
            async with Sink(**events.callbacks, linger=5.0) as sink:
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


async def test_s26_shutdown_by_exception_removes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        a, s = RecordingStream(), RecordingStream(stalled=True)
        with pytest.RaisesGroup(KeyError, allow_unwrapped=True, flatten_subgroups=True):
            async with Sink(**events.callbacks, linger=5.0) as sink:
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


async def test_s26_shutdown_by_cancellation_removes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        s = RecordingStream(stalled=True)
        with trio.move_on_after(1):
            async with Sink(**events.callbacks, linger=5.0) as sink:
                sink.add(s)
                await sink.send(b(0))
                await sink.send(b(1))
                await trio.sleep_forever()
        assert trio.current_time() == pytest.approx(1.0)
        assert events.of(s) == lifecycle(ClientStatus.REMOVED)
        assert events.removed_at(s) == pytest.approx(1.0)


async def test_s26_aclose_is_leaving_the_block(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        events = Events()
        sink = Sink(**events.callbacks, linger=2)
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


async def test_s27_after_the_last_buffer_clients_stay_and_drain(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No EOS in Trio: when the producer stops sending, clients stay
    registered and still receive what is queued."""
    with trio.fail_after(600):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


# -- 28: peer close, peer data, write errors ------------------------------------------------


async def test_s28_peer_data_is_discarded_or_reported_and_peer_close_is_closed() -> None:
    with trio.fail_after(5):
        events = Events()
        messages: list[tuple[object, bytes]] = []
        async with Sink(
            **events.callbacks, on_message=lambda s, d: messages.append((s, d)),
        ) as sink, trio.open_nursery() as nursery:
            client, peer = trio.testing.memory_stream_pair()
            statuses: list[ClientStatus] = []

            async def serve() -> None:
                statuses.append(await sink.serve(client))

            nursery.start_soon(serve)
            await settle()
            assert sink.num_handles == 1
            await peer.send_all(b"hello")
            await settle()
            assert messages == []  # discarded
            assert events.of(client) == ADDED
            await sink.send(b(0))
            assert await read_exactly(peer, 10) == bs(0)
            sink.send_messages = True
            await peer.send_all(b"again")
            await settle()
            assert messages == [(client, b"again")]
            assert events.of(client) == ADDED
            await peer.aclose()
            await settle()
            assert events.of(client) == lifecycle(ClientStatus.CLOSED)
            assert statuses == [ClientStatus.CLOSED]
            assert sink.num_handles == 0


async def test_s28_peer_close_socket() -> None:
    with trio.fail_after(5):
        events = Events()
        server, peer = socket_stream_pair()
        async with Sink(**events.callbacks) as sink:
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
async def test_s28_write_failure_is_a_removal_never_an_exception(
    failure: BaseException, status: ClientStatus
) -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks) as sink:
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


# -- a socket's backlog is lag -------------------------------------------------------------


async def test_socket_backlog_shows_as_lag_and_meets_the_hard_limit() -> None:
    """API.md §4: a writer hands a socket only what it accepts without
    blocking, so once the peer stops reading every further buffer is lag."""
    with trio.fail_after(10):
        events = Events()
        server, peer = socket_stream_pair()
        chunk = 64 * 1024
        async with Sink(**events.callbacks, buffers_max=5) as sink:
            sink.add(server)
            n = 0
            while stats(sink, server).lag_buffers == 0:  # fill the socket
                await sink.send(b(n, chunk))
                await settle()
                n += 1
                assert n < 200, "the socket never filled up"
            for lag in range(2, 6):
                await sink.send(b(n, chunk))
                await settle()
                n += 1
                assert stats(sink, server).lag_buffers == lag
            assert events.of(server) == ADDED
            await sink.send(b(n, chunk))
            assert events.of(server) == lifecycle(ClientStatus.SLOW)
        await server.aclose()
        await peer.aclose()


async def test_socket_without_progress_meets_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        events = Events()
        server, peer = socket_stream_pair()
        async with Sink(**events.callbacks, timeout=0.5) as sink:
            sink.add(server)
            for n in range(40):  # 2.5 MiB: more than any socket buffer
                await sink.send(b(n, 64 * 1024))
            last = trio.current_time()
            await trio.sleep(5)
            assert events.of(server) == lifecycle(ClientStatus.SLOW)
            assert events.removed_at(server) - last <= 0.5
        await server.aclose()
        await peer.aclose()


# -- 29: partial writes ---------------------------------------------------------------------


async def test_s29_partial_writes_on_a_small_socket() -> None:
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
