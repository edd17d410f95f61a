"""Framers fuzzed with streams that are not what they claim.

Real MPEG-TS and H.264 (made with PyAV) and random bytes, cut, truncated,
bit-flipped, concatenated and restarted, fed in random chunks. Whatever
comes in, every framer (docs/framing.md):

* raises nothing (``FramingError`` is for misuse only, never for input);
* in MPEG-TS mode emits only whole packets: every buffer a multiple of 188
  bytes, each packet starting with the sync byte 0x47;
* keeps ``buffered`` under its documented bound ("Memory bounds") after
  every call, and no buffer larger than ``max_unit_size``;
* emits a keyframe first after :meth:`~trio_msink.framing.Framer.restart`;
* gives the same buffers however the input is chunked.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from test_framing_h264 import encode_h264
from test_framing_mpegts import encode_ts

from trio_msink import Buffer
from trio_msink.framing import AutoFramer, Framer, open_framer
from trio_msink.framing._nal import SCAN_LIMIT

# Small limits, so that cutting at max_unit_size and its bound are exercised
# by short inputs (a unit of the test streams is up to a few KiB).
MAX_UNIT = 188 * 12
CHUNK = 500
PROBE = 1024
OPTIONS = {"max_unit_size": MAX_UNIT, "chunk_size": CHUNK, "probe_size": PROBE}
# docs/framing.md, "Memory bounds".
BOUNDS = {
    "mpegts": MAX_UNIT + 376 + SCAN_LIMIT,
    "h264": MAX_UNIT + 5,
    "raw": CHUNK - 1,
}


@functools.cache
def seeds() -> dict[str, bytes]:
    """One real stream of each kind: MPEG-TS (H.264 video, MP2 audio) and
    H.264 Annex B with B-frames."""
    return {"mpegts": encode_ts("libx264")[0], "h264": encode_h264("bframes=2")[0]}


# -- building damaged streams ---------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Bytes of the input, fed after a restart() when ``restart`` is set."""

    data: bytes
    restart: bool


def _slice(kind: str, start: float, length: int) -> bytes:
    """``length`` bytes of seed ``kind`` from the fraction ``start`` on (truncated)."""
    data = seeds()[kind]
    at = int(start * len(data))
    return data[at : at + length]


def _flipped(kind: str, start: float, length: int, seed: int, flips: int) -> bytes:
    """A slice of a seed with ``flips`` random bits inverted."""
    data = bytearray(_slice(kind, start, length))
    rng = random.Random(seed)
    for _ in range(flips if data else 0):
        bit = rng.randrange(len(data) * 8)
        data[bit >> 3] ^= 1 << (bit & 7)
    return bytes(data)


KINDS = st.sampled_from(["mpegts", "h264"])
BYTES = st.one_of(
    # Slices long enough to hold several units (a unit of the seeds is
    # 0.2-4 KiB, a keyframe every 60 KiB): lengths are drawn from the range, not shrunk towards 0.
    st.builds(_slice, KINDS, st.floats(0, 1), st.integers(1000, 80_000)),
    st.builds(_slice, KINDS, st.floats(0, 1), st.integers(0, 1000)),
    st.builds(_flipped, KINDS, st.floats(0, 1), st.integers(1000, 80_000),
              st.integers(0, 2**32), st.integers(1, 40)),
    st.binary(max_size=3000),
    # Random bytes in which sync bytes and start codes are common.
    st.lists(st.sampled_from([b"\x47", b"\x00\x00\x01", b"\x00", b"\x65", b"\x67", b"\xff"]),
             max_size=400).map(b"".join),
)
# A restart before one piece in four: an MPEG-TS seed has a keyframe a
# second (some 60 KiB), and nothing comes out after a restart before one.
RESTART = st.sampled_from([False, False, False, True])
PIECES = st.lists(st.builds(Piece, BYTES, RESTART), min_size=1, max_size=5)
SIZES = st.lists(st.integers(1, 5000), min_size=1, max_size=20)


