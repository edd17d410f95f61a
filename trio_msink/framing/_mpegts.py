"""MPEG-TS: 188-byte packets grouped into one buffer per video access unit."""

from __future__ import annotations

from .._buffer import Buffer
from ._base import DEFAULT_MAX_UNIT_SIZE, Framer, check_size
from ._nal import H264, HEVC, MPEG2, KeyframeScanner
from ._psi import (
    PACKET_SIZE,
    PAT_PID,
    SYNC_BYTE,
    Packet,
    parse_packet,
    parse_pat,
    parse_pes_header,
    parse_pmt,
    section_of,
)

__all__ = ["MpegTsFramer"]

# PMT stream_type → codec, in order of preference is the PMT's own order.
VIDEO_STREAM_TYPES = {0x1B: H264, 0x24: HEVC, 0x02: MPEG2, 0x01: MPEG2}

_PTS_WRAP = 1 << 33  # PTS is a 33-bit counter of a 90 kHz clock
_PTS_HZ = 90_000

# Resynchronising needs this many sync bytes 188 bytes apart: three, as
# ffmpeg's mpegts probe and GStreamer's tsparse do at least, makes a false
# lock on random data a 1 in 16 million event per position.
_SYNC_PACKETS = 3
_SYNC_SPAN = (_SYNC_PACKETS - 1) * PACKET_SIZE


