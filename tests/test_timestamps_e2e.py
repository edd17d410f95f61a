"""Timestamps a long-running server can trust, end to end.

Real ffmpeg streams through ``trio-msink serve - --sync``: B-frames, a
stream started just before the MPEG-TS 33-bit wrap, and an H.264 file with
no timestamps but a frame rate in its SPS. Each is paced at real time (the
arrival of bytes at a TCP client is measured) and decodes. Then, under
MockClock with a real Sink, a new upstream with a clock far away: ``send``
neither waits for hours nor releases a burst (docs/framing.md, "Timestamps").
"""

from __future__ import annotations

import io
import itertools

import av
import numpy as np
import pytest
import trio
import trio.testing
from _server import need_tool, run_server
from _video import encode_video
from conftest import RecordingStream, settle

from trio_msink import Buffer, Sink
from trio_msink.cli._timeline import Timeline
from trio_msink.framing import MpegTsFramer, open_framer

FPS = 25
WRAP_SECONDS = 2**33 / 90_000  # 95443.717...: the 33-bit, 90 kHz counter rolls over
# ffmpeg's mpegts muxer starts its timestamps 1.4 s in (muxdelay and
# preload): with this offset the first DTS is WRAP_SECONDS - 2.4, so a 4 s
# stream crosses the wrap 2.4 s in. -output_ts_offset 95443 (2**33/90000
# rounded down) would wrap before the first frame.
WRAP_OFFSET = 95440


async def _ffmpeg_encode(seconds: float, *args: str) -> bytes:
    """``seconds`` of ffmpeg's test pattern as H.264 at FPS, one IDR a second;
    ``args`` add encoder options and name the output format."""
    ffmpeg = need_tool("ffmpeg")
    result = await trio.run_process(
        [
            ffmpeg,
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=160x120:rate={FPS}",
            "-t",
            str(seconds),
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            str(FPS),
            *args,
            "pipe:1",
        ],
        capture_stdout=True,
        capture_stderr=True,
    )
    return result.stdout


async def _ffmpeg_frames(data: bytes, fmt: str) -> int:
    """Pictures ffmpeg decodes from ``data``; -xerror fails on any error."""
    ffmpeg = need_tool("ffmpeg")
    result = await trio.run_process(
        [
            ffmpeg,
            "-nostdin",
            "-v",
            "error",
            "-xerror",
            "-f",
            fmt,
            "-i",
            "pipe:0",
            "-f",
            "framecrc",
            "-",
        ],
        stdin=data,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr.decode()
    return sum(1 for line in result.stdout.decode().splitlines() if not line.startswith("#"))


async def _serve_paced(data: bytes, fmt: str) -> tuple[list[tuple[float, int]], bytes]:
    """Serve ``data`` from stdin with pacing; the (arrival time, size) of each
    chunk a TCP client receives from the first byte to the end, and the bytes."""
    arrivals: list[tuple[float, int]] = []
    got = bytearray()
    # latest: the client, added before the first byte, gets every byte.
    args = [
        "serve",
        "-",
        "--format",
        fmt,
        "--sync",
        "--sync-method",
        "latest",
        "--tcp",
        "127.0.0.1:0",
        "--linger",
        "-1",
    ]
    async with run_server(args, fronts=1, stdin=True) as server:
        client = await trio.open_tcp_stream("127.0.0.1", server.port("tcp"))
        stdin = server.process.stdin
        assert stdin is not None
        await server.wait_log(b"client added")
        async with stdin:
            await stdin.send_all(data)
        async for chunk in client:  # until the server removes us after end of input
            arrivals.append((trio.current_time(), len(chunk)))
            got += chunk
        assert await server.process.wait() == 0
    return arrivals, bytes(got)


def _assert_paced(arrivals: list[tuple[float, int]], seconds: float) -> None:
    """Bytes arrived over about ``seconds`` of real time: no burst (each
    quarter of the time brings some and not most of them) and no stall."""
    start, end = arrivals[0][0], arrivals[-1][0]
    elapsed = end - start
    assert elapsed >= 0.75 * seconds, f"sent in {elapsed:.2f} s, not paced over {seconds} s"
    assert elapsed <= seconds + 10  # generous: a loaded machine is slow, not hours
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) < 1.5, f"a stall of {max(gaps):.2f} s"
    total = sum(n for _, n in arrivals)
    for q in range(4):
        lo, hi = start + elapsed * q / 4, start + elapsed * (q + 1) / 4
        share = sum(n for t, n in arrivals if lo <= t < hi or (q == 3 and t == hi)) / total
        assert 0.05 < share < 0.6, f"quarter {q} got {share:.0%} of the bytes"