# -- checking every call ----------------------------------------------------------


def _format(framer: Framer) -> str:
    """The framing in force: the detected one for auto ("auto" while probing)."""
    if isinstance(framer, AutoFramer):
        return framer.detected or "auto"
    return framer.format


def _check(framer: Framer, out: list[Buffer]) -> None:
    fmt = _format(framer)
    bound = PROBE - 1 if fmt == "auto" else BOUNDS[fmt]
    assert framer.buffered <= bound, (fmt, framer.buffered, bound)
    # After a restart the headers before it stay until the new stream's
    # keyframe, and auto may have detected another format meanwhile.
    headers = [] if framer.restarting else framer.streamheader
    for buffer in [*out, *headers]:
        data = buffer.tobytes()
        assert buffer.pts is None or math.isfinite(buffer.pts)
        if fmt == "mpegts":  # never a torn packet
            assert len(data) % 188 == 0 and len(data) > 0
            assert data[::188] == b"\x47" * (len(data) // 188)
        if fmt in ("mpegts", "h264") and not buffer.header:
            assert len(data) <= MAX_UNIT
        if fmt == "raw":
            assert 0 < len(data) <= CHUNK
    assert all(h.header for h in framer.streamheader)


def run(framer: Framer, pieces: list[Piece], sizes: list[int]) -> list[tuple[object, ...]]:
    """Feed ``pieces`` in chunks of ``sizes`` (cycled), restarting where a
    piece says so, then flush; check every call; return what came out."""
    got: list[tuple[object, ...]] = []
    turn = 0
    for piece in pieces:
        if piece.restart:
            framer.restart()
            assert framer.restarting
        awaiting_keyframe = framer.restarting
        pos = 0
        while pos < len(piece.data):
            size = sizes[turn % len(sizes)]
            turn += 1
            out = framer.feed(piece.data[pos : pos + size])
            pos += size
            _check(framer, out)
            if awaiting_keyframe and out:
                assert not out[0].delta_unit, "the first buffer after restart() is a keyframe"
                awaiting_keyframe = False
            got += [(b.tobytes(), b.pts, b.delta_unit, b.header) for b in out]
    out = framer.flush()
    _check(framer, out)
    got += [(b.tobytes(), b.pts, b.delta_unit, b.header) for b in out]
    got.append(("discarded", framer.discarded))
    return got


@settings(max_examples=400, deadline=None)
@given(fmt=st.sampled_from(["auto", "mpegts", "h264", "raw"]), pieces=PIECES, sizes=SIZES)
def test_damaged_streams(fmt: str, pieces: list[Piece], sizes: list[int]) -> None:
    """Every check above holds for each call, and chunking changes nothing."""
    chunked = run(open_framer(fmt, **OPTIONS), pieces, sizes)
    whole = run(open_framer(fmt, **OPTIONS), pieces, [1 << 30])
    assert chunked == whole


@settings(max_examples=30, deadline=None)
@given(kind=KINDS, seed=st.integers(0, 2**32), sizes=SIZES)
def test_heavily_damaged_real_stream(kind: str, seed: int, sizes: list[int]) -> None:
    """A whole real stream with a bit flipped every few hundred bytes, fed
    to its own framer and to auto."""
    data = seeds()[kind]
    pieces = [Piece(_flipped(kind, 0, len(data), seed, len(data) // 300), False)]
    for fmt in (kind, "auto"):
        run(open_framer(fmt, **OPTIONS), pieces, sizes)


def test_sync_bytes_and_start_codes_only() -> None:
    """Worst cases for the scanners: input made only of sync bytes, or only
    of start codes, is bounded and framed in whole packets or units."""
    for data in (b"\x47" * 50_000, b"\x00\x00\x01" * 20_000, b"\x00\x00\x01\x65" * 20_000,
                 b"\x00" * 50_000):
        for fmt in ("auto", "mpegts", "h264", "raw"):
            run(open_framer(fmt, **OPTIONS), [Piece(data, False)], [4096, 7, 188])
