"""H.264 access units for the browser viewer (docs/fronts.md, "The browser
viewer"): PyAV-made streams through the MPEG-TS framer and the converter,
then decoded again from every keyframe by a fresh decoder."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from trio_msink import Buffer
from trio_msink.framing import MpegTsFramer
from trio_msink.framing._access_units import (
    AccessUnit,
    AccessUnitConverter,
    VideoConfig,
    split_nals,
)
from trio_msink.framing._sps import SpsInfo, parse_sps

FPS, GOP, FRAMES = 10, 10, 35


def _picture(i: int, width: int, height: int) -> av.VideoFrame:
    img = np.zeros((height, width, 3), np.uint8)
    img[:, (i * 5) % (width - 20) : (i * 5) % (width - 20) + 20] = 255
    img[::8, :, 1] = (i * 8) % 256
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    frame.pts = i
    return frame


def encode(container_format: str, *, codec: str = "libx264", width: int = 160,
           height: int = 120, params: str = "bframes=0", audio: bool = False,
           video: bool = True) -> bytes:
    """FRAMES frames, one keyframe every GOP, as MPEG-TS or an H.264 ES."""
    out = io.BytesIO()
    container = av.open(out, "w", format=container_format)
    if audio:
        sound_stream = container.add_stream("mp2", rate=48000)
        sound_stream.layout = "stereo"
        for i in range(20):
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 2 * 1152), np.int16),
                                               format="s16", layout="stereo")
            sound.sample_rate, sound.pts = 48000, i * 1152
            for packet in sound_stream.encode(sound):
                container.mux(packet)
        for packet in sound_stream.encode(None):
            container.mux(packet)
    if video:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        keys = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:{params}"
        if codec == "libx265":
            stream.options = {"x265-params": keys + ":log-level=error", "preset": "ultrafast"}
        else:
            stream.options = {"x264-params": keys, "preset": "veryfast"}
        for i in range(FRAMES + 1):
            for packet in stream.encode(_picture(i, width, height) if i < FRAMES else None):
                container.mux(packet)
    container.close()
    return out.getvalue()


def ts_units(data: bytes, converter: AccessUnitConverter | None = None) -> list[AccessUnit]:
    """Frame ``data`` as the server does and convert buffer by buffer."""
    framer = MpegTsFramer()
    converter = converter or AccessUnitConverter()
    units: list[AccessUnit] = []
    for buffer in framer.feed(data) + framer.flush():
        if framer.header_changed:
            for header in framer.streamheader:
                units += converter.convert(header.tobytes())
        units += converter.convert(buffer.tobytes(), buffer.pts)
    return units


def decode_from(units: list[AccessUnit]) -> int:
    """Pictures a fresh H.264 decoder makes of ``units`` (no extradata: the
    headers must be in the units themselves); raises on a decoding error."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.options = {"err_detect": "explode"}
    pictures = 0
    for unit in units:
        pictures += len(decoder.decode(av.Packet(unit.data)))
    pictures += len(decoder.decode(None))
    return pictures


def nal_types(unit: AccessUnit) -> list[int]:
    return [unit.data[begin] & 0x1F for begin, _ in split_nals(unit.data)]


@pytest.mark.parametrize("params", ["bframes=0", "bframes=2"])
def test_every_keyframe_is_a_place_to_start(params: str) -> None:
    units = ts_units(encode("mpegts", params=params))
    assert len(units) == FRAMES
    starts = [i for i, unit in enumerate(units) if unit.key]
    assert starts == list(range(0, FRAMES, GOP))
    for start in starts:
        assert {7, 8, 5} <= set(nal_types(units[start]))
        assert decode_from(units[start:]) == FRAMES - start


def test_presentation_times_in_seconds_in_decode_order() -> None:
    units = ts_units(encode("mpegts", params="bframes=2"))
    times = [unit.pts for unit in units]
    assert all(t is not None for t in times)
    # With B-frames presentation order differs from the order units come in,
    # but the set of times is one picture every 1/FPS seconds.
    base = min(t for t in times if t is not None)
    assert sorted(round((t or 0) - base, 3) for t in times) == [
        round(i / FPS, 3) for i in range(FRAMES)]
    assert times != sorted(times, key=lambda t: t or 0)


def test_config_is_read_from_the_sps_with_cropping() -> None:
    converter = AccessUnitConverter()
    ts_units(encode("mpegts", width=170, height=90), converter)
    assert converter.config is not None
    assert converter.config.codec is not None
    assert converter.config.codec.startswith("avc1.")
    assert (converter.config.width, converter.config.height) == (170, 90)
    assert converter.config.frame_rate == pytest.approx(FPS)


