"""Raw chunking, format detection, the auto framer and open_framer's contract."""

from __future__ import annotations

import pytest
from conftest import feed_chunks
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_msink import Buffer
from trio_msink.framing import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PROBE_SIZE,
    FORMATS,
    AutoFramer,
    FramingError,
    H264Framer,
    MpegTsFramer,
    RawFramer,
    detect_format,
    open_framer,
)


def signature(buffers: list[Buffer]) -> list[tuple[bytes, float | None, bool, bool]]:
    return [(b.tobytes(), b.pts, b.delta_unit, b.header) for b in buffers]


# -- raw ------------------------------------------------------------------------


def test_raw_chunks() -> None:
    framer = open_framer("raw")
    assert isinstance(framer, RawFramer) and DEFAULT_CHUNK_SIZE == 7 * 188
    data = bytes(range(256)) * 12  # 3072 bytes: two chunks and 440 left over
    out = framer.feed(data)
    assert [len(b) for b in out] == [1316, 1316]
    assert framer.buffered == 440
    out += framer.flush()
    assert b"".join(b.tobytes() for b in out) == data and len(out[-1]) == 440
    assert all(b.keyframe and b.pts is None and not b.header for b in out)
    assert framer.streamheader == [] and framer.flush() == []


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(max_size=2000),
    chunk_size=st.integers(1, 300),
    sizes=st.lists(st.integers(1, 500), min_size=1, max_size=10),
)
def test_raw_chunking_does_not_change_the_output(
    data: bytes, chunk_size: int, sizes: list[int]
) -> None:
    framer = RawFramer(chunk_size=chunk_size)
    out = feed_chunks(framer, data, sizes)
    assert [b.tobytes() for b in out] == [
        data[i : i + chunk_size] for i in range(0, len(data), chunk_size)
    ]


# -- detection --------------------------------------------------------------------

TS = (b"\x47\x1f\xff\x10" + bytes(184)) * 3
NAL_SPS = b"\x67\x42\xc0\x0a\x8c"


@pytest.mark.parametrize(
    ("data", "final", "expected"),
    [
        (TS, False, "mpegts"),
        (TS[:376], False, None),  # two packets could be chance: wait for a third
        (TS[:376], True, "raw"),
        (b"\x00\x00\x00\x01" + NAL_SPS, False, "h264"),
        (b"\x00\x00\x01\x09\xf0", False, "h264"),
        (b"\x00\x00\x01\x1f", False, None),  # not a NAL a stream starts with
        (b"\x00\x00\x01\x67", False, "h264"),
        (b"abc", False, None),
        (b"abc", True, "raw"),
        (b"", True, "raw"),
        (bytes(DEFAULT_PROBE_SIZE), False, "raw"),
        (b"junk" + TS, False, None),
        (b"junk" + TS, True, "mpegts"),
        (b"junk" + TS + bytes(DEFAULT_PROBE_SIZE), False, "mpegts"),
        (b"\x12\x00\x00\x01\x41\x9a" * 2 + bytes(DEFAULT_PROBE_SIZE), False, "h264"),
    ],
)
def test_detect_format(data: bytes, final: bool, expected: str | None) -> None:
    assert detect_format(data, final=final) == expected


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=600)
    | st.builds(lambda a, b: a + TS + b, st.binary(max_size=50), st.binary(max_size=50))
    | st.builds(lambda a: b"\x00\x00\x01" + a, st.binary(max_size=300)),
    sizes=st.lists(st.integers(1, 200), min_size=1, max_size=10),
)
def test_auto_chunking_does_not_change_the_output(data: bytes, sizes: list[int]) -> None:
    whole = open_framer("auto", probe_size=400, max_unit_size=200)
    expected = signature(whole.feed(data) + whole.flush())
    framer = open_framer("auto", probe_size=400, max_unit_size=200)
    assert signature(feed_chunks(framer, data, sizes)) == expected
    assert isinstance(framer, AutoFramer) and isinstance(whole, AutoFramer)
    assert framer.detected == whole.detected


