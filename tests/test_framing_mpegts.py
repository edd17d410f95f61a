"""MPEG-TS framing: PyAV-made streams, hand-made packets, and garbage."""

from __future__ import annotations

import io
import itertools

import av
import numpy as np
import pytest
from conftest import feed_chunks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_msink import Buffer
from trio_msink.framing import AutoFramer, MpegTsFramer, open_framer

FRAMES, FPS, GOP = 30, 10, 10
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]

# -- streams made with PyAV ---------------------------------------------------


def _picture(i: int) -> av.VideoFrame:
    img = np.zeros((120, 160, 3), np.uint8)
    img[:, (i * 5) % 140 : (i * 5) % 140 + 20] = 255  # a bar moving right
    img[::8, :, 1] = (i * 8) % 256
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    frame.pts = i
    return frame


def encode_ts(codec: str) -> tuple[bytes, int]:
    """FRAMES frames at 160x120 with an mp2 audio track; (bytes, keyframes)."""
    out = io.BytesIO()
    container = av.open(out, "w", format="mpegts")
    audio = container.add_stream("mp2", rate=48000)
    audio.layout = "stereo"
    video = container.add_stream(codec, rate=FPS)
    video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
    video.gop_size = GOP
    params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0"
    if codec == "libx265":
        video.options = {"x265-params": params + ":log-level=error", "preset": "ultrafast"}
    else:
        video.options = {"x264-params": params, "preset": "veryfast"}
    keys, samples = 0, 0
    for i in range(FRAMES + 1):
        packets = video.encode(_picture(i) if i < FRAMES else None)
        for packet in packets:
            keys += packet.is_keyframe
            container.mux(packet)
        while samples < (i + 1) * 48000 // FPS:
            sound = av.AudioFrame.from_ndarray(
                np.zeros((1, 2 * 1152), np.int16), format="s16", layout="stereo"
            )
            sound.sample_rate, sound.pts = 48000, samples
            samples += 1152
            for packet in audio.encode(sound):
                container.mux(packet)
    for packet in audio.encode(None):
        container.mux(packet)
    container.close()
    return out.getvalue(), keys


@pytest.fixture(scope="module")
def ts_h264() -> tuple[bytes, int]:
    return encode_ts("libx264")


@pytest.fixture(scope="module")
def ts_hevc() -> tuple[bytes, int]:
    return encode_ts("libx265")


def frame_all(data: bytes, **opts: int) -> tuple[list[Buffer], MpegTsFramer]:
    framer = MpegTsFramer(**opts)
    return framer.feed(data) + framer.flush(), framer


def decode_video(data: bytes) -> list[bool]:
    """Keyframe flags of every picture PyAV decodes from a TS byte string."""
    with av.open(io.BytesIO(data), format="mpegts") as container:
        return [frame.key_frame for frame in container.decode(video=0)]


def signature(buffers: list[Buffer]) -> list[tuple[bytes, float | None, bool, bool]]:
    return [(b.tobytes(), b.pts, b.delta_unit, b.header) for b in buffers]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_one_keyframe_per_gop(codec: str, request: pytest.FixtureRequest) -> None:
    data, keys = request.getfixturevalue(f"ts_{codec}")
    buffers, _ = frame_all(data)
    assert keys == FRAMES // GOP
    assert sum(b.keyframe for b in buffers) == keys
    assert sum(b.pts is not None for b in buffers) == FRAMES  # one per picture


def test_output_is_the_input_cut_into_whole_packets(ts_h264: tuple[bytes, int]) -> None:
    data, _ = ts_h264
    buffers, framer = frame_all(data)
    assert b"".join(b.tobytes() for b in buffers) == data
    assert all(len(b) % 188 == 0 for b in buffers)
    assert framer.discarded == 0 and framer.buffered == 0
    # Before the first picture: the PSI the muxer wrote first, as a delta unit.
    assert buffers[0].delta_unit and buffers[0].pts is None
    assert buffers[1].keyframe


def test_pts_increase(ts_h264: tuple[bytes, int]) -> None:
    buffers, _ = frame_all(ts_h264[0])
    pts = [b.pts for b in buffers if b.pts is not None]
    assert all(b - a == pytest.approx(1 / FPS) for a, b in itertools.pairwise(pts))