def test_codec_string_from_profile_constraints_and_level() -> None:
    # Constrained Baseline (66, constraint_set0/1), level 3.0, as WebCodecs takes it.
    assert SpsInfo(None, True, 4, False, 66, 0xC0, 30, 640, 480).codec == "avc1.42C01E"
    units = ts_units(encode("mpegts", params="bframes=2"))
    sps = next(units[0].data[b:e] for b, e in split_nals(units[0].data)
               if units[0].data[b] & 0x1F == 7)
    info = parse_sps(sps)
    assert info is not None
    assert info.codec == f"avc1.{sps[1]:02X}{sps[2]:02X}{sps[3]:02X}"
    assert info.profile_idc == 100  # High: bframes need it with x264's defaults


def test_headers_go_in_front_of_keyframes_that_lack_them() -> None:
    es = encode("h264")
    framer_units = [AccessUnit(d.tobytes(), None, False) for d in _es_units(es)]
    # Keep the SPS and PPS only in the first keyframe, as a stream may.
    stripped = []
    for i, unit in enumerate(framer_units):
        data = unit.data
        spans = split_nals(data)
        keep = [data[b:e] for b, e in spans if i == 0 or data[b] & 0x1F not in (7, 8)]
        stripped.append(b"".join(b"\x00\x00\x00\x01" + nal for nal in keep))
    converter = AccessUnitConverter("h264")
    units = [u for i, data in enumerate(stripped) for u in converter.convert(data, i / FPS)]
    assert converter.config is not None and converter.config.width == 160
    keys = [i for i, unit in enumerate(units) if unit.key]
    assert keys == list(range(0, FRAMES, GOP))
    for start in keys[1:]:
        assert nal_types(units[start])[:2] == [7, 8]
        assert 9 not in nal_types(units[start])  # no delimiter after the headers
        assert decode_from(units[start:]) == FRAMES - start
    assert [unit.pts for unit in units[:2]] == [0.0, 1 / FPS]


def _es_units(es: bytes) -> list[Buffer]:
    from trio_msink.framing import H264Framer

    framer = H264Framer()
    return framer.feed(es) + framer.flush()


def test_nothing_before_the_first_keyframe_nor_after_lost_data() -> None:
    data = encode("mpegts")
    framer = MpegTsFramer()
    buffers = framer.feed(data) + framer.flush()
    converter = AccessUnitConverter()
    for header in framer.streamheader:
        converter.convert(header.tobytes())
    video = [b for b in buffers if b.pts is not None]
    # Start on a delta unit: nothing until the keyframe.
    assert converter.convert(video[3].tobytes()) == []
    assert converter.convert(video[GOP].tobytes())[0].key
    assert len(converter.convert(video[GOP + 1].tobytes())) == 1
    # The continuation of a unit whose start was lost: wait for a keyframe.
    cut = next(b.tobytes() for b in video[GOP + 2 :] if len(b) > 2 * 188)
    assert converter.convert(cut[188:]) == []
    assert converter.convert(video[GOP + 8].tobytes()) == []
    assert len(converter.convert(video[2 * GOP].tobytes())) == 1


def test_pts_unwrapped_past_the_33_bit_wrap() -> None:
    converter = AccessUnitConverter()
    converter._last_ts = (1 << 33) - 900  # 10 ms before the wrap
    assert converter._unwrap(900) == pytest.approx(((1 << 33) + 900) / 90_000)


def test_a_stream_the_page_cannot_decode_says_why() -> None:
    converter = AccessUnitConverter()
    assert ts_units(encode("mpegts", codec="libx265"), converter) == []
    assert converter.config is not None and converter.config.codec is None
    assert "HEVC" in (converter.config.reason or "")
    converter = AccessUnitConverter()
    assert ts_units(encode("mpegts", audio=True, video=False), converter) == []
    assert converter.config == VideoConfig(None, reason="the stream has no video track")


def test_config_changed_only_when_it_changes() -> None:
    data = encode("mpegts")
    framer = MpegTsFramer()
    buffers = framer.feed(data) + framer.flush()
    converter = AccessUnitConverter()
    changes = 0
    for buffer in framer.streamheader + buffers:
        converter.convert(buffer.tobytes())
        changes += converter.config_changed
    assert changes == 1


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        AccessUnitConverter("raw")