def test_auto_probes_then_delegates() -> None:
    framer = open_framer("auto", chunk_size=100)
    assert isinstance(framer, AutoFramer)
    assert framer.feed(b"x" * 1000) == [] and framer.buffered == 1000
    assert framer.detected is None and framer.framer is None
    out = framer.feed(b"x" * (DEFAULT_PROBE_SIZE - 1000 + 50))
    assert framer.detected == "raw" and isinstance(framer.framer, RawFramer)
    assert len(out) == 41 and framer.buffered == 46
    assert len(framer.flush()) == 1


def test_auto_decides_at_flush() -> None:
    framer = open_framer("auto")
    assert framer.flush() == []
    assert framer.feed(b"\x00\x00\x01\x67\x42") == []  # an SPS: h264, held for its end
    out = framer.flush()
    assert isinstance(framer, AutoFramer) and framer.detected == "h264"
    assert [b.tobytes() for b in out] == [b"\x00\x00\x01\x67\x42"]


def test_auto_reports_streamheader_changes() -> None:
    framer = open_framer("auto")
    sps, pps = b"\x00\x00\x00\x01" + NAL_SPS, b"\x00\x00\x00\x01\x68\xce\x3c\x80"
    framer.feed(sps + pps + b"\x00\x00\x01\x65\x88")
    assert framer.header_changed
    assert [h.tobytes() for h in framer.streamheader] == [sps, pps]
    framer.feed(b"\x00\x00\x01\x41\x9a")
    assert not framer.header_changed


# -- the contract -------------------------------------------------------------------


def test_options_of_other_formats_are_ignored() -> None:
    options = {"chunk_size": 188, "fps": 25, "max_unit_size": 1000, "probe_size": 500}
    framers = [open_framer(name, **options) for name in FORMATS]
    assert [len(f.feed(bytes(500))) for f in framers] == [2, 0, 0, 2]  # auto: raw
    h264 = framers[2]
    out = h264.feed(b"\x00\x00\x01\x65\x88" + bytes(2000)) + h264.flush()
    # The zero before the start code makes it a 4-byte one; 499 zeros skipped.
    assert [len(b) for b in out] == [1000, 1000, 6] and out[0].pts == 0.0
    assert h264.discarded == 499


def test_open_framer_formats() -> None:
    assert FORMATS == ("auto", "mpegts", "h264", "raw")
    kinds = [type(open_framer(name)) for name in FORMATS]
    assert kinds == [AutoFramer, MpegTsFramer, H264Framer, RawFramer]
    assert [k.format for k in kinds] == list(FORMATS)
    assert isinstance(open_framer(), AutoFramer)


@pytest.mark.parametrize(
    ("format", "opts", "match"),
    [
        ("flv", {}, "format"),
        (None, {}, "format"),
        ("raw", {"chunk_size": 0}, "chunk_size"),
        ("raw", {"chunk_size": "1316"}, "chunk_size"),
        ("raw", {"chunk_size": True}, "chunk_size"),
        ("raw", {"fps": -1}, "fps"),  # another format's option: still checked
        ("raw", {"colour": 1}, "colour"),
        ("mpegts", {"probe_size": 10}, "probe_size"),
        ("h264", {"fps": 0}, "fps"),
        ("h264", {"fps": float("nan")}, "fps"),
        ("h264", {"fps": "25"}, "fps"),
        ("mpegts", {"max_unit_size": 187}, "max_unit_size"),
        ("auto", {"probe_size": 376}, "probe_size"),
        ("auto", {"fps": -1}, "fps"),
        ("auto", {"colour": 1}, "colour"),
    ],
)
def test_misuse_raises_framing_error(format: object, opts: dict[str, object], match: str) -> None:
    with pytest.raises(FramingError, match=match):
        open_framer(format, **opts)  # type: ignore[arg-type]
    assert issubclass(FramingError, ValueError)


@pytest.mark.parametrize("name", FORMATS)
def test_feed_takes_bytes_like_only(name: str) -> None:
    framer = open_framer(name)
    with pytest.raises(FramingError, match="data"):
        framer.feed("text")  # type: ignore[arg-type]
    assert framer.feed(bytearray(b"\x00")) == []
    assert framer.feed(memoryview(b"\x00\x00")) == []
