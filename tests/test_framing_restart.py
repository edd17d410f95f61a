"""Framer.restart(): the input starts over from a new upstream.

After a restart a framer emits nothing until the new stream's headers and a
keyframe; the first buffer is that keyframe, ``header_changed`` is True on
the call that returns it when the headers differ from those before, and
timestamps start over (docs/framing.md, "Restart").
"""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from _video import encode_video
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_msink import Buffer
from trio_msink.framing import (
    AutoFramer,
    Framer,
    H264Framer,
    MpegTsFramer,
    RawFramer,
    open_framer,
)

FPS, GOP, FRAMES = 10, 10, 30
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def encode(
    fmt: str,
    *,
    codec: str = "libx264",
    size: tuple[int, int] = (160, 120),
    bframes: int = 0,
    start: int = 0,
) -> bytes:
    """FRAMES frames at FPS, one IDR every GOP, muxed as ``fmt`` (mpegts or
    h264); ``start`` shifts the first timestamp by that many frames."""
    params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes={bframes}"
    if codec == "libx265":
        options = {"x265-params": params + ":log-level=error", "preset": "ultrafast"}
    else:
        options = {"x264-params": params, "preset": "veryfast"}
    width, height = size

    def picture(i: int) -> np.ndarray:
        img = np.zeros((height, width, 3), np.uint8)
        img[:, (i * 5) % (width - 20) : (i * 5) % (width - 20) + 20] = 255
        return img

    return encode_video(fmt, frames=FRAMES, rate=FPS, picture=picture, options=options,
                        codec=codec, size=size, start=start)


@pytest.fixture(scope="module")
def ts() -> bytes:
    return encode("mpegts")


@pytest.fixture(scope="module")
def ts_hevc() -> bytes:
    return encode("mpegts", codec="libx265")


@pytest.fixture(scope="module")
def es() -> bytes:
    return encode("h264")


@pytest.fixture(scope="module")
def es_large() -> bytes:
    return encode("h264", size=(192, 144))


def feed(framer: Framer, data: bytes, size: int) -> list[tuple[list[Buffer], bool]]:
    """Feed ``data`` in ``size``-byte chunks; (buffers, header_changed) per call."""
    return [
        (framer.feed(data[i : i + size]), framer.header_changed) for i in range(0, len(data), size)
    ]


def emitted(calls: list[tuple[list[Buffer], bool]]) -> list[Buffer]:
    return [b for out, _ in calls for b in out]


def first_call(calls: list[tuple[list[Buffer], bool]]) -> tuple[list[Buffer], bool]:
    return next(c for c in calls if c[0])


def key_positions(data: bytes, framer: Framer) -> list[int]:
    """Byte offsets of the keyframe buffers when ``data`` is framed whole."""
    positions, pos = [], 0
    for buffer in framer.feed(data) + framer.flush():
        if buffer.keyframe:
            positions.append(pos)
        pos += len(buffer)
    return positions


def decode(data: bytes, fmt: str) -> list[bool]:
    """Key flags of every frame PyAV decodes from ``data``."""
    with av.open(io.BytesIO(data), format=fmt) as container:
        return [frame.key_frame for frame in container.decode(video=0)]


