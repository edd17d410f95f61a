"""H.264 Annex B: NAL units grouped into one buffer per access unit."""

from __future__ import annotations

from .._buffer import Buffer
from ._base import DEFAULT_MAX_UNIT_SIZE, Framer, check_rate, check_size
from ._nal import START_CODE, h264_is_vcl, parse_ue
from ._sps import SpsInfo, field_picture, parse_sps

__all__ = ["H264Framer"]

_AUD, _SEI, _SPS, _PPS = 9, 6, 7, 8
_IDR = 5
# NAL types that open a new access unit when they follow a picture
# (H.264 7.4.1.2.3): SEI, SPS, PPS and the reserved 14..18.
_UNIT_OPENERS = frozenset({_SEI, _SPS, _PPS, 14, 15, 16, 17, 18})
# Parameter sets are a few dozen bytes; one this large is garbage.
_MAX_PARAMETER_SET = 4096
_HEADER_START_CODE = b"\x00\x00\x00\x01"
# Bytes of a slice NAL that hold field_pic_flag: the header byte, three
# ue(v) of at most a few bytes each and frame_num (at most 16 bits), with
# room for emulation prevention bytes.
_SLICE_HEAD = 24


class H264Framer(Framer):
    """Frames an H.264 Annex B byte stream into one buffer per access unit.

    A new unit starts at an access unit delimiter (NAL type 9), or, once the
    current unit holds a picture, at an SEI/SPS/PPS (6/7/8) or at a slice
    (1/5) whose first_mb_in_slice is 0: parameter sets and SEI preceding a
    picture travel with it. Units with an IDR slice (type 5) are keyframes,
    others delta units. Bytes before the first start code are skipped (see
    :attr:`discarded`); everything else is passed through unchanged.

    :attr:`streamheader` is the latest SPS of each id followed by the latest
    PPS of each id, each a ``header=True`` buffer with a 4-byte start code.

    Timestamps: an elementary stream carries none, but its SPS may declare
    a frame rate (VUI timing info: ``time_scale / (2 * num_units_in_tick)``
    pictures per second). The rate in force is ``fps`` when given, else
    that of the latest SPS with timing info; with a rate, the n-th picture
    (from 0) gets ``pts = n / rate`` and ``duration = 1 / rate`` (when the
    SPS's rate changes, the pictures after it are spaced by the new one,
    continuing from where the old one left). A field coded as its own
    access unit (field_pic_flag, in a stream whose SPS allows fields)
    counts as half a picture. Pictures before any rate is
    known, and every picture when none ever is, carry no timestamps. Since
    pictures are counted in stream order, these timestamps follow the
    decode order, B-frames or not. A unit over ``max_unit_size`` bytes is
    cut, the rest following as delta buffers without timestamps.

    After :meth:`restart` the picture count starts again from 0, and the
    SPS rate must be read again from the new stream.

    Raises :exc:`FramingError` if ``fps`` is not a positive number or None,
    or ``max_unit_size`` is not an int >= 1.
    """

    format = "h264"

    def __init__(
        self, *, fps: float | None = None, max_unit_size: int = DEFAULT_MAX_UNIT_SIZE
    ) -> None:
        super().__init__()
        self._fps = check_rate("fps", fps)
        self._max_unit = check_size("max_unit_size", max_unit_size, 1)
        self._restart()

    def _restart(self) -> None:
        self._pending = bytearray()  # unread bytes, from the current NAL's tail
        self._search = 0  # where to look for the next start code in _pending
        self._in_nal = False  # a NAL has started: pending bytes belong to the unit
        self._parameter_set: bytearray | None = None  # SPS/PPS being collected
        self._sps: dict[int, bytes] = {}
        self._pps: dict[int, bytes] = {}
        self._sps_info: SpsInfo | None = None  # the latest SPS's
        self._sps_rate: float | None = None  # from the latest SPS with timing info
        self._slice_head: bytearray | None = None  # first bytes of the unit's first slice
        self._ticks = 0  # half-frames timed at the current rate
        self._pts_base = 0.0  # pts of the first of them
        self._rate: float | None = None  # the rate they are timed at
        self._unit = bytearray()
        self._unit_has_picture = False
        self._unit_idr = False
        self._unit_cut = False  # the unit continues one cut at max_unit_size

    def _has_headers(self) -> bool:
        return bool(self._sps) and bool(self._pps)

    @property
    def buffered(self) -> int:
        """Bytes held: the unit being built and the unread tail."""
        return len(self._pending) + len(self._unit)

    def _feed(self, data: bytes) -> list[Buffer]:
        out: list[Buffer] = []
        self._pending += data
        self._process(out, final=False)
        return out

    def _flush(self) -> list[Buffer]:
        out: list[Buffer] = []
        self._process(out, final=True)
        self._end_nal()
        self._emit(out)
        self._in_nal = False
        return out

    def _process(self, out: list[Buffer], *, final: bool) -> None:
        buf = self._pending
        pos = 0  # bytes before pos are used up
        while True:
            p = buf.find(START_CODE, self._search)
            # The header byte and, for slices, the first slice header byte.
            if p < 0 or (p + 5 > len(buf) and not final):
                break
            if p + 3 >= len(buf):
                p = -1  # a start code ending the input starts nothing
                break
            # A zero byte before 00 00 01 is part of a 4-byte start code.
            cut = p - 1 if p > pos and buf[p - 1] == 0 else p
            self._take(buf, pos, cut, out)
            self._end_nal()
            self._start_nal(buf, p + 3, out)
            pos = cut
            self._search = p + 3
        if final:
            end = len(buf)
        elif p >= 0:
            end = p - 1 if p > pos and buf[p - 1] == 0 else p
        else:
            # The last 3 bytes may begin a start code (with its zero byte).
            end = max(pos, len(buf) - 3)
        self._take(buf, pos, end, out)
        del buf[:end]
        self._search = max(0, self._search - end)

    def _take(self, buf: bytearray, start: int, end: int, out: list[Buffer]) -> None:
        """Add ``buf[start:end]`` to the current NAL, or skip it before any NAL."""
        if end <= start:
            return
        if not self._in_nal:
            self._discarded += end - start
            return
        chunk = buf[start:end]
        head = self._slice_head
        if head is not None and len(head) < _SLICE_HEAD:
            head += chunk[: _SLICE_HEAD - len(head)]
        if self._parameter_set is not None:
            if len(self._parameter_set) + len(chunk) > _MAX_PARAMETER_SET:
                self._parameter_set = None
            else:
                self._parameter_set += chunk
        # Cut exactly at max_unit_size, so that the output does not depend on
        # how the input was chunked.
        while len(self._unit) + len(chunk) > self._max_unit:
            room = self._max_unit - len(self._unit)
            self._unit += chunk[:room]
            del chunk[:room]
            has_picture = self._unit_has_picture
            self._emit(out)
            # The rest is the same access unit: a picture in it still means
            # that the next SPS or first slice opens a new one.
            self._unit_has_picture = has_picture
            self._unit_cut = True
        self._unit += chunk

    def _start_nal(self, buf: bytearray, h: int, out: list[Buffer]) -> None:
        header = buf[h]
        nal_type = header & 0x1F if not header & 0x80 else 0
        first_slice = h + 1 < len(buf) and bool(buf[h + 1] & 0x80)  # ue(v) "1" = 0
        vcl = h264_is_vcl(nal_type)
        if nal_type == _AUD:
            opens = True
        elif nal_type in _UNIT_OPENERS:
            opens = self._unit_has_picture
        else:
            opens = self._unit_has_picture and nal_type in (1, _IDR) and first_slice
        if opens:
            self._emit(out)
        self._in_nal = True
        if vcl and not self._unit_has_picture:
            sps = self._sps_info
            # Only a stream that may code fields needs the slice header.
            if sps is not None and not sps.frame_mbs_only:
                self._slice_head = bytearray()
        if vcl:
            self._unit_has_picture = True
            self._unit_idr = self._unit_idr or nal_type == _IDR
        self._parameter_set = bytearray() if nal_type in (_SPS, _PPS) else None

    def _end_nal(self) -> None:
        """The current NAL is complete: keep it if it is a parameter set."""
        nal = self._parameter_set
        self._parameter_set = None
        if nal is None:
            return
        # Drop the start code in front and trailing_zero_8bits behind.
        body = bytes(nal[nal.find(START_CODE) + 3 :]).rstrip(b"\x00")
        parsed = _parameter_set_id(body)
        if parsed is None:
            return
        table = self._sps if parsed[0] == _SPS else self._pps
        if table.get(parsed[1]) == body:
            return
        table[parsed[1]] = body
        if parsed[0] == _SPS:
            info = parse_sps(body)
            if info is not None:
                self._sps_info = info
                if info.rate is not None:
                    self._sps_rate = info.rate
        sets = [nal for _, nal in sorted(self._sps.items())]
        sets += [nal for _, nal in sorted(self._pps.items())]
        self._set_streamheader([Buffer(_HEADER_START_CODE + nal, header=True) for nal in sets])

    def _field_unit(self) -> bool:
        """Whether the unit being emitted is a single field (half a frame)."""
        head, sps = self._slice_head, self._sps_info
        if head is None or sps is None:
            return False
        body = bytes(head[head.find(START_CODE) + 3 :])
        return field_picture(body, sps) is True

    def _emit(self, out: list[Buffer]) -> None:
        if not self._unit:
            return
        pts = duration = None
        rate = self._fps if self._fps is not None else self._sps_rate
        if rate is not None and self._unit_has_picture and not self._unit_cut:
            if rate != self._rate:
                # A new rate spaces the pictures from here on.
                if self._rate is not None:
                    self._pts_base += self._ticks / (2 * self._rate)
                self._rate, self._ticks = rate, 0
            ticks = 1 if self._field_unit() else 2
            pts = self._pts_base + self._ticks / (2 * rate)
            duration = ticks / (2 * rate)
            self._ticks += ticks
        self._slice_head = None
        # Each framer ends a unit as the MPEG-TS one does (make the buffer,
        # admit it, reset), with its own key rule and fields to reset.
        key = self._unit_idr and not self._unit_cut
        buffer = Buffer(bytes(self._unit), pts=pts, duration=duration, delta_unit=not key)
        if self._admit(buffer):
            out.append(buffer)
        self._unit = bytearray()
        self._unit_has_picture = False
        self._unit_idr = False
        self._unit_cut = False


def _parameter_set_id(nal: bytes) -> tuple[int, int] | None:
    """(NAL type, seq/pic_parameter_set_id) of an SPS or PPS NAL, or None."""
    if not nal:
        return None
    nal_type = nal[0] & 0x1F
    # Enough of the RBSP for the id, with emulation prevention bytes removed.
    rbsp = nal[1:32].replace(b"\x00\x00\x03", b"\x00\x00")
    if nal_type == _SPS:
        # profile_idc, constraint flags, level_idc, then the id.
        parsed = parse_ue(rbsp, 24)
        limit = 32
    else:
        parsed = parse_ue(rbsp, 0)
        limit = 256
    if parsed is None or parsed[0] >= limit:
        return None
    return nal_type, parsed[0]
