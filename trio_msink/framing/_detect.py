"""Format detection from the first bytes, and the framer that uses it."""

from __future__ import annotations

from typing import Any

from .._buffer import Buffer
from ._base import Framer, FramingError, check_size
from ._h264 import H264Framer
from ._mpegts import MpegTsFramer
from ._nal import START_CODE, plausible_h264_nal
from ._psi import PACKET_SIZE, SYNC_BYTE
from ._raw import RawFramer

__all__ = ["DEFAULT_PROBE_SIZE", "FORMATS", "AutoFramer", "detect_format", "open_framer"]

# ffmpeg probes formats on 2 KiB first (AVPROBE_PADDING aside, doubling up
# to its probesize); 4 KiB holds 21 TS packets and the first NALs of any
# H.264 stream, and costs no noticeable latency at any useful bitrate.
DEFAULT_PROBE_SIZE = 4096

#: The formats :func:`open_framer` accepts.
FORMATS = ("auto", "mpegts", "h264", "raw")

_FRAMERS: dict[str, type[MpegTsFramer] | type[H264Framer] | type[RawFramer]] = {
    "mpegts": MpegTsFramer,
    "h264": H264Framer,
    "raw": RawFramer,
}
# Options each format takes (the keyword arguments of its class).
_OPTIONS = {
    "mpegts": frozenset({"max_unit_size"}),
    "h264": frozenset({"fps", "max_unit_size"}),
    "raw": frozenset({"chunk_size"}),
}


def detect_format(
    data: bytes | bytearray, *, final: bool = False, probe_size: int = DEFAULT_PROBE_SIZE
) -> str | None:
    """``"mpegts"``, ``"h264"`` or ``"raw"`` for a stream starting with
    ``data``, or None while more bytes are needed to tell.

    * 0x47 at offsets 0, 188 and 376 → ``"mpegts"``;
    * a start code (00 00 01 or 00 00 00 01) at offset 0 followed by a
      plausible NAL header (slice, IDR, SEI, SPS, PPS, AUD) → ``"h264"``;
    * otherwise, once ``probe_size`` bytes are there (or at the end of
      input, ``final=True``): three sync bytes 188 apart anywhere → mpegts,
      two start codes with plausible NAL headers → h264, else ``"raw"``.

    The answer only depends on the first ``probe_size`` bytes (at least
    377), never on how many beyond the minimum have arrived.
    """
    check_size("probe_size", probe_size, 2 * PACKET_SIZE + 1)
    n = len(data)
    if n >= 4 and data[:3] == START_CODE and plausible_h264_nal(data[3]):
        return "h264"
    if n >= 5 and data[:4] == b"\x00" + START_CODE and plausible_h264_nal(data[4]):
        return "h264"
    span = 2 * PACKET_SIZE
    if n > span and data[0] == data[PACKET_SIZE] == data[span] == SYNC_BYTE:
        return "mpegts"
    if n < probe_size and not final:
        return None
    window = bytes(data[:probe_size])
    for i in range(len(window) - span):
        if window[i] == window[i + PACKET_SIZE] == window[i + span] == SYNC_BYTE:
            return "mpegts"
    nals = 0
    p = window.find(START_CODE)
    while 0 <= p < len(window) - 3:
        nals += plausible_h264_nal(window[p + 3])
        p = window.find(START_CODE, p + 3)
    return "h264" if nals >= 2 else "raw"


