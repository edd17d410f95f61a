"""Timestamps the framers hand out: MPEG-TS decode time (DTS) unwrapped past
the 33-bit roll-over, and the H.264 frame rate read from the SPS."""

from __future__ import annotations

import io
import itertools
from fractions import Fraction

import av
import numpy as np
import pytest
from _video import encode_video

from trio_msink import Buffer
from trio_msink.framing import H264Framer, MpegTsFramer
from trio_msink.framing._psi import PACKET_SIZE, parse_packet, parse_pes_header
from trio_msink.framing._sps import parse_sps

WRAP = 2**33  # ticks of the 90 kHz MPEG-TS clock
FRAMES = 40


def encode(
    fmt: str,
    *,
    rate: Fraction,
    bframes: int = 0,
    start: int = 0,
    profile: str = "high",
    pix_fmt: str = "yuv420p",
    extra: str = "",
) -> bytes:
    def picture(i: int) -> np.ndarray:
        img = np.full((48, 64, 3), (i * 6) % 256, np.uint8)
        img[:, i % 44 : i % 44 + 20] = 255
        return img

    options = {
        "x264-params": f"keyint=10:scenecut=0:bframes={bframes}{extra}",
        "preset": "veryfast",
        "profile": profile,
    }
    return encode_video(fmt, frames=FRAMES, rate=rate, picture=picture, options=options,
                        size=(64, 48), pix_fmt=pix_fmt, start=start)


def frame(framer: MpegTsFramer | H264Framer, data: bytes) -> list[Buffer]:
    return [b for b in framer.feed(data) + framer.flush() if b.pts is not None]


def demuxed(data: bytes) -> list[tuple[int, int]]:
    """(pts, dts) in 90 kHz ticks of each video packet, as ffmpeg reads them."""
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return [
            (p.pts, p.dts)
            for p in container.demux(video=0)
            if p.pts is not None and p.dts is not None
        ]


def coded_dts(data: bytes) -> list[int]:
    """The DTS (else PTS) coded in each PES header of PID 256, the first video
    PID ffmpeg uses: 33-bit values as they are in the stream."""
    stamps = []
    for i in range(0, len(data), PACKET_SIZE):
        packet = data[i : i + PACKET_SIZE]
        info = parse_packet(packet)
        if info.pid == 256 and info.unit_start:
            pes = parse_pes_header(packet[info.payload_start :])
            if pes is not None and pes.pts is not None:
                stamps.append(pes.dts if pes.dts is not None else pes.pts)
    return stamps


# -- MPEG-TS: decode time ------------------------------------------------------------


def test_b_frames_carry_the_decode_time_in_stream_order() -> None:
    data = encode("mpegts", rate=Fraction(25), bframes=2)
    packets = demuxed(data)
    assert any(pts != dts for pts, dts in packets)  # B-frames: PTS out of order
    assert [pts for pts, _ in packets] != sorted(pts for pts, _ in packets)
    stamps = [b.pts for b in frame(MpegTsFramer(), data)]
    assert stamps == pytest.approx([dts / 90_000 for _, dts in packets])
    assert all(b > a for a, b in itertools.pairwise(stamps))


def test_without_b_frames_the_pts_is_the_decode_time() -> None:
    data = encode("mpegts", rate=Fraction(25))
    packets = demuxed(data)
    assert all(pts == dts for pts, dts in packets)
    stamps = [b.pts for b in frame(MpegTsFramer(), data)]
    assert stamps == pytest.approx([pts / 90_000 for pts, _ in packets])


@pytest.mark.parametrize("bframes", [0, 2])
def test_the_33_bit_counter_is_unwrapped(bframes: int) -> None:
    rate = Fraction(25)
    start = int((WRAP / 90_000 - 0.8) * rate)  # 0.8 s before the roll-over
    data = encode("mpegts", rate=rate, bframes=bframes, start=start)
    coded = coded_dts(data)
    assert min(coded) < 90_000 < WRAP - 90_000 < max(coded)  # it does wrap in the stream
    stamps = [b.pts for b in frame(MpegTsFramer(), data)]
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    assert steps == pytest.approx([1 / 25] * len(steps))
    assert stamps[0] < WRAP / 90_000 < stamps[-1]