async def test_b_frames_are_paced_at_real_time_and_decode() -> None:
    seconds = 3.0
    with trio.fail_after(60):
        data = await _ffmpeg_encode(seconds, "-bf", "2", "-f", "mpegts")
        stamps = [b.pts for b in MpegTsFramer().feed(data) if b.pts is not None]
        assert stamps == sorted(stamps)  # decode order, B-frames or not
        arrivals, got = await _serve_paced(data, "mpegts")
        assert got.endswith(data)  # after the streamheader
        assert await _ffmpeg_frames(got, "mpegts") == seconds * FPS
    _assert_paced(arrivals, seconds)


async def test_a_stream_across_the_33_bit_wrap_is_paced_through_it() -> None:
    seconds = 4.0
    with trio.fail_after(60):
        data = await _ffmpeg_encode(
            seconds,
            "-bf",
            "2",
            "-output_ts_offset",
            str(WRAP_OFFSET),
            "-f",
            "mpegts",
        )
        stamps = [b.pts for b in MpegTsFramer().feed(data) if b.pts is not None]
        assert stamps[0] < WRAP_SECONDS < stamps[-1]  # the file does cross the wrap
        arrivals, got = await _serve_paced(data, "mpegts")
        assert got.endswith(data)  # after the streamheader
        assert await _ffmpeg_frames(got, "mpegts") == seconds * FPS
    _assert_paced(arrivals, seconds)


async def test_h264_file_is_paced_at_its_sps_frame_rate() -> None:
    """The issue's 0.08 s: an elementary stream has no timestamps, but its
    SPS says 25 fps; without --fps it is paced at that rate."""
    seconds = 2.0
    with trio.fail_after(60):
        data = await _ffmpeg_encode(seconds, "-f", "h264")
        arrivals, got = await _serve_paced(data, "auto")
        assert got.endswith(data)  # after the streamheader
        assert await _ffmpeg_frames(got, "h264") == seconds * FPS
    _assert_paced(arrivals, seconds)


# -- a new upstream's clock, under MockClock with a real Sink ------------------------


def _units(start: float, count: int) -> list[Buffer]:
    """``count`` units at FPS from ``start`` seconds, a keyframe every FPS."""
    return [
        Buffer(b"u%06d" % i, pts=start + i / FPS, delta_unit=i % FPS != 0) for i in range(count)
    ]


async def _pump(sink: Sink, timeline: Timeline, buffers: list[Buffer]) -> list[float]:
    """Send ``buffers`` through ``timeline``; when each ``send`` returned."""
    times = []
    for buffer in buffers:
        await sink.send(timeline.stamp(buffer, trio.current_time()))
        times.append(trio.current_time())
    return times


@pytest.mark.parametrize(
    ("new_clock", "explicit"),
    [
        (WRAP_SECONDS - 1.0, True),  # a new publisher whose clock is 26 hours on
        (WRAP_SECONDS - 1.0, False),  # the same, found by the jump alone
        (0.0, True),  # an origin restarted: its clock begins again
        (0.0, False),
    ],
)
async def test_a_new_upstream_clock_neither_waits_nor_bursts(
    autojump_clock: trio.testing.MockClock, new_clock: float, explicit: bool
) -> None:
    with trio.fail_after(60):  # virtual seconds: a wait of hours fails here
        async with Sink(sync=True) as sink:
            client = RecordingStream()
            sink.add(client)
            await settle()
            timeline = Timeline()
            before = await _pump(sink, timeline, _units(1000.0, 2 * FPS))
            await trio.sleep(3.0)  # the outage
            if explicit:
                timeline.discontinuity()
            resumed = trio.current_time()
            after = await _pump(sink, timeline, _units(new_clock, 2 * FPS))
            await settle()
    assert before[-1] - before[0] == pytest.approx((2 * FPS - 1) / FPS)
    assert after[0] == pytest.approx(resumed)  # due at once, not in hours
    steps = [b - a for a, b in itertools.pairwise(after)]
    assert steps == pytest.approx([1 / FPS] * len(steps))  # paced, no burst
    assert client.data == b"".join(b"u%06d" % i for i in [*range(2 * FPS), *range(2 * FPS)])


