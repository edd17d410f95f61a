"""Limits and soft-limit recovery (docs/semantics.rst, "Limits" and
"Soft-limit recovery"), with stalled test streams and with real sockets whose
peer does not read.

A client whose "stream blocks inside send_all(x)" is a stalled
:class:`RecordingStream` that has been given ``x``: ``x`` is being written, so
it is neither waiting nor part of the lag.
"""

from __future__ import annotations

import itertools
import socket
from functools import partial

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
    frame,
    frames,
    lifecycle,
    name_of,
    parse_seq_frames,
    payload,
    peer_of,
    poll_until,
    pts_buffer,
    read_all,
    read_client_to_eof,
    send_each,
    send_keeping_up,
    seq_frame,
    serving,
    settle,
    socket_stream_pair,
    stats,
)

from trio_msink import Buffer, ClientStatus, Format, RecoverPolicy, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


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
async def test_soft_limit_recovery_policies_on_the_worked_example(
    policy: RecoverPolicy, reads: str, dropped: int
) -> None:
    """The worked example of docs/semantics.rst, "Soft-limit recovery"
    (GStreamer, quirks Q5, Q8 and Q9 in docs/gstreamer.rst: latest k0 d5 d6
    d7 / 4, soft-limit k0 k4 d5 d6 d7 / 3)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks(), buffers_soft_max=3, recover_policy=policy) as sink:
            f, s = RecordingStream(), RecordingStream(stalled=True)
            sink.add(f)
            sink.add(s)
            await sink.send(frame("k0"))
            await settle()  # S's stream blocks inside send_all(k0)
            assert s.sends_started == 1
            await send_each(sink, frames(_WORKED))
            assert stats(sink, s).buffers_dropped == dropped
            s.unstall()
            await settle()
            assert s.data == payload(reads)
            assert f.data == payload("k0 " + _WORKED)
            assert stats(sink, f).buffers_dropped == 0
            assert stats(sink, s).buffers_dropped == dropped
            assert events.of(s) == ADDED


async def test_resync_keyframe_resumes_on_a_keyframe_never_a_delta() -> None:
    with trio.fail_after(5):
        async with Sink(buffers_soft_max=3, recover_policy=RecoverPolicy.RESYNC_KEYFRAME) as sink:
            s = RecordingStream(stalled=True)
            sink.add(s)
            await sink.send(frame("k0"))
            await settle()
            await send_each(sink, frames(_WORKED))
            s.unstall()
            await settle()
            assert s.data == payload("k0")
            await send_each(sink, frames("d8 d9"))
            assert s.data == payload("k0")
            await send_each(sink, frames("k10 d11"))
            assert s.data == payload("k0 k10 d11")
            # the recovery skipped k4 d5 d6 d7 (and d1-d3 before); deltas that
            # arrive while it waits for a keyframe are never queued for it
            assert stats(sink, s).buffers_dropped == 7


async def test_hard_limit_on_the_worked_example_removes_the_client_slow() -> None:
    """buffers_max=5: S is removed SLOW inside the send of d6, the sixth
    buffer after k0."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks(), buffers_max=5) as sink:
            f, s = RecordingStream(), RecordingStream(stalled=True)
            sink.add(f)
            sink.add(s)
            await sink.send(frame("k0"))
            await settle()  # S's stream blocks inside send_all(k0)
            await send_each(sink, frames("d1 d2 d3 k4 d5"))
            assert events.of(s) == ADDED
            await sink.send(frame("d6"))
            assert events.of(s) == lifecycle(ClientStatus.SLOW)
            await send_each(sink, frames("d7"))
            assert f.data == payload("k0 " + _WORKED)