# -- MPEG-TS ------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0.0, 0.1, 0.35, 0.5])
def test_mpegts_restart_resumes_at_the_next_keyframe_with_same_headers(
    ts: bytes, cut: float
) -> None:
    framer = MpegTsFramer()
    framer.feed(ts[: len(ts) // 2 + 77])  # stops inside a packet and a unit
    before = framer.streamheader
    framer.restart()
    assert framer.restarting and framer.buffered == 0
    assert not framer.header_changed
    resume = int(len(ts) * cut) + 33  # not on a packet boundary
    calls = feed(framer, ts[resume:], 1000)
    out, changed = first_call(calls)
    assert out[0].keyframe and not framer.restarting
    assert not changed  # the same PAT and PMT, whatever their continuity counters
    assert [h.tobytes() for h in framer.streamheader] == [h.tobytes() for h in before]
    # What it emitted is what framing the stream from that keyframe gives.
    whole = MpegTsFramer().feed(ts)
    after = [b.tobytes() for b in emitted(calls)]
    assert after == [b.tobytes() for b in whole[len(whole) - len(after) :]]
    # The headers, then the buffers from that keyframe, decode from a keyframe on.
    stream = b"".join(h.tobytes() for h in framer.streamheader) + b"".join(after)
    keys = decode(stream, "mpegts")
    assert keys and keys[0]


def test_mpegts_restart_with_new_headers_changes_them_with_the_keyframe(
    ts: bytes, ts_hevc: bytes
) -> None:
    framer = MpegTsFramer()
    framer.feed(ts[:20_000])
    old = [h.tobytes() for h in framer.streamheader]
    framer.restart()
    calls = feed(framer, ts_hevc, 500)
    silent = calls[: calls.index(first_call(calls))]
    # Until the keyframe: no output, no header change, the old headers kept.
    assert all(not out and not changed for out, changed in silent)
    out, changed = first_call(calls)
    assert out[0].keyframe and changed
    new = [h.tobytes() for h in framer.streamheader]
    assert new != old and len(new) == 2
    assert framer.video_pid is not None
    assert decode(b"".join(new) + b"".join(b.tobytes() for b in emitted(calls)), "mpegts")[0]


def test_mpegts_restart_drops_units_until_pat_pmt_and_keyframe(ts: bytes) -> None:
    """A new stream joined mid-GOP: its delta units, before and after the
    PSI, are dropped; output starts at its next keyframe."""
    framer = MpegTsFramer()
    framer.feed(ts)
    framer.restart()
    reference = MpegTsFramer()
    positions = key_positions(ts, reference)
    start = positions[1] + 188 * 10  # inside the second GOP, after its keyframe
    out = framer.feed(ts[start:]) + framer.flush()
    assert out and out[0].keyframe
    total = sum(len(b) for b in reference.feed(ts) + reference.flush())
    assert sum(len(b) for b in out) == total - positions[2]


def test_mpegts_restart_starts_unwrapping_over() -> None:
    """Before the restart the 33-bit counter was unwrapped past 2**33; the new
    upstream's timestamps are taken as they are, not near the old ones."""
    framer = MpegTsFramer()
    near_wrap = encode("mpegts", start=int((2**33 / 90_000 - 1) * FPS))
    first = framer.feed(near_wrap) + framer.flush()
    stamps = [b.pts for b in first if b.pts is not None]
    assert max(stamps) > 2**33 / 90_000  # unwrapped past the roll-over
    assert stamps == sorted(stamps)
    framer.restart()
    again = framer.feed(near_wrap) + framer.flush()
    assert next(b.pts for b in again if b.pts is not None) == pytest.approx(stamps[0])


@settings(max_examples=25, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(cut=st.floats(0, 0.9), sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=8))
def test_mpegts_output_after_restart_does_not_depend_on_chunking(
    ts: bytes, ts_hevc: bytes, cut: float, sizes: list[int]
) -> None:
    data = ts_hevc[int(len(ts_hevc) * cut) :]
    whole = MpegTsFramer()
    whole.feed(ts[:9000])
    whole.restart()
    expected = [(b.tobytes(), b.pts, b.keyframe) for b in whole.feed(data) + whole.flush()]
    chunked = MpegTsFramer()
    chunked.feed(ts[:9000])
    chunked.restart()
    got: list[Buffer] = []
    pos = i = 0
    while pos < len(data):
        got += chunked.feed(data[pos : pos + sizes[i % len(sizes)]])
        pos, i = pos + sizes[i % len(sizes)], i + 1
    got += chunked.flush()
    assert [(b.tobytes(), b.pts, b.keyframe) for b in got] == expected
    assert [h.tobytes() for h in chunked.streamheader] == [h.tobytes() for h in whole.streamheader]


# -- H.264 ----------------------------------------------------------------------------


def test_h264_restart_waits_for_sps_pps_and_idr(es: bytes) -> None:
    framer = H264Framer()
    framer.feed(es[: len(es) // 2 + 11])
    old = [h.tobytes() for h in framer.streamheader]
    framer.restart()
    assert framer.buffered == 0
    positions = key_positions(es, H264Framer())
    calls = feed(framer, es[positions[1] + 100 :], 700)  # mid-IDR: its SPS is gone
    out, changed = first_call(calls)
    assert out[0].keyframe and not changed
    assert [h.tobytes() for h in framer.streamheader] == old
    got = b"".join(b.tobytes() for b in emitted(calls))
    assert es[positions[2] :].startswith(got)
    assert decode(b"".join(old) + got, "h264")[0]


def test_h264_restart_with_a_new_sps_changes_the_headers(es: bytes, es_large: bytes) -> None:
    framer = H264Framer()
    framer.feed(es)
    old = [h.tobytes() for h in framer.streamheader]
    framer.restart()
    calls = feed(framer, es_large, 300)
    calls.append((framer.flush(), framer.header_changed))
    out, changed = first_call(calls)
    assert out[0].keyframe and changed
    new = [h.tobytes() for h in framer.streamheader]
    assert new != old and es_large.startswith(b"".join(new))
    keys = decode(b"".join(new) + b"".join(b.tobytes() for b in emitted(calls)), "h264")
    assert keys[0] and len(keys) == FRAMES


SC3, SC4 = b"\x00\x00\x01", b"\x00\x00\x00\x01"
SPS = SC4 + b"\x67\x42\xc0\x0a\x8c\x8d\x40"
PPS = SC4 + b"\x68\xce\x3c\x80"
IDR = SC3 + b"\x65\x88\x84\x00\x21"
SLICE = SC3 + b"\x41\x9a\x00\x11"


def test_h264_an_idr_before_the_parameter_sets_is_not_a_start() -> None:
    """In one call: an IDR without SPS/PPS before it, then SPS PPS IDR; only
    the second IDR can be decoded, so output starts there."""
    framer = H264Framer(fps=25)
    framer.feed(SPS + PPS + IDR + SLICE)
    framer.restart()
    out = framer.feed(IDR + SLICE + SPS + PPS + IDR + SLICE + SLICE)
    assert [b.tobytes() for b in out] == [SPS + PPS + IDR, SLICE]
    assert out[0].keyframe and not framer.header_changed
    assert out[0].pts == pytest.approx(2 / 25)  # pictures counted from the restart


def test_h264_restart_counts_pictures_from_zero(es: bytes) -> None:
    framer = H264Framer(fps=FPS)
    framer.feed(es)
    framer.restart()
    out = framer.feed(es) + framer.flush()
    assert [b.pts for b in out] == pytest.approx([n / FPS for n in range(FRAMES)])


# -- raw and auto ---------------------------------------------------------------------


def test_raw_restart_drops_the_partial_chunk() -> None:
    framer = RawFramer(chunk_size=4)
    assert [b.tobytes() for b in framer.feed(b"abcdef")] == [b"abcd"]
    framer.restart()
    assert framer.buffered == 0
    assert [b.tobytes() for b in framer.feed(b"123456789")] == [b"1234", b"5678"]
    assert not framer.header_changed and framer.streamheader == []
    framer.restart()
    assert framer.flush() == []


def test_auto_restart_probes_again(ts: bytes, es: bytes) -> None:
    framer = open_framer("auto")
    assert isinstance(framer, AutoFramer)
    framer.feed(ts[:10_000])
    assert framer.detected == "mpegts"
    ts_headers = [h.tobytes() for h in framer.streamheader]
    framer.restart()
    assert framer.detected is None and framer.restarting and framer.buffered == 0
    calls = feed(framer, es, 1000)
    out, changed = first_call(calls)
    assert framer.detected == "h264"
    assert out[0].keyframe and changed
    assert [h.tobytes() for h in framer.streamheader] != ts_headers
    assert b"".join(b.tobytes() for b in emitted(calls)) + framer.flush()[0].tobytes() == es


def test_auto_restart_on_the_same_stream_keeps_its_headers(ts: bytes) -> None:
    framer = open_framer("auto")
    framer.feed(ts[:5000])
    framer.restart()
    out, changed = first_call(feed(framer, ts[8000:], 2000))
    assert out[0].keyframe and not changed


def test_auto_restart_to_raw_clears_the_headers(es: bytes) -> None:
    framer = open_framer("auto", chunk_size=100)
    framer.feed(es)
    assert framer.streamheader
    framer.restart()
    noise = bytes(range(256)) * 20  # no sync bytes 188 apart, no start codes
    out = framer.feed(noise)
    assert framer.detected == "raw" and framer.header_changed
    assert framer.streamheader == [] and len(out) == len(noise) // 100
    assert framer.discarded == 0


def test_restart_twice_compares_with_the_headers_before_the_first(
    ts: bytes, ts_hevc: bytes
) -> None:
    framer = MpegTsFramer()
    framer.feed(ts[:20_000])
    framer.restart()
    framer.feed(ts_hevc[:1000])  # PSI of another stream, no keyframe yet
    framer.restart()
    out, changed = first_call(feed(framer, ts[10_000:], 1000))
    assert out[0].keyframe and not changed


@settings(max_examples=30, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(
    fmt=st.sampled_from(["h264", "mpegts", "auto"]),
    cut=st.floats(0, 1),
    resume=st.floats(0, 0.9),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=8),
)
def test_after_restart_anywhere_output_is_the_stream_from_a_keyframe(
    es: bytes, ts: bytes, fmt: str, cut: float, resume: float, sizes: list[int]
) -> None:
    """Restart after any prefix, resume anywhere, any chunking: the output is
    exactly the framed stream from one of its keyframes to the end."""
    data = ts if fmt == "mpegts" else es
    framer = open_framer(fmt)
    framer.feed(data[: int(len(data) * cut)])
    framer.restart()
    rest = data[int(len(data) * resume) :]
    out: list[Buffer] = []
    pos = i = 0
    while pos < len(rest):
        out += framer.feed(rest[pos : pos + sizes[i % len(sizes)]])
        pos, i = pos + sizes[i % len(sizes)], i + 1
    out += framer.flush()
    whole_framer = open_framer(fmt)
    whole = whole_framer.feed(data) + whole_framer.flush()
    if not out:  # no keyframe (with headers before it) after the resume point
        start = len(data) - len(rest)
        assert all(p < start + 4000 for p in key_positions(data, open_framer(fmt)))
        return
    assert out[0].keyframe
    tail = [(b.tobytes(), b.keyframe) for b in whole[len(whole) - len(out) :]]
    assert [(b.tobytes(), b.keyframe) for b in out] == tail
    assert not framer.restarting