class MpegTsFramer(Framer):
    """Frames an MPEG transport stream into one buffer per video access unit.

    Each buffer holds whole 188-byte packets: a video packet with
    payload_unit_start_indicator (a new PES packet, i.e. a new picture) and
    every packet (audio, PSI, null, video continuation) up to the next one,
    so the concatenated output is a valid transport stream. Bytes that do
    not belong to an aligned packet are skipped (see :attr:`discarded`);
    sync is regained where three sync bytes 188 bytes apart are found.

    The video PID is the first PMT stream of type 0x1B (H.264), 0x24
    (HEVC), 0x02 or 0x01 (MPEG video), else the first stream of the PMT
    (whose units are then all keyframes, as audio frames are). A buffer is a
    keyframe when its first packet has random_access_indicator set or its
    first picture is IDR/IRAP (H.264 type 5, HEVC 16-21, MPEG-2 I picture);
    ``pts`` is the unit's decode time in seconds: the PES header's DTS when
    it has one, else its PTS (equal to the DTS then), unwrapped past the
    33-bit roll-over. It is the decode time, not the presentation time, so
    that it follows the stream's order with B-frames too: the Sink paces
    and measures by it.
    Packets before the first video PES start form a delta buffer without
    PTS. An access unit over ``max_unit_size`` bytes is cut, the rest
    following as delta buffers.

    :attr:`streamheader` is the latest PAT packet and the packet of the PMT
    it names (two ``header=True`` buffers), replaced only when their content
    changes (not for a new continuity counter). Only PSI sections that fit
    in one packet and pass their CRC are read.

    After :meth:`restart`, unwrapping starts over, and a PAT or PMT equal
    to the one before but for its continuity counter is no header change.

    Raises :exc:`FramingError` if ``max_unit_size`` is not an int >= 188.
    """

    format = "mpegts"

    def __init__(self, *, max_unit_size: int = DEFAULT_MAX_UNIT_SIZE) -> None:
        super().__init__()
        self._max_unit = check_size("max_unit_size", max_unit_size, PACKET_SIZE)
        self._restart()

    def _restart(self) -> None:
        # The packets of the headers in force (those before the first of
        # several restarts): a new stream's PAT or PMT that differs from them
        # only in the continuity counter is the same header.
        old = [h.tobytes() for h in self._streamheader]
        self._previous = (old[0], old[1]) if len(old) == 2 else (None, None)
        self._pending = bytearray()
        self._synced = False
        # PSI state.
        self._program: int | None = None
        self._pmt_pid: int | None = None
        self._pat_packet: bytes | None = None
        self._pmt_packet: bytes | None = None
        self._video_pid: int | None = None
        self._codec: str | None = None
        self._last_ts: int | None = None
        # The access unit being collected.
        self._unit = bytearray()
        self._unit_pes = False
        self._unit_always_key = False
        self._unit_rai = False
        self._unit_pts: float | None = None
        self._scanner: KeyframeScanner | None = None

    def _has_headers(self) -> bool:
        return self._pat_packet is not None and self._pmt_packet is not None

    @property
    def buffered(self) -> int:
        """Bytes held: partial packet or resync window, the unit being built."""
        scanning = self._scanner.buffered if self._scanner is not None else 0
        return len(self._pending) + len(self._unit) + scanning

    @property
    def video_pid(self) -> int | None:
        """PID whose PES starts delimit the buffers (None until a PMT is read)."""
        return self._video_pid

    def _feed(self, data: bytes) -> list[Buffer]:
        out: list[Buffer] = []
        buf = self._pending
        buf += data
        del buf[: self._process(buf, out, final=False)]
        return out

    def _flush(self) -> list[Buffer]:
        out: list[Buffer] = []
        self._process(self._pending, out, final=True)
        self._pending = bytearray()
        self._synced = False
        self._emit(out)
        return out

    # -- alignment --------------------------------------------------------

    def _process(self, buf: bytearray, out: list[Buffer], *, final: bool) -> int:
        """Frame the packets in ``buf``; return how many bytes were used up."""
        off, n = 0, len(buf)
        while True:
            if self._synced:
                # A packet is taken when the next one starts with a sync byte
                # too: a packet cut short by garbage is dropped, not parsed.
                while n - off > PACKET_SIZE and buf[off] == buf[off + PACKET_SIZE] == SYNC_BYTE:
                    self._packet(bytes(buf[off : off + PACKET_SIZE]), out)
                    off += PACKET_SIZE
                if n - off > PACKET_SIZE:
                    self._synced = False
                    continue
                if final and n - off == PACKET_SIZE and buf[off] == SYNC_BYTE:
                    self._packet(bytes(buf[off:]), out)
                    off = n
                break
            found = self._find_sync(buf, off, final=final)
            if found < 0:
                self._discarded += n - off
                return n
            self._discarded += found - off
            off = found
            if found + _SYNC_SPAN >= n and not final:
                break  # a candidate, but its followers have not arrived yet
            self._synced = True
        if final:
            self._discarded += n - off
            return n
        return off

    @staticmethod
    def _find_sync(buf: bytearray, start: int, *, final: bool) -> int:
        """First offset from ``start`` where packets line up, a candidate too
        close to the end to tell (not final), or -1."""
        n = len(buf)
        i = buf.find(SYNC_BYTE, start)
        while i >= 0:
            if i + _SYNC_SPAN < n:
                if all(buf[i + k * PACKET_SIZE] == SYNC_BYTE for k in range(1, _SYNC_PACKETS)):
                    return i
            elif not final:
                return i
            elif n - i >= PACKET_SIZE and all(
                buf[j] == SYNC_BYTE for j in range(i, n, PACKET_SIZE)
            ):
                return i  # at the end of input, fewer packets have to agree
            i = buf.find(SYNC_BYTE, i + 1)
        return -1

    # -- packets ----------------------------------------------------------

    def _packet(self, packet: bytes, out: list[Buffer]) -> None:
        info = parse_packet(packet)
        payload = memoryview(packet)[info.payload_start :]
        if info.unit_start:
            if info.pid == PAT_PID:
                self._on_pat(packet, payload)
            elif info.pid == self._pmt_pid:
                self._on_pmt(packet, payload)
        if info.pid == self._video_pid:
            if info.unit_start:
                self._emit(out)
                self._start_unit(info, payload)
            elif self._scanner is not None:
                self._scanner.feed(payload)
        if len(self._unit) + PACKET_SIZE > self._max_unit:
            self._emit(out)
        self._unit += packet

    def _start_unit(self, info: Packet, payload: memoryview) -> None:
        self._unit_pes = True
        self._unit_always_key = self._codec is None
        self._unit_rai = info.random_access
        pes = parse_pes_header(payload)
        if pes is None:
            return
        # The decode time: the order in which units must reach a decoder is
        # the stream's order, and with B-frames only DTS follows it.
        ts = pes.dts if pes.dts is not None else pes.pts
        if ts is not None:
            self._unit_pts = self._unwrap(ts)
        if self._codec is not None:
            self._scanner = KeyframeScanner(self._codec)
            self._scanner.feed(payload[pes.es_start :])

    def _unwrap(self, ts: int) -> float:
        # Take the value congruent to ts (mod 2**33) nearest the previous
        # one: forward wraps add 2**33, and a timestamp just before a wrap
        # that comes after one just past it still lands behind it.
        if self._last_ts is not None:
            ts += ((self._last_ts - ts + _PTS_WRAP // 2) // _PTS_WRAP) * _PTS_WRAP
        self._last_ts = ts
        return ts / _PTS_HZ

    def _emit(self, out: list[Buffer]) -> None:
        if not self._unit:
            return
        key = False
        if self._unit_pes:
            scanned = self._scanner is not None and self._scanner.result is True
            key = self._unit_always_key or self._unit_rai or scanned
        buffer = Buffer(bytes(self._unit), pts=self._unit_pts, delta_unit=not key)
        if self._admit(buffer):
            out.append(buffer)
        self._unit = bytearray()
        self._unit_pes = False
        self._unit_always_key = False
        self._unit_rai = False
        self._unit_pts = None
        self._scanner = None

    # -- PSI --------------------------------------------------------------

    def _on_pat(self, packet: bytes, payload: memoryview) -> None:
        section = section_of(payload)
        programs = parse_pat(section) if section is not None else None
        if not programs:
            return
        program, pmt_pid = programs[0]
        if (program, pmt_pid) != (self._program, self._pmt_pid):
            self._program, self._pmt_pid = program, pmt_pid
            self._pmt_packet = None  # wait for the PMT the new PAT names
        self._pat_packet = _newer(self._pat_packet or self._previous[0], packet)
        self._update_streamheader()

    def _on_pmt(self, packet: bytes, payload: memoryview) -> None:
        section = section_of(payload)
        if section is None or (section[3] << 8) | section[4] != self._program:
            return
        streams = parse_pmt(section)
        if streams is None:
            return
        self._video_pid, self._codec = _pick_video(streams)
        self._pmt_packet = _newer(self._pmt_packet or self._previous[1], packet)
        self._update_streamheader()

    def _update_streamheader(self) -> None:
        if self._pat_packet is None or self._pmt_packet is None:
            self._set_streamheader([])
        else:
            self._set_streamheader(
                [Buffer(self._pat_packet, header=True), Buffer(self._pmt_packet, header=True)]
            )


def _pick_video(streams: list[tuple[int, int]]) -> tuple[int | None, str | None]:
    for stream_type, pid in streams:
        codec = VIDEO_STREAM_TYPES.get(stream_type)
        if codec is not None:
            return pid, codec
    if streams:
        return streams[0][1], None
    return None, None


def _newer(old: bytes | None, packet: bytes) -> bytes:
    """``packet``, unless ``old`` differs from it only in the continuity counter."""
    if (
        old is not None
        and old[:3] == packet[:3]
        and old[3] & 0xF0 == packet[3] & 0xF0
        and old[4:] == packet[4:]
    ):
        return old
    return packet