def _pes(flags: int, pts: int, dts: int) -> bytes:
    def ts(prefix: int, value: int) -> bytes:
        return bytes(
            [
                prefix << 4 | ((value >> 30) & 0x07) << 1 | 1,
                (value >> 22) & 0xFF,
                ((value >> 15) & 0x7F) << 1 | 1,
                (value >> 7) & 0xFF,
                (value & 0x7F) << 1 | 1,
            ]
        )

    fields = ts(flags, pts) + (ts(1, dts) if flags == 3 else b"")
    return b"\x00\x00\x01\xe0\x00\x00\x80" + bytes([flags << 6, len(fields)]) + fields + b"ES"


def test_parse_pes_header_reads_pts_and_dts() -> None:
    both = parse_pes_header(_pes(3, WRAP - 1, 12345))
    assert both is not None and (both.pts, both.dts) == (WRAP - 1, 12345)
    assert both.es_start == 19
    only = parse_pes_header(_pes(2, 777, 0))
    assert only is not None and (only.pts, only.dts, only.es_start) == (777, None, 14)
    cut = parse_pes_header(_pes(3, 5, 6)[:16])  # the DTS does not fit
    assert cut is not None and (cut.pts, cut.dts) == (5, None)
    assert parse_pes_header(b"\x00\x00\x02\xe0\x00\x00") is None


# -- H.264: the SPS frame rate ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "profile", "pix_fmt", "extra"),
    [
        (Fraction(25), "high", "yuv420p", ""),
        (Fraction(30000, 1001), "main", "yuv420p", ""),
        (Fraction(24), "baseline", "yuv420p", ""),
        (Fraction(60), "high444", "yuv444p", ""),
        (Fraction(25, 2), "high", "yuv420p", ":cqm=jvt"),  # scaling matrices in the SPS
        (Fraction(50), "high10", "yuv420p10le", ""),
    ],
)
def test_sps_rate_times_the_pictures(
    rate: Fraction, profile: str, pix_fmt: str, extra: str
) -> None:
    data = encode("h264", rate=rate, profile=profile, pix_fmt=pix_fmt, extra=extra)
    framer = H264Framer()
    stamps = frame(framer, data)
    assert sps_frame_rate(framer.streamheader[0].tobytes()[4:]) == pytest.approx(float(rate))
    assert len(stamps) == FRAMES
    assert [b.pts for b in stamps] == pytest.approx([n / float(rate) for n in range(FRAMES)])
    assert stamps[0].duration == pytest.approx(1 / float(rate))


def sps_frame_rate(nal: bytes) -> float | None:
    """The frame rate an SPS NAL unit declares; None for no SPS or no rate."""
    info = parse_sps(nal)
    return None if info is None else info.rate


def test_sps_without_timing_info_or_garbage_gives_no_rate() -> None:
    assert sps_frame_rate(b"\x67\x42\xc0\x0a\x8c\x8d\x40") is None  # no VUI
    assert sps_frame_rate(b"") is None
    assert sps_frame_rate(b"\x68\xce\x3c\x80") is None  # a PPS
    assert sps_frame_rate(b"\x67" + b"\x00" * 40) is None
    assert sps_frame_rate(b"\x67\x64\x00\x1f\xff\xff") is None  # cut short


def test_a_new_sps_rate_spaces_the_pictures_after_it() -> None:
    """25 fps then the same stream at 50 fps: pts keep growing, spaced by each."""
    first = encode("h264", rate=Fraction(25))
    second = encode("h264", rate=Fraction(50))
    stamps = frame(H264Framer(), first + second)
    assert len(stamps) == 2 * FRAMES
    expected = [n / 25 for n in range(FRAMES)] + [FRAMES / 25 + n / 50 for n in range(FRAMES)]
    assert [b.pts for b in stamps] == pytest.approx(expected)


def test_explicit_fps_overrides_the_sps() -> None:
    data = encode("h264", rate=Fraction(25))
    stamps = frame(H264Framer(fps=10), data)
    assert [b.pts for b in stamps] == pytest.approx([n / 10 for n in range(FRAMES)])