@pytest.mark.parametrize("limit", ["buffers_max", "units_max"])
async def test_hard_limit_removes_inside_the_send_that_crosses_it(limit: str) -> None:
    """Removed SLOW inside the send of the sixth buffer after b0, not the fifth."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks(), **{limit: 5}) as sink:
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
async def test_buffers_limits_count_buffers_whatever_the_unit_format(
    buffers_max: int, units_max: int
) -> None:
    """Quirk Q11 (docs/gstreamer.rst) fixed: with unit_format BYTES,
    buffers_max still counts buffers and both limits apply: the client goes
    when it waits 4 buffers (40 bytes)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(
            **events.callbacks(), unit_format=Format.BYTES, buffers_max=buffers_max,
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


async def test_soft_limit_in_bytes_is_exact() -> None:
    """Exact (quirk Q5 in docs/gstreamer.rst fixed): held at 30 bytes,
    40 > 35; dropped grows by one per push from the 4th push after b0
    (GStreamer: held at 50 bytes)."""
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
async def test_hard_limit_in_time_is_the_pts_span_of_waiting_buffers(
    units_max: float, kicked_at: int
) -> None:
    """Time lag in seconds = PTS(newest waiting) - PTS(oldest waiting),
    exact: 25 s is crossed by the 4th push after b0 (lag 30; GStreamer: 5th)."""
    with trio.fail_after(5):
        events = Events()
        async with Sink(
            **events.callbacks(), sync=False, unit_format=Format.TIME, units_max=units_max,
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


async def test_socket_backlog_shows_as_lag_and_meets_the_hard_limit() -> None:
    """docs/semantics.rst, "The model": a writer hands a socket only what it accepts without
    blocking, so once the peer stops reading every further buffer is lag."""
    with trio.fail_after(10):
        events = Events()
        server, peer = socket_stream_pair()
        chunk = 64 * 1024
        async with Sink(**events.callbacks(), buffers_max=5) as sink:
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


_BIG = 64 * 1024


_FRAMES = 40


async def _small_send_buffer(sink: Sink, served: dict[Address, ClientStatus],
                             stream: trio.SocketStream) -> None:
    """serve_tcp handler: a 64 KiB kernel send buffer so a non-reader fills it fast."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BIG)
    served[peer_of(stream)] = await sink.serve(stream)


async def test_client_that_never_reads_is_removed_slow_and_others_get_everything() -> None:
    events = Events()
    served: dict[Address, ClientStatus] = {}
    received: dict[Address, bytes] = {}
    frames = [seq_frame(seq, _BIG) for seq in range(_FRAMES)]
    with trio.fail_after(60):
        async with Sink(buffers_max=4, **events.callbacks()) as sink:
            async with (
                serving(partial(_small_send_buffer, sink, served)) as port,
                trio.open_nursery() as readers,
            ):
                for _ in range(3):
                    readers.start_soon(read_client_to_eof, port, received)
                stalled = await connect(port, rcvbuf=4096)  # and never read
                stalled_name = name_of(stalled)
                await events.wait_added(4)
                stalled_server = events.server_for(stalled)
                fast = [s for s in events.added if s is not stalled_server]

                await send_keeping_up(sink, fast, frames)

                assert events.status(stalled_server) == ClientStatus.SLOW
                assert sink.get_stats(stalled_server) is None
                assert [events.status(s) for s in fast] == [None] * 3
                assert sink.num_handles == 3
                for stream in fast:
                    sink.remove_flush(stream)
                await poll_until(lambda: stalled_name in served)
            await stalled.aclose()

    assert served[stalled_name] == ClientStatus.SLOW
    assert len(received) == 3
    for data in received.values():
        assert data == b"".join(frames)


@pytest.mark.parametrize(
    "policy", [RecoverPolicy.RESYNC_LATEST, RecoverPolicy.RESYNC_KEYFRAME]
)
async def test_client_that_never_reads_is_resynced_and_others_get_everything(
    policy: RecoverPolicy,
) -> None:
    events = Events()
    served: dict[Address, ClientStatus] = {}
    received: dict[Address, bytes] = {}
    # a keyframe every 4 buffers
    frames = [Buffer(seq_frame(seq, _BIG), delta_unit=seq % 4 != 0) for seq in range(_FRAMES)]
    with trio.fail_after(60):
        async with (
            Sink(buffers_soft_max=3, recover_policy=policy, **events.callbacks()) as sink,
            serving(partial(_small_send_buffer, sink, served)) as port,
            trio.open_nursery() as readers,
        ):
            for _ in range(3):
                readers.start_soon(read_client_to_eof, port, received)
            stalled = await connect(port, rcvbuf=4096)
            stalled_name = name_of(stalled)
            await events.wait_added(4)
            stalled_server = events.server_for(stalled)
            fast = [s for s in events.added if s is not stalled_server]

            await send_keeping_up(sink, fast, frames)

            stats = sink.get_stats(stalled_server)
            assert stats is not None, "a soft limit must not remove the client"
            assert stats.status == ClientStatus.OK
            assert stats.buffers_dropped > 0
            for stream in fast:
                fast_stats = sink.get_stats(stream)
                assert fast_stats is not None
                assert fast_stats.buffers_dropped == 0
            # now the stalled client reads what it was left with
            async with stalled:
                for stream in events.added:
                    sink.remove_flush(stream)
                late = await read_all(stalled)

    expected = b"".join(f.tobytes() for f in frames)
    assert len(received) == 3
    for data in received.values():
        assert data == expected
    assert served[stalled_name] == ClientStatus.REMOVED
    # the resynced client's stream is whole frames, in order, with gaps
    seqs = parse_seq_frames(late)
    assert seqs[0] == 0
    assert seqs == sorted(set(seqs))
    assert len(seqs) < _FRAMES
    if policy == RecoverPolicy.RESYNC_LATEST:
        assert seqs[-1] == _FRAMES - 1
        assert stats.buffers_dropped == _FRAMES - len(seqs)
    else:
        for before, after in itertools.pairwise(seqs):
            if after != before + 1:
                assert after % 4 == 0, f"resumed on delta unit {after} after {before}"
        assert stats.buffers_dropped <= _FRAMES - len(seqs)