def test_streamheader_is_pat_and_pmt(ts_h264: tuple[bytes, int]) -> None:
    framer = MpegTsFramer()
    framer.feed(ts_h264[0][: 188 * 10])
    assert framer.header_changed
    pat, pmt = framer.streamheader
    assert pat.header and pmt.header and len(pat) == len(pmt) == 188
    assert pat.tobytes()[:3] == b"\x47\x40\x00"  # PID 0, unit start
    assert pmt.tobytes()[5] == 0x02  # table_id of a PMT
    framer.feed(ts_h264[0][188 * 10 :])
    assert not framer.header_changed  # repeated PSI, only the counter differs
    assert framer.streamheader[0].tobytes() == pat.tobytes()


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_decodes_from_every_keyframe(codec: str, request: pytest.FixtureRequest) -> None:
    data, _ = request.getfixturevalue(f"ts_{codec}")
    buffers, framer = frame_all(data)
    header = b"".join(h.tobytes() for h in framer.streamheader)
    pictures = 0
    for i, buffer in enumerate(buffers):
        if buffer.keyframe:
            tail = header + b"".join(b.tobytes() for b in buffers[i:])
            keys = decode_video(tail)
            assert keys[0] and len(keys) == FRAMES - pictures
        pictures += buffer.pts is not None


def test_auto_detects_mpegts(ts_h264: tuple[bytes, int]) -> None:
    framer = open_framer("auto")
    out = framer.feed(ts_h264[0]) + framer.flush()
    assert signature(out) == signature(frame_all(ts_h264[0])[0])
    assert isinstance(framer, AutoFramer) and framer.detected == "mpegts"
    assert framer.streamheader


@settings(max_examples=25, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=30))
def test_chunking_does_not_change_the_output(ts_h264: tuple[bytes, int], sizes: list[int]) -> None:
    data = ts_h264[0]
    assert signature(feed_chunks(MpegTsFramer(), data, sizes)) == signature(frame_all(data)[0])


# -- hand-made packets --------------------------------------------------------


def crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def packet(
    pid: int,
    payload: bytes = b"",
    *,
    start: bool = False,
    rai: bool = False,
    cc: int = 0,
    pad: bytes = b"",
) -> bytes:
    """One TS packet; short payloads are padded with an adaptation field."""
    header = bytes([0x47, (0x40 if start else 0) | pid >> 8, pid & 0xFF])
    room = 184 - len(payload)
    if pad:  # PSI: stuffing bytes after the section, no adaptation field
        return header + bytes([0x10 | cc]) + payload + pad * room
    if room == 0 and not rai:
        return header + bytes([0x10 | cc]) + payload
    assert room >= (2 if rai else 1)
    field = b"" if room == 1 else bytes([0x40 if rai else 0]) + b"\xff" * (room - 2)
    return header + bytes([0x30 | cc, room - 1]) + field + payload


def section(table_id: int, ext: int, body: bytes, version: int = 0) -> bytes:
    length = 5 + len(body) + 4
    head = bytes([table_id, 0xB0 | length >> 8, length & 0xFF]) + ext.to_bytes(2, "big")
    head += bytes([0xC1 | version << 1, 0, 0]) + body
    return head + crc32_mpeg2(head).to_bytes(4, "big")


def pat(pmt_pid: int = 0x1000, cc: int = 0, program: int = 1) -> bytes:
    body = program.to_bytes(2, "big") + (0xE000 | pmt_pid).to_bytes(2, "big")
    return packet(0, b"\x00" + section(0x00, 1, body), start=True, cc=cc, pad=b"\xff")


def pmt(
    streams: list[tuple[int, int]],
    pmt_pid: int = 0x1000,
    version: int = 0,
    cc: int = 0,
    program: int = 1,
) -> bytes:
    body = (0xE000 | streams[0][1]).to_bytes(2, "big") + b"\xf0\x00"
    for stream_type, pid in streams:
        body += bytes([stream_type]) + (0xE000 | pid).to_bytes(2, "big") + b"\xf0\x00"
    return packet(
        pmt_pid, b"\x00" + section(0x02, program, body, version), start=True, cc=cc, pad=b"\xff"
    )


def pes(pts: int | None, es: bytes, stream_id: int = 0xE0) -> bytes:
    if pts is None:
        return bytes([0, 0, 1, stream_id, 0, 0, 0x80, 0x00, 0]) + es
    # '0010', PTS[32..30], marker, PTS[29..15], marker, PTS[14..0], marker
    stamp = 0b0010 << 36 | (pts >> 30 & 7) << 33 | 1 << 32 | (pts >> 15 & 0x7FFF) << 17
    stamp |= 1 << 16 | (pts & 0x7FFF) << 1 | 1
    return bytes([0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5]) + stamp.to_bytes(5, "big") + es


