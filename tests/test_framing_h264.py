"""H.264 Annex B framing: PyAV-made streams, hand-made NAL units, and garbage."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from conftest import feed_chunks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_msink import Buffer
from trio_msink.framing import AutoFramer, H264Framer, open_framer

FRAMES, FPS, GOP = 30, 10, 10
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]
# x264 settings of each test stream, beside one IDR every GOP frames.
VARIANTS = {
    "plain": "bframes=0",
    "aud_slices": "bframes=0:aud=1:slices=3",  # delimiters; 3 slices a picture
    "bframes": "bframes=2",
}


def encode_h264(params: str) -> tuple[bytes, int]:
    """FRAMES frames at 160x120 as an Annex B stream; (bytes, keyframes)."""
    out = io.BytesIO()
    container = av.open(out, "w", format="h264")
    video = container.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
    video.gop_size = GOP
    video.options = {
        "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:{params}",
        "preset": "veryfast",
    }
    keys = 0
    for i in range(FRAMES + 1):
        if i < FRAMES:
            img = np.zeros((120, 160, 3), np.uint8)
            img[:, (i * 5) % 140 : (i * 5) % 140 + 20] = 255
            img[::8, :, 1] = (i * 8) % 256
            frame: av.VideoFrame | None = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i  # type: ignore[union-attr]
        else:
            frame = None
        for packet in video.encode(frame):
            keys += packet.is_keyframe
            container.mux(packet)
    container.close()
    return out.getvalue(), keys


@pytest.fixture(scope="module")
def streams() -> dict[str, tuple[bytes, int]]:
    return {name: encode_h264(params) for name, params in VARIANTS.items()}


def frame_all(data: bytes, **opts: float) -> tuple[list[Buffer], H264Framer]:
    framer = H264Framer(**opts)  # type: ignore[arg-type]
    return framer.feed(data) + framer.flush(), framer


def signature(buffers: list[Buffer]) -> list[tuple[bytes, float | None, bool, bool]]:
    return [(b.tobytes(), b.pts, b.delta_unit, b.header) for b in buffers]


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_unit_per_picture(streams: dict[str, tuple[bytes, int]], variant: str) -> None:
    data, keys = streams[variant]
    buffers, framer = frame_all(data)
    assert keys == FRAMES // GOP
    assert len(buffers) == FRAMES
    assert sum(b.keyframe for b in buffers) == keys
    assert buffers[0].keyframe
    assert b"".join(b.tobytes() for b in buffers) == data
    assert framer.discarded == framer.buffered == 0
    if variant == "aud_slices":  # every unit opens with its delimiter
        assert all(b.tobytes()[:5] == b"\x00\x00\x00\x01\x09" for b in buffers)


def test_streamheader_is_sps_and_pps(streams: dict[str, tuple[bytes, int]]) -> None:
    data = streams["plain"][0]
    framer = H264Framer()
    framer.feed(data[:200])
    assert framer.header_changed
    sps, pps = framer.streamheader
    assert sps.header and pps.header
    assert (
        sps.tobytes()[:5] == b"\x00\x00\x00\x01\x67"
        and pps.tobytes()[:5] == b"\x00\x00\x00\x01\x68"
    )
    assert data.startswith(sps.tobytes() + pps.tobytes())
    framer.feed(data[200:])
    assert not framer.header_changed  # x264 repeats the same SPS/PPS every IDR


def test_sps_rate_gives_timestamps_and_fps_overrides_it(
    streams: dict[str, tuple[bytes, int]],
) -> None:
    data = streams["plain"][0]  # x264 writes the rate in the SPS's VUI timing info
    for buffers in (frame_all(data)[0], frame_all(data, fps=FPS)[0]):
        assert [b.pts for b in buffers] == pytest.approx([n / FPS for n in range(FRAMES)])
        assert all(b.duration == pytest.approx(1 / FPS) for b in buffers)
    buffers, _ = frame_all(data, fps=25)
    assert [b.pts for b in buffers] == pytest.approx([n / 25 for n in range(FRAMES)])


def test_no_rate_no_timestamps() -> None:
    """A stream whose SPS has no timing info, and no fps: no timestamps."""
    buffers, _ = frame_all(SPS + PPS0 + IDR + SLICE + SLICE)
    assert len(buffers) == 3
    assert all(b.pts is None and b.duration is None for b in buffers)


@pytest.mark.parametrize("variant", VARIANTS)
def test_decodes_from_every_keyframe(streams: dict[str, tuple[bytes, int]], variant: str) -> None:
    buffers, framer = frame_all(streams[variant][0])
    header = b"".join(h.tobytes() for h in framer.streamheader)
    for i, buffer in enumerate(buffers):
        if buffer.keyframe:
            tail = header + b"".join(b.tobytes() for b in buffers[i:])
            with av.open(io.BytesIO(tail), format="h264") as container:
                keys = [frame.key_frame for frame in container.decode(video=0)]
            assert keys[0] and len(keys) == FRAMES - i


@pytest.mark.parametrize("variant", VARIANTS)
def test_auto_detects_h264(streams: dict[str, tuple[bytes, int]], variant: str) -> None:
    data = streams[variant][0]
    framer = open_framer("auto", fps=FPS)
    out = framer.feed(data) + framer.flush()
    assert isinstance(framer, AutoFramer) and framer.detected == "h264"
    assert signature(out) == signature(frame_all(data, fps=FPS)[0])
    assert len(framer.streamheader) == 2


@settings(max_examples=25, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=30),
    variant=st.sampled_from(list(VARIANTS)),
)
def test_chunking_does_not_change_the_output(
    streams: dict[str, tuple[bytes, int]], sizes: list[int], variant: str
) -> None:
    data = streams[variant][0]
    whole = signature(frame_all(data, fps=FPS)[0])
    assert signature(feed_chunks(H264Framer(fps=FPS), data, sizes)) == whole


# -- hand-made NAL units --------------------------------------------------------

SC3, SC4 = b"\x00\x00\x01", b"\x00\x00\x00\x01"
SPS = SC4 + b"\x67\x42\xc0\x0a\x8c\x8d\x40"  # id 0 (ue "1" right after level_idc)
PPS0, PPS1 = SC4 + b"\x68\xce\x3c\x80", SC4 + b"\x68\x4e\x3c\x80"  # ids 0 and 1
SEI = SC3 + b"\x06\x05\x01\x00\x80"
AUD = SC4 + b"\x09\xf0"
IDR = SC3 + b"\x65\x88\x84\x00\x21"  # first_mb_in_slice 0
SLICE = SC3 + b"\x41\x9a\x00\x11"  # non-IDR, first_mb_in_slice 0
SLICE_REST = SC3 + b"\x41\x20\x00\x11"  # first_mb_in_slice 3: same picture


def units(data: bytes, **opts: float) -> list[tuple[bytes, bool]]:
    return [(b.tobytes(), b.keyframe) for b in frame_all(data, **opts)[0]]


def test_handmade_access_units() -> None:
    data = SPS + PPS0 + SEI + IDR + SLICE_REST + SLICE + SEI + SLICE + SLICE_REST + SPS + PPS0 + IDR
    assert units(data) == [
        (SPS + PPS0 + SEI + IDR + SLICE_REST, True),
        (SLICE, False),
        (SEI + SLICE + SLICE_REST, False),
        (SPS + PPS0 + IDR, True),
    ]


def test_delimiters_open_units() -> None:
    data = AUD + SPS + PPS0 + IDR + AUD + SLICE + AUD + SLICE_REST
    assert units(data) == [
        (AUD + SPS + PPS0 + IDR, True),
        (AUD + SLICE, False),
        (AUD + SLICE_REST, False),
    ]


def test_leading_garbage_and_trailing_zeros() -> None:
    framer = H264Framer()
    out = framer.feed(b"\x12\x34garbage" + SPS + b"\x00\x00" + PPS0 + IDR + b"\x00" * 5)
    out += framer.flush()
    assert [b.tobytes() for b in out] == [SPS + b"\x00\x00" + PPS0 + IDR + b"\x00" * 5]
    assert framer.discarded == 9
    assert [h.tobytes() for h in framer.streamheader] == [SPS, PPS0]


def test_parameter_sets_by_id() -> None:
    framer = H264Framer()
    framer.feed(SPS + PPS1 + PPS0 + IDR + SLICE)
    assert framer.header_changed
    assert [h.tobytes() for h in framer.streamheader] == [SPS, PPS0, PPS1]
    framer.feed(SPS + PPS0 + IDR + SLICE)
    assert not framer.header_changed
    new_pps0 = SC4 + b"\x68\xce\x38\x80"
    framer.feed(new_pps0 + IDR + SLICE)
    assert framer.header_changed
    assert [h.tobytes() for h in framer.streamheader] == [SPS, new_pps0, PPS1]


def test_access_unit_cap() -> None:
    big = SC3 + b"\x65\x88" + b"\x11" * 100
    data = SPS + big + SLICE + SPS + IDR
    buffers, _ = frame_all(data, fps=25, max_unit_size=50)
    sizes = [len(b) for b in buffers]
    assert sizes[:3] == [50, 50, len(SPS) + len(big) - 100] and max(sizes) <= 50
    assert [b.pts is not None for b in buffers] == [True, False, False, True, True]
    assert [b.keyframe for b in buffers] == [True, False, False, False, True]
    assert b"".join(b.tobytes() for b in buffers) == data


def test_start_code_at_end_of_input() -> None:
    assert units(SPS + IDR + SC3) == [(SPS + IDR + SC3, True)]
    assert units(SPS + IDR + b"\x00\x00") == [(SPS + IDR + b"\x00\x00", True)]


# -- garbage --------------------------------------------------------------------

CAP = 64 * 1024
BOUND = CAP + 8  # the unit being built and a start code's worth of lookahead


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), sizes=st.lists(st.integers(1, 700), min_size=1))
def test_garbage_never_raises(data: bytes, sizes: list[int]) -> None:
    framer = H264Framer(max_unit_size=CAP, fps=FPS)
    feed_chunks(framer, data, sizes, bound=BOUND)
    feed_chunks(framer, SC3 + data * 3, sizes, bound=BOUND)


@settings(max_examples=40, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(
    where=st.floats(0, 1),
    garbage=st.binary(min_size=1, max_size=500) | st.integers(1, 300),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=10),
    variant=st.sampled_from(list(VARIANTS)),
)
def test_units_after_garbage_or_loss_are_intact(
    streams: dict[str, tuple[bytes, int]],
    where: float,
    garbage: bytes | int,
    sizes: list[int],
    variant: str,
) -> None:
    """Garbage inserted (bytes) or bytes lost (int): units after it come out intact."""
    data = streams[variant][0]
    at = int(where * len(data))
    if isinstance(garbage, int):
        damaged, resumed = data[:at] + data[at + garbage :], at + garbage
    else:
        damaged, resumed = data[:at] + garbage + data[at:], at
    got = signature(feed_chunks(H264Framer(max_unit_size=CAP), damaged, sizes, bound=BOUND))
    later, pos = [], 0
    for buffer in frame_all(data, max_unit_size=CAP)[0]:
        if pos >= resumed:
            later.append(buffer)
        pos += len(buffer)
    # The unit the damage falls in may swallow the next one; the rest are intact.
    # Their timestamps count pictures from where the rate became known, which
    # the damage may move: compare everything else.
    expected = [(d, delta, header) for d, _, delta, header in signature(later[1:])]
    got = [(d, delta, header) for d, _, delta, header in got]
    assert got[len(got) - len(expected) :] == expected


PIECES = st.one_of(
    st.sampled_from([SPS, PPS0, PPS1, SEI, AUD, IDR, SLICE, SLICE_REST, SC3, SC4, b"\x00" * 3]),
    st.binary(max_size=40),
    st.binary(max_size=6).map(lambda b: SC3 + b),
)


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(PIECES, max_size=40), sizes=st.lists(st.integers(1, 100), min_size=1))
def test_nal_soup(pieces: list[bytes], sizes: list[int]) -> None:
    """Any mix of NAL units, start codes and bytes: no exception, nothing but
    the bytes before the first start code skipped, chunking irrelevant."""
    data = b"".join(pieces)
    whole, framer = frame_all(data, fps=FPS, max_unit_size=64)
    assert b"".join(b.tobytes() for b in whole) == data[framer.discarded :]
    assert all(len(b) <= 64 for b in whole)
    chunked = feed_chunks(H264Framer(fps=FPS, max_unit_size=64), data, sizes, bound=64 + 8)
    assert signature(chunked) == signature(whole)
