"""Start codes and NAL unit headers shared by the MPEG-TS and H.264 framers."""

from __future__ import annotations

__all__ = [
    "START_CODE",
    "KeyframeScanner",
    "h264_is_vcl",
    "parse_ue",
    "plausible_h264_nal",
]

START_CODE = b"\x00\x00\x01"

# Codec names used by the scanner (from the PMT stream type).
H264 = "h264"
HEVC = "hevc"
MPEG2 = "mpeg2"

# The first picture is found within a few hundred bytes in practice (x264's
# version SEI on the first IDR is ~700 bytes); give up well after that.
SCAN_LIMIT = 64 * 1024


def h264_is_vcl(nal_type: int) -> bool:
    """A coded slice: non-IDR (1) or IDR (5); data partitions 2-4 included."""
    return 1 <= nal_type <= 5


def plausible_h264_nal(header: int) -> bool:
    """Whether ``header`` looks like the first byte of an H.264 stream's NAL.

    forbidden_zero_bit clear, a type a stream starts with (slice, IDR, SEI,
    SPS, PPS, AUD), and nal_ref_idc as the spec requires for that type.
    """
    if header & 0x80:
        return False
    ref_idc, nal_type = header >> 5, header & 0x1F
    if nal_type in (5, 7, 8):
        return ref_idc != 0
    if nal_type in (6, 9):
        return ref_idc == 0
    return nal_type == 1


def parse_ue(data: bytes | bytearray, bit: int) -> tuple[int, int] | None:
    """Read an Exp-Golomb ue(v) at bit offset ``bit``: (value, next bit) or None."""
    total = len(data) * 8
    zeros = 0
    while True:
        if bit >= total or zeros > 31:
            return None
        if (data[bit >> 3] >> (7 - (bit & 7))) & 1:
            break
        zeros += 1
        bit += 1
    bit += 1
    if bit + zeros > total:
        return None
    value = 0
    for _ in range(zeros):
        value = (value << 1) | ((data[bit >> 3] >> (7 - (bit & 7))) & 1)
        bit += 1
    return (1 << zeros) - 1 + value, bit


class KeyframeScanner:
    """Decides from the start of an elementary stream payload whether the
    picture it carries is a sync point.

    Bytes go in with :meth:`feed` until :attr:`result` is not None: True for
    an IDR/IRAP picture (H.264 type 5, HEVC types 16-21, MPEG-2 I picture),
    False for any other picture. It stays None if no picture header shows up
    within ``SCAN_LIMIT`` bytes. Memory is bounded by that limit.
    """

    __slots__ = ("_buf", "_codec", "_pos", "_seen", "result")

    def __init__(self, codec: str) -> None:
        self._codec = codec
        self._buf = bytearray()
        self._pos = 0
        self._seen = 0
        self.result: bool | None = None

    @property
    def buffered(self) -> int:
        """Bytes held while looking for a picture header."""
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> None:
        """Scan more payload bytes (ignored once decided or past the limit)."""
        if self.result is not None or self._seen > SCAN_LIMIT:
            return
        self._seen += len(data)
        buf = self._buf
        buf += data
        # Bytes a picture header needs after its start code.
        need = 3 if self._codec == MPEG2 else 1
        while True:
            p = buf.find(START_CODE, self._pos)
            if p < 0 or p + 3 + need > len(buf):
                keep = p if p >= 0 else max(0, len(buf) - 2)
                del buf[:keep]
                self._pos = 0
                break
            decided = self._classify(buf, p + 3)
            if decided is not None:
                self.result = decided
                self._buf = bytearray()
                return
            self._pos = p + 3
        if self._seen > SCAN_LIMIT:
            self._buf = bytearray()

    def _classify(self, buf: bytearray, h: int) -> bool | None:
        if self._codec == H264:
            nal_type = buf[h] & 0x1F
            return nal_type == 5 if h264_is_vcl(nal_type) else None
        if self._codec == HEVC:
            nal_type = (buf[h] >> 1) & 0x3F
            return 16 <= nal_type <= 21 if nal_type < 32 else None
        if buf[h] == 0x00:  # MPEG-2 picture_start_code
            # temporal_reference (10 bits), then picture_coding_type (3): 1 = I.
            return (buf[h + 2] >> 3) & 0x07 == 1
        return None