# -- H.264 fields -------------------------------------------------------------------------


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> _BitWriter:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ue(self, value: int) -> _BitWriter:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def rbsp(self) -> bytes:
        bits = [*self.bits, 1]  # rbsp_stop_one_bit, then zeros to a byte
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def _interlaced_sps(time_scale: int) -> bytes:
    """A baseline SPS that allows field pictures (frame_mbs_only_flag 0), with
    4-bit frame_num and VUI timing of ``time_scale`` over 1 tick."""
    w = _BitWriter().u(8, 77).u(8, 0).u(8, 30).ue(0)  # main profile, level 3
    w.ue(0).ue(2).ue(1).u(1, 0).ue(9).ue(4)  # frame_num 4 bits, poc type 2, size
    w.u(1, 0).u(1, 0).u(1, 1).u(1, 0)  # frame_mbs_only 0, mbaff 0, direct_8x8, no crop
    w.u(1, 1).u(1, 0).u(1, 0).u(1, 0).u(1, 0)  # VUI: no aspect/overscan/signal/chroma
    w.u(1, 1).u(32, 1).u(32, time_scale).u(1, 1)  # timing info, fixed frame rate
    w.u(1, 0).u(1, 0).u(1, 0).u(1, 0)  # no HRD, no pic_struct, no restriction
    return b"\x00\x00\x00\x01\x67" + w.rbsp()


def _slice(idr: bool, *, field: bool, frame_num: int) -> bytes:
    w = _BitWriter().ue(0).ue(7 if idr else 5).ue(0).u(4, frame_num)
    w.u(1, int(field))
    if field:
        w.u(1, frame_num & 1)  # bottom_field_flag
    return b"\x00\x00\x01" + (b"\x65" if idr else b"\x41") + w.rbsp() + b"\xaa\x55" * 4


PPS_MAIN = b"\x00\x00\x00\x01\x68\xce\x3c\x80"


def test_sps_fields_are_read() -> None:
    from trio_msink.framing._sps import field_picture, parse_sps

    info = parse_sps(_interlaced_sps(50)[4:])
    assert info is not None and info.rate == 25.0
    assert not info.frame_mbs_only and info.frame_num_bits == 4
    assert field_picture(_slice(True, field=True, frame_num=0)[3:], info) is True
    assert field_picture(_slice(False, field=False, frame_num=3)[3:], info) is False
    assert field_picture(b"\x41", info) is None


def test_field_pictures_last_half_a_frame() -> None:
    """Each field is its own access unit: at 25 frames a second, 1/50 s each."""
    data = _interlaced_sps(50) + PPS_MAIN + _slice(True, field=True, frame_num=0)
    data += _slice(True, field=True, frame_num=1)
    for n in range(2, 8):
        data += _slice(False, field=True, frame_num=n)
    data += _slice(False, field=False, frame_num=8)  # a frame among the fields
    data += _slice(False, field=True, frame_num=9)
    stamps = frame(H264Framer(), data)
    assert len(stamps) == 10
    expected = [n / 50 for n in range(9)] + [10 / 50]
    assert [b.pts for b in stamps] == pytest.approx(expected)
    assert [b.duration for b in stamps] == pytest.approx([1 / 50] * 8 + [2 / 50, 1 / 50])
    # Chunking does not change it.
    framer = H264Framer()
    chunked: list[Buffer] = []
    for i in range(0, len(data), 3):
        chunked += framer.feed(data[i : i + 3])
    chunked += framer.flush()
    assert [b.pts for b in chunked if b.pts is not None] == [b.pts for b in stamps]


def test_mbaff_frames_are_whole_frames() -> None:
    """x264's interlaced mode codes frames (MBAFF), not fields: 1/25 s each."""
    data = encode("h264", rate=Fraction(25), extra=":interlaced=1")
    framer = H264Framer()
    stamps = frame(framer, data)
    info_rate = sps_frame_rate(framer.streamheader[0].tobytes()[4:])
    assert info_rate == 25.0
    assert [b.pts for b in stamps] == pytest.approx([n / 25 for n in range(FRAMES)])