def pes_packets(pid: int, data: bytes, *, rai: bool = False) -> list[bytes]:
    first = 182 if rai else 184
    out = [packet(pid, data[:first], start=True, rai=rai)]
    for i in range(first, len(data), 184):
        out.append(packet(pid, data[i : i + 184], cc=len(out) % 16))
    return out


VIDEO = 0x100
H264_IDR, H264_P = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x65\x88", b"\x00\x00\x01\x41\x9a"


def stream(*units: list[bytes]) -> bytes:
    """PAT, PMT with one H.264 stream on PID VIDEO, then the units' packets."""
    return pat() + pmt([(0x1B, VIDEO)]) + b"".join(b"".join(u) for u in units)


def test_handmade_units_keyframes_and_pts() -> None:
    data = stream(
        pes_packets(VIDEO, pes(90000, H264_IDR + bytes(300)), rai=True),
        pes_packets(VIDEO, pes(93600, H264_P + bytes(10))),
        pes_packets(VIDEO, pes(97200, H264_IDR)),  # IDR without the RAI flag
        [packet(0x1FFF, bytes(184))],  # a null packet goes with the unit before it
    )
    buffers, framer = frame_all(data)
    got = [(len(b) // 188, b.pts, b.keyframe) for b in buffers]
    assert got == [(2, None, False), (2, 1.0, True), (1, 1.04, False), (2, 1.08, True)]
    assert framer.video_pid == VIDEO
    assert [h.tobytes() for h in framer.streamheader] == [pat(), pmt([(0x1B, VIDEO)])]


@pytest.mark.parametrize(
    ("stream_type", "key_es", "delta_es"),
    [
        (0x1B, b"\x00\x00\x01\x06\x05\x00\x00\x01\x65", b"\x00\x00\x01\x01\x80"),
        (0x24, b"\x00\x00\x01\x40\x01\x00\x00\x01\x26\x01", b"\x00\x00\x01\x02\x01"),
        (0x02, b"\x00\x00\x01\xb3\x00\x00\x01\x00\x00\x0f\xff", b"\x00\x00\x01\x00\x00\x17\xff"),
    ],
)
def test_keyframe_from_the_picture_header(stream_type: int, key_es: bytes, delta_es: bytes) -> None:
    data = pat() + pmt([(stream_type, VIDEO)])
    for es in (key_es, delta_es, key_es):
        data += b"".join(pes_packets(VIDEO, pes(0, es)))
    buffers, _ = frame_all(data)
    assert [b.keyframe for b in buffers[1:]] == [True, False, True]


def test_pts_wrap_is_unwrapped() -> None:
    top = (1 << 33) - 3000
    data = stream(
        *(
            pes_packets(VIDEO, pes(t % (1 << 33), H264_P))
            for t in (top, top + 3000, top + 6000, top + 4500)
        )
    )
    pts = [b.pts for b in frame_all(data)[0][1:]]
    assert pts == pytest.approx([t / 90000 for t in (top, top + 3000, top + 6000, top + 4500)])


def test_video_preferred_then_first_stream() -> None:
    audio = 0x101
    units = [
        *pes_packets(audio, pes(0, b"\xff\xf1" * 50, 0xC0)),
        *pes_packets(VIDEO, pes(0, H264_P)),
        *pes_packets(audio, pes(9, b"", 0xC0)),
    ]
    listed_first = pat() + pmt([(0x0F, audio), (0x1B, VIDEO)]) + b"".join(units)
    buffers, framer = frame_all(listed_first)
    assert framer.video_pid == VIDEO and len(buffers) == 2
    audio_only = pat() + pmt([(0x0F, audio)]) + b"".join(units)
    buffers, framer = frame_all(audio_only)
    assert framer.video_pid == audio
    assert [b.keyframe for b in buffers] == [False, True, True]  # audio units are all key


def test_streamheader_follows_pmt_content() -> None:
    framer = MpegTsFramer()
    framer.feed(pat() + pmt([(0x1B, VIDEO)]) + bytes([0x47]))
    assert framer.header_changed
    framer.feed(packet(0x1FFF, bytes(184))[1:] + pat(cc=1) + pmt([(0x1B, VIDEO)], cc=1))
    assert not framer.header_changed
    framer.feed(pmt([(0x1B, 0x200)], version=1, cc=2) + pat(cc=2) + pat(cc=3))
    assert framer.header_changed and framer.video_pid == 0x200
    assert framer.streamheader[1].tobytes() == pmt([(0x1B, 0x200)], version=1, cc=2)
    bad = bytearray(pmt([(0x1B, 0x300)], version=2))
    bad[20] ^= 0xFF  # broken CRC: ignored
    framer.feed(bytes(bad) + pat() + pat())
    assert not framer.header_changed and framer.video_pid == 0x200


def test_access_unit_cap() -> None:
    data = stream(
        pes_packets(VIDEO, pes(0, H264_IDR + bytes(184 * 9)), rai=True),
        pes_packets(VIDEO, pes(3600, H264_P)),
    )
    buffers, _framer = frame_all(data, max_unit_size=188 * 4)
    got = [(len(b) // 188, b.pts, b.keyframe) for b in buffers]
    assert got == [
        (2, None, False),
        (4, 0.0, True),
        (4, None, False),
        (2, None, False),
        (1, 0.04, False),
    ]
    with pytest.raises(ValueError, match="max_unit_size"):
        MpegTsFramer(max_unit_size=100)


# -- garbage ------------------------------------------------------------------

CAP = 100 * 188
# The unit being built, the resync window, a partial packet, the picture scan.
BOUND = CAP + 3 * 188 + 64 * 1024 + 188


def framed_with_offsets(data: bytes) -> list[tuple[int, Buffer]]:
    buffers, _ = frame_all(data, max_unit_size=CAP)
    offsets, pos = [], 0
    for b in buffers:
        offsets.append((pos, b))
        pos += len(b)
    return offsets


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), sizes=st.lists(st.integers(1, 700), min_size=1))
def test_garbage_never_raises(data: bytes, sizes: list[int]) -> None:
    framer = MpegTsFramer(max_unit_size=CAP)
    feed_chunks(framer, data, sizes, bound=BOUND)
    feed_chunks(framer, b"\x47" + data * 3, sizes, bound=BOUND)


@settings(max_examples=40, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(
    where=st.floats(0, 1),
    garbage=st.binary(min_size=1, max_size=1000) | st.integers(1, 400),
    sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=10),
)
def test_resyncs_after_garbage_or_loss(
    ts_h264: tuple[bytes, int], where: float, garbage: bytes | int, sizes: list[int]
) -> None:
    """Garbage inserted (bytes) or bytes lost (int): units after it come out intact."""
    data = ts_h264[0]
    at = int(where * len(data))
    if isinstance(garbage, int):
        damaged, resumed = data[:at] + data[at + garbage :], at + garbage
    else:
        damaged, resumed = data[:at] + garbage + data[at:], at
    framer = MpegTsFramer(max_unit_size=CAP)
    got = signature(feed_chunks(framer, damaged, sizes, bound=BOUND))
    # The unit the damage falls in is lost or changed, and so may be the
    # next (a resync can start in it); every later one is as without damage.
    later = [b for pos, b in framed_with_offsets(data) if pos >= resumed][1:]
    expected = signature(later)
    assert got[len(got) - len(expected) :] == expected


def _mangle(packet: bytes, flip: int, value: int, keep: int) -> bytes:
    damaged = bytearray(packet)
    damaged[flip % 188] = value
    return bytes(damaged[:keep])


POOL = [
    pat(),
    pmt([(0x1B, VIDEO)]),
    pmt([(0x24, VIDEO), (0x0F, 0x101)], version=3),
    pat(0x1001),
    pmt([(0x02, 0x101)], pmt_pid=0x1001),
    packet(0x1FFF, bytes(184)),
    *pes_packets(VIDEO, pes(1 << 32, H264_IDR + bytes(200)), rai=True),
    *pes_packets(VIDEO, pes(5, H264_P)),
    *pes_packets(0x101, pes(None, b"\x00\x00\x01\x00")),
]
PACKETS = st.one_of(
    st.sampled_from(POOL),
    st.builds(_mangle, st.sampled_from(POOL), *(st.integers(0, n) for n in (187, 255, 188))),
    st.binary(max_size=187).map(lambda b: b"\x47" + b),
)


@settings(max_examples=100, deadline=None)
@given(packets=st.lists(PACKETS, max_size=40), sizes=st.lists(st.integers(1, 600), min_size=1))
def test_mangled_packets(packets: list[bytes], sizes: list[int]) -> None:
    """Valid, damaged, cut and random packets: no exception, every byte
    either in a buffer of whole packets or counted as discarded, and the
    output independent of chunking."""
    data = b"".join(packets)
    whole, framer = frame_all(data, max_unit_size=188 * 5)
    assert sum(len(b) for b in whole) + framer.discarded == len(data)
    assert all(len(b) % 188 == 0 and b.tobytes()[::188] == b"\x47" * (len(b) // 188) for b in whole)
    framer = MpegTsFramer(max_unit_size=188 * 5)
    assert signature(feed_chunks(framer, data, sizes, bound=BOUND)) == signature(whole)
