"""H.264 access units for a browser's decoder, taken from framed buffers.

A browser's WebCodecs ``VideoDecoder`` takes H.264 access units in Annex B
form (start codes, no ``description``), one ``EncodedVideoChunk`` each, and
needs the SPS and PPS in front of every keyframe it may start on. The
:class:`AccessUnitConverter` makes those from the buffers a framer produced:
for MPEG-TS, the PES of the video PID (the payload, without the TS and PES
headers); for an H.264 elementary stream, the buffer itself. Pure and
synchronous like the framers: one call per buffer, nothing per viewer.
See ``docs/fronts.md`` ("The browser viewer").
"""

from __future__ import annotations

from dataclasses import dataclass

from ._nal import START_CODE
from ._psi import (
    PACKET_SIZE,
    PAT_PID,
    SYNC_BYTE,
    parse_packet,
    parse_pat,
    parse_pes_header,
    parse_pmt,
    section_of,
)
from ._sps import SpsInfo, parse_sps

__all__ = ["AccessUnit", "AccessUnitConverter", "VideoConfig"]

_H264_STREAM_TYPE = 0x1B
# Names of the PMT video stream types this page cannot take, for the message
# the viewer reads (the PMT's own codes otherwise).
_OTHER_VIDEO = {0x24: "H.265/HEVC", 0x02: "MPEG-2 video", 0x01: "MPEG-1 video"}
_PTS_WRAP = 1 << 33
_PTS_HZ = 90_000
_NAL_SPS, _NAL_PPS, _NAL_IDR, _NAL_AUD = 7, 8, 5, 9
# A PES that grows past this without ending is not video a browser can
# take (and would grow memory without end): it is dropped.
_MAX_UNIT = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class VideoConfig:
    """What a decoder must be configured with, or why there is no video.

    ``codec`` is the RFC 6381 string (``avc1.42C01E``) or None when the
    stream cannot be decoded by the page; ``reason`` then says why in one
    sentence. ``width``/``height`` are pixels; ``frame_rate`` frames per
    second from the SPS, or None when it declares none.
    """

    codec: str | None
    width: int = 0
    height: int = 0
    frame_rate: float | None = None
    reason: str | None = None

    @classmethod
    def from_sps(cls, info: SpsInfo) -> VideoConfig:
        return cls(info.codec, info.width, info.height, info.rate)


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One H.264 access unit in Annex B form.

    ``pts`` is its presentation time in seconds (MPEG-TS: the PES PTS,
    unwrapped past the 33-bit roll-over; H.264 ES: the buffer's pts) or
    None. A ``key`` unit holds an IDR picture with the SPS and PPS in
    front of it.
    """

    data: bytes
    pts: float | None
    key: bool


def split_nals(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every NAL unit of an Annex B byte string, start codes
    and the zero bytes before the next start code left out."""
    spans: list[tuple[int, int]] = []
    pos = data.find(START_CODE)
    while pos >= 0:
        begin = pos + 3
        nxt = data.find(START_CODE, begin)
        end = len(data) if nxt < 0 else nxt
        while end > begin and data[end - 1] == 0:
            end -= 1  # trailing_zero_8bits / the first byte of a 4-byte start code
        if end > begin:
            spans.append((begin, end))
        pos = nxt
    return spans


class AccessUnitConverter:
    """Framed buffers in, H.264 access units for a browser out.

    ``format`` is the framer's: ``"mpegts"`` (each buffer starts at a PES
    start of the video PID, as :class:`MpegTsFramer` makes them; the PAT and
    PMT may come in any buffer, streamheaders included) or ``"h264"`` (each
    buffer is one access unit, as :class:`H264Framer` makes them).

    :meth:`convert` returns the units completed by one buffer. Units before
    the first keyframe are dropped (a decoder cannot start on them), and so
    is everything up to the next keyframe after data was lost (a PES cut
    into several buffers, a continuity gap). A keyframe without SPS or PPS
    gets the last ones seen, so every keyframe is a place to start.
    :attr:`config` is the decoder configuration from the current SPS (or a
    :class:`VideoConfig` with ``codec=None`` and a reason when the stream is
    not H.264 video); :attr:`config_changed` says whether the last call
    changed it. Raises :exc:`ValueError` for another ``format``.
    """

    def __init__(self, format: str = "mpegts") -> None:
        if format not in ("mpegts", "h264"):
            raise ValueError(f"format: expected 'mpegts' or 'h264', got {format!r}")
        self.format = format
        self.config: VideoConfig | None = None
        self.config_changed = False
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        self._need_key = True
        # MPEG-TS state.
        self._pmt_pid: int | None = None
        self._video_pid: int | None = None
        self._pes = bytearray()
        self._pes_open = False
        self._pes_pts: float | None = None
        self._last_ts: int | None = None

    def restart(self) -> None:
        """A new stream follows (a new upstream): drop the unit being
        collected and the timestamp history; wait for a keyframe. The
        video PID and the SPS/PPS are kept until the new stream's replace them."""
        self._drop_pes()
        self._pes_pts = None
        self._last_ts = None

    def convert(self, data: bytes | memoryview, pts: float | None = None) -> list[AccessUnit]:
        """The access units completed by one buffer's bytes; ``pts`` (seconds)
        is the buffer's, used for an H.264 elementary stream."""
        self.config_changed = False
        out: list[AccessUnit] = []
        if self.format == "h264":
            self._unit(bytes(data), pts, out)
            return out
        view = memoryview(data)
        for off in range(0, len(view) - PACKET_SIZE + 1, PACKET_SIZE):
            # Only three PIDs matter; reading the PID here skips the parse of
            # every other packet (audio, data, null).
            pid = ((view[off + 1] & 0x1F) << 8) | view[off + 2]
            if view[off] == SYNC_BYTE and pid in (self._video_pid, PAT_PID, self._pmt_pid):
                self._packet(view[off : off + PACKET_SIZE], out)
        # The framer ends a buffer where the video PES ends: the unit is
        # complete now, not one picture later when the next PES starts.
        self._end_pes(out)
        return out

    # -- MPEG-TS ------------------------------------------------------------

    def _packet(self, packet: memoryview, out: list[AccessUnit]) -> None:
        info = parse_packet(packet)
        payload = packet[info.payload_start :]
        if info.unit_start and info.pid == PAT_PID:
            section = section_of(payload)
            programs = parse_pat(section) if section is not None else None
            if programs:
                self._pmt_pid = programs[0][1]
        elif info.unit_start and info.pid == self._pmt_pid:
            section = section_of(payload)
            streams = parse_pmt(section) if section is not None else None
            if streams:
                self._on_pmt(streams)
        elif info.pid == self._video_pid:
            if info.unit_start:
                self._end_pes(out)
                pes = parse_pes_header(payload)
                if pes is None:
                    self._need_key = True
                    return
                self._pes_open = True
                self._pes_pts = self._unwrap(pes.pts) if pes.pts is not None else None
                self._pes += payload[pes.es_start :]
            elif self._pes_open:
                self._pes += payload
                if len(self._pes) > _MAX_UNIT:
                    self._drop_pes()
            elif len(payload):
                self._need_key = True  # the rest of a unit whose start we did not take

    def _on_pmt(self, streams: list[tuple[int, int]]) -> None:
        for stream_type, pid in streams:
            if stream_type == _H264_STREAM_TYPE:
                if pid != self._video_pid:
                    self._video_pid = pid
                    self._drop_pes()
                return
            if stream_type in _OTHER_VIDEO:
                self._video_pid = None
                self._set_config(VideoConfig(
                    None, reason=f"the stream's video is {_OTHER_VIDEO[stream_type]}, "
                                 "which this page does not decode (H.264 only)"))
                return
        self._video_pid = None
        self._set_config(VideoConfig(None, reason="the stream has no video track"))

    def _end_pes(self, out: list[AccessUnit]) -> None:
        if self._pes_open:
            self._unit(bytes(self._pes), self._pes_pts, out)
        self._pes = bytearray()
        self._pes_open = False
        self._pes_pts = None

    def _drop_pes(self) -> None:
        self._pes = bytearray()
        self._pes_open = False
        self._need_key = True

    def _unwrap(self, ts: int) -> float:
        # As the framer: the value congruent to ts (mod 2**33) nearest the last.
        if self._last_ts is not None:
            ts += ((self._last_ts - ts + _PTS_WRAP // 2) // _PTS_WRAP) * _PTS_WRAP
        self._last_ts = ts
        return ts / _PTS_HZ

    # -- H.264 access units -------------------------------------------------------

    def _unit(self, data: bytes, pts: float | None, out: list[AccessUnit]) -> None:
        spans = split_nals(data)
        key = has_sps = has_pps = False
        for begin, end in spans:
            nal_type = data[begin] & 0x1F
            if nal_type == _NAL_SPS:
                has_sps = True
                self._on_sps(data[begin:end])
            elif nal_type == _NAL_PPS:
                has_pps = True
                self._pps = data[begin:end]
            elif nal_type == _NAL_IDR:
                key = True
        if key and not (has_sps and has_pps):
            if self._sps is None or self._pps is None:
                return  # a keyframe nobody can decode yet: wait for the headers
            # The headers first, then the unit without its access unit
            # delimiter (which may only come first, and is optional).
            parts = [START_CODE + self._sps, START_CODE + self._pps]
            parts += [START_CODE + data[b:e] for b, e in spans
                      if data[b] & 0x1F != _NAL_AUD]
            data = b"".join(parts)
        if key:
            self._need_key = False
        if self._need_key or self.config is None or self.config.codec is None or not spans:
            return
        out.append(AccessUnit(data, pts, key))

    def _on_sps(self, sps: bytes) -> None:
        if sps == self._sps:
            return
        info = parse_sps(sps)
        if info is None:
            return
        self._sps = sps
        self._set_config(VideoConfig.from_sps(info))

    def _set_config(self, config: VideoConfig) -> None:
        if config != self.config:
            self.config = config
            self.config_changed = True