class AutoFramer(Framer):
    """Holds up to ``probe_size`` bytes (at least 377) until
    :func:`detect_format` decides, then hands everything to the framer for
    that format.

    ``opts`` are the options of the formats it may pick (``max_unit_size``,
    ``fps``, ``chunk_size``); each is given to the formats that take it.
    All are checked at construction, not only those of the format chosen.
    :meth:`restart` forgets the format and probes the new stream again.

    Raises :exc:`FramingError` for an unknown or invalid option.
    """

    format = "auto"

    def __init__(self, *, probe_size: int = DEFAULT_PROBE_SIZE, **opts: Any) -> None:
        super().__init__()
        # Three TS sync bytes must fit in the window, or a shorter window
        # could decide otherwise than the whole stream.
        self._probe_size = check_size("probe_size", probe_size, 2 * PACKET_SIZE + 1)
        self._opts = _check_options(opts, "auto")
        self._probe = bytearray()
        self._framer: Framer | None = None
        self._previous: Framer | None = None  # the framer before restart()

    @property
    def detected(self) -> str | None:
        """The format chosen, or None while still probing."""
        return self._framer.format if self._framer is not None else None

    @property
    def framer(self) -> Framer | None:
        """The framer the stream was handed to, or None while still probing."""
        return self._framer

    @property
    def buffered(self) -> int:
        """Bytes held for probing, or by the chosen framer."""
        return len(self._probe) + (self._framer.buffered if self._framer else 0)

    @property
    def discarded(self) -> int:
        """Bytes of input skipped by the chosen framers."""
        held = (self._framer, self._previous)
        return self._discarded + sum(f.discarded for f in held if f is not None)

    def _feed(self, data: bytes) -> list[Buffer]:
        if self._framer is None:
            self._probe += data
            name = detect_format(self._probe, probe_size=self._probe_size)
            if name is None:
                return []
            self._framer = self._new_framer(name)
            data, self._probe = bytes(self._probe), bytearray()
        return self._follow(self._framer.feed(data))

    def _flush(self) -> list[Buffer]:
        out: list[Buffer] = []
        if self._framer is None:
            if not self._probe:
                return out
            name = detect_format(self._probe, final=True, probe_size=self._probe_size)
            self._framer = self._new_framer(name or "raw")
            out = self._follow(self._framer.feed(bytes(self._probe)))
            self._probe = bytearray()
        out += self._follow(self._framer.flush())
        return out

    def _restart(self) -> None:
        self._probe = bytearray()
        if self._framer is not None:
            self._framer.restart()  # drops what it holds now, not after probing
            self._previous = self._framer
        self._framer = None

    def _new_framer(self, name: str) -> Framer:
        previous, self._previous = self._previous, None
        if previous is not None and previous.format == name:
            # The same format again: its framer knows the headers before, so
            # that headers equal to them are no change.
            framer = previous
        else:
            if previous is not None:
                self._discarded += previous.discarded
            framer = _make(name, self._opts)
        if self._gate is not None:
            # The framer holds back what comes before the new stream's
            # headers and keyframe, deciding it as each buffer completes.
            framer.restart()
        return framer

    def _follow(self, out: list[Buffer]) -> list[Buffer]:
        """Take over the chosen framer's headers and output."""
        assert self._framer is not None
        if self._framer.header_changed or (self._gate is not None and out):
            # Even unchanged ones: after a restart they are the new stream's.
            self._set_streamheader(self._framer.streamheader)
        return [buffer for buffer in out if self._admit(buffer)]


def open_framer(format: str = "auto", **opts: Any) -> Framer:
    """A new framer for ``format``: ``"auto"``, ``"mpegts"``, ``"h264"`` or ``"raw"``.

    ``opts`` are framing options: ``max_unit_size`` (mpegts, h264), ``fps``
    (h264), ``chunk_size`` (raw), ``probe_size`` (auto). Each format uses
    those that apply to it and ignores the others, so that one set of
    options (say, from a command line) fits every format; all are checked.

    Raises :exc:`FramingError` (a :exc:`ValueError`) for an unknown format,
    or an unknown or invalid option.
    """
    if format == "auto":
        return AutoFramer(**opts)
    if not isinstance(format, str) or format not in _FRAMERS:
        raise FramingError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    probe_size = opts.pop("probe_size", DEFAULT_PROBE_SIZE)
    check_size("probe_size", probe_size, 2 * PACKET_SIZE + 1)
    return _make(format, _check_options(opts, format))


def _check_options(opts: dict[str, Any], format: str) -> dict[str, Any]:
    """``opts`` if every one is an option of some format and valid for it."""
    known = frozenset().union(*_OPTIONS.values())
    unknown = sorted(set(opts) - known)
    if unknown:
        raise FramingError(f"unknown option {unknown[0]!r} for format {format!r}")
    for name in _FRAMERS:
        _make(name, opts)  # each framer validates its own options
    return opts


def _make(name: str, opts: dict[str, Any]) -> Framer:
    return _FRAMERS[name](**{k: v for k, v in opts.items() if k in _OPTIONS[name]})