async def test_time_limits_are_not_confused_by_a_new_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client 1.5 s behind across a discontinuity has 1.5 s plus the outage
    of lag in time, not 26 hours: a 10 s limit keeps it, and it gets everything."""
    with trio.fail_after(60):
        async with Sink(sync=True, unit_format=3, units_max=10.0, time_min=5.0) as sink:
            client = RecordingStream()
            sink.add(client)
            await settle()
            timeline = Timeline()
            await _pump(sink, timeline, _units(WRAP_SECONDS - 10, FPS))
            client.stall()
            await _pump(sink, timeline, _units(WRAP_SECONDS - 9, FPS // 2))
            await trio.sleep(2.0)  # the outage
            timeline.discontinuity()
            await _pump(sink, timeline, _units(0.5, FPS))
            stats = sink.get_stats(client)
            assert stats is not None and stats.lag_buffers > FPS
            assert stats.status.name == "OK"
            client.unstall()
            await settle()
            assert sink.get_stats(client) is not None
            assert len(client.data) == len(b"u000000") * (FPS + FPS // 2 + FPS)


async def test_framer_restart_and_timeline_across_a_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server's path, without sockets: MPEG-TS from one upstream, cut
    mid-packet, then another whose clock is just before the wrap; the client
    gets the first stream's units, then the second's from its keyframe,
    paced throughout."""
    first = _encode_ts(start=0)
    second = _encode_ts(start=int((WRAP_SECONDS - 1) * FPS))
    framer = open_framer("mpegts")
    timeline = Timeline()
    with trio.fail_after(60):
        async with Sink(sync=True) as sink:
            client = RecordingStream()
            sink.add(client)
            await settle()

            sent: list[Buffer] = []

            async def feed(data: bytes) -> list[float]:
                times = []
                for i in range(0, len(data), 1000):
                    buffers = framer.feed(data[i : i + 1000])
                    if framer.header_changed:
                        sink.set_streamheader(framer.streamheader)
                    sent.extend(buffers)
                    times += await _pump(sink, timeline, buffers)
                return times

            before = await feed(first[: len(first) * 2 // 3 + 100])  # cut mid-packet
            await trio.sleep(1.0)
            framer.restart()
            timeline.discontinuity()
            resumed = trio.current_time()
            count = len(sent)
            after = await feed(second)
            await settle()
    assert sent[count].keyframe and not framer.header_changed  # the same PAT and PMT
    assert after and after[0] == pytest.approx(resumed)
    assert after[-1] - after[0] < 2.0  # the second stream's length, not hours
    assert before[-1] - before[0] > 0.5
    header = b"".join(h.tobytes() for h in framer.streamheader)
    assert client.data == header + b"".join(b.tobytes() for b in sent)
    keys = _decode_ts(client.data)
    assert keys[0] and len(keys) == sum(b.pts is not None for b in sent)


def _encode_ts(*, start: int) -> bytes:
    """2 s of 160x120 H.264 at FPS in MPEG-TS, timestamps from frame ``start``."""
    def picture(i: int) -> np.ndarray:
        return np.full((120, 160, 3), (i * 5) % 256, np.uint8)

    options = {"x264-params": f"keyint={FPS}:scenecut=0:bframes=2", "preset": "veryfast"}
    return encode_video("mpegts", frames=2 * FPS, rate=FPS, picture=picture, options=options,
                        size=(160, 120), start=start)


def _decode_ts(data: bytes) -> list[bool]:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return [frame.key_frame for frame in container.decode(video=0)]
