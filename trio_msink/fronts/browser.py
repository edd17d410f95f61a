"""The browser viewer's video: H.264 access units, one WebSocket message each.

A browser decodes H.264 with WebCodecs, one access unit per
``EncodedVideoChunk``. :class:`BrowserVideo` turns every buffer of the
served stream into at most one such message, **once** (not once per
viewer), and sends it to a :class:`~trio_msink.Sink` of its own whose
clients are the browser viewers; that sink's limits, stats and removal are
the same machinery as every other client's. Its streamheader is the config
message, so every viewer gets the decoder configuration first. Serve it with
a :class:`~trio_msink.fronts.WebSocketFront` on its own path::

    async with BrowserVideo("mpegts") as video:
        viewers = WebSocketFront(video.sink, path="/video")
        front = WebSocketFront(sink, routes={"/video": viewers})
        ...
        video.set_streamheader(framer.streamheader)  # beside sink's
        await video.send(buffer)  # after sink.send(buffer)

Wire format of a message (big-endian): a 24-byte header, then the payload.

======  =====  ==============================================================
offset  size   field
======  =====  ==============================================================
0       4      magic ``b"TMSV"``
4       1      version (1)
5       1      kind: 0 = an access unit (Annex B), 1 = config (UTF-8 JSON)
6       1      flags: bit 0 = keyframe, bit 1 = ``pts`` is set
7       1      reserved (0)
8       8      ``pts``: presentation time in microseconds (signed)
16      8      server time the message was made: milliseconds since the
               Unix epoch (IEEE 754 double)
======  =====  ==============================================================

The config JSON: ``codec`` (``"avc1.PPCCLL"``, or null when the page cannot
decode the stream, with ``reason``), ``width``, ``height``, ``frame_rate``.
See ``docs/fronts.md`` ("The browser viewer").
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import trio

from .. import Buffer, ClientStatus, Format, RecoverPolicy, Sink, SyncMethod
from ..framing._access_units import AccessUnit, AccessUnitConverter, VideoConfig

__all__ = [
    "DEFAULT_HARD_LIMIT",
    "DEFAULT_SOFT_LIMIT",
    "KIND_CONFIG",
    "KIND_UNIT",
    "MAGIC",
    "BrowserVideo",
    "encode_message",
]

MAGIC = b"TMSV"
VERSION = 1
KIND_UNIT = 0
KIND_CONFIG = 1
FLAG_KEY = 0x01
FLAG_PTS = 0x02
_HEADER = struct.Struct(">4sBBBxqd")

# Seconds of video a viewer may fall behind before it jumps to the newest
# keyframe (the soft limit, RESYNC_KEYFRAME) and before it is removed (the
# hard limit, SLOW). Half a second is about what a person notices as
# "behind live" at the latency this viewer aims for; ten seconds bounds the
# memory a stalled tab can hold (history is kept for the slowest viewer).
DEFAULT_SOFT_LIMIT = 0.5
DEFAULT_HARD_LIMIT = 10.0
# For units without PTS, where a limit in time cannot see the lag: a
# backstop in buffers (about 10 s at 60 frames a second).
_BUFFERS_MAX = 600
# Seconds over which the input bitrate is measured.
_RATE_WINDOW = 2.0


def encode_message(kind: int, payload: bytes, *, key: bool = False, pts: float | None = None,
                   sent: float) -> bytes:
    """One message: the header (see the module docs), then ``payload``.

    ``pts`` is seconds (None: not set); ``sent`` is seconds since the epoch.
    """
    flags = (FLAG_KEY if key else 0) | (FLAG_PTS if pts is not None else 0)
    micros = round(pts * 1e6) if pts is not None else 0
    return _HEADER.pack(MAGIC, VERSION, kind, flags, micros, sent * 1000.0) + payload


def _config_json(config: VideoConfig, format: str) -> dict[str, Any]:
    return {"codec": config.codec, "width": config.width, "height": config.height,
            "frame_rate": config.frame_rate, "reason": config.reason, "format": format}


class BrowserVideo:
    """The browser viewers' sink and what feeds it (see the module docs).

    ``format`` is the served stream's framing: ``"mpegts"`` or ``"h264"``
    give video; ``"auto"`` waits for :meth:`use_format`; any other
    (``"raw"``) gives browser viewers a config that says the page cannot
    decode it. ``soft_limit`` and ``hard_limit`` are
    seconds of lag (the sink's ``units_soft_max``/``units_max`` in TIME);
    ``clock`` gives the server time stamped in each message (seconds since
    the epoch); ``on_client_added`` and ``on_client_removed`` are given to
    the sink. Use it as ``async with``: it owns its :attr:`sink`. Raises
    :exc:`ValueError` when ``soft_limit`` is not below ``hard_limit`` or
    either is not positive.
    """

    def __init__(self, format: str = "mpegts", *, soft_limit: float = DEFAULT_SOFT_LIMIT,
                 hard_limit: float = DEFAULT_HARD_LIMIT,
                 clock: Callable[[], float] = time.time,
                 on_client_added: Callable[[trio.abc.SendStream], object] | None = None,
                 on_client_removed: Callable[[trio.abc.SendStream, ClientStatus], object]
                 | None = None) -> None:
        if not 0 < soft_limit < hard_limit:
            raise ValueError("soft_limit and hard_limit: expected 0 < soft_limit < hard_limit "
                             f"seconds, got {soft_limit!r} and {hard_limit!r}")
        self.clock = clock
        self.soft_limit = float(soft_limit)
        self.hard_limit = float(hard_limit)
        self.sink = Sink(
            sync=False,  # paced already: the buffers come as they are served
            sync_method=SyncMethod.LATEST_KEYFRAME,
            recover_policy=RecoverPolicy.RESYNC_KEYFRAME,
            unit_format=Format.TIME,
            units_soft_max=self.soft_limit,
            units_max=self.hard_limit,
            buffers_max=_BUFFERS_MAX,
            timeout=self.hard_limit,
            linger=0,
            on_client_added=on_client_added,
            on_client_removed=on_client_removed,
        )
        self.format = ""
        self.config: VideoConfig | None = None
        self._converter: AccessUnitConverter | None = None
        self.use_format(format)
        self._units = 0
        self._keyframe_pts: float | None = None
        self._keyframe_interval: float | None = None
        self._arrivals: deque[tuple[float, int]] = deque()

    def use_format(self, format: str) -> None:
        """The served stream's framing is (now) ``format`` (``--format auto``
        once detected); a change starts the conversion over."""
        if format == self.format:
            return
        self.format = format
        if format in ("mpegts", "h264"):
            self._converter = AccessUnitConverter(format)
        else:
            self._converter = None
            if format != "auto":
                self._set_config(VideoConfig(
                    None, reason=f"the stream is {format}, not video the page can decode"))

    def restart(self) -> None:
        """A new upstream: drop the unit being collected, start at its next
        keyframe (the framer restarts the same way)."""
        if self._converter is not None:
            self._converter.restart()

    async def __aenter__(self) -> BrowserVideo:
        await self.sink.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        return await self.sink.__aexit__(exc_type, exc, tb)

    def set_streamheader(self, buffers: Iterable[Buffer]) -> None:
        """Read the served stream's headers (MPEG-TS: the PAT and PMT)."""
        for buffer in buffers:
            self._convert(buffer)

    async def send(self, buffer: Buffer) -> None:
        """Turn one served buffer into messages for the browser viewers.

        Never waits for a viewer (the sink's ``sync`` is off); raises
        :exc:`trio.ClosedResourceError` once the sink is closed.
        """
        self._arrivals.append((self.clock(), len(buffer)))
        # The sink measures lag by the served buffer's time, which never goes
        # back (a new upstream may restart the stream's own clock anywhere);
        # the message carries the stream's own presentation time.
        pts = buffer.pts
        for unit in self._convert(buffer):
            if unit.key and pts is not None:
                if self._keyframe_pts is not None and pts > self._keyframe_pts:
                    self._keyframe_interval = pts - self._keyframe_pts
                self._keyframe_pts = pts
            message = encode_message(KIND_UNIT, unit.data, key=unit.key, pts=unit.pts,
                                     sent=self.clock())
            self._units += 1
            await self.sink.send(Buffer(message, pts=pts, delta_unit=not unit.key))

    def _convert(self, buffer: Buffer) -> list[AccessUnit]:
        if self._converter is None:
            return []
        units = self._converter.convert(buffer.tobytes(), buffer.pts)
        if self._converter.config_changed and self._converter.config is not None:
            self._set_config(self._converter.config)
        return units

    def _set_config(self, config: VideoConfig) -> None:
        self.config = config
        payload = json.dumps(_config_json(config, self.format)).encode()
        self.sink.set_streamheader(
            [Buffer(encode_message(KIND_CONFIG, payload, sent=self.clock()), header=True)])

    def bitrate_in(self) -> float:
        """Bits per second of the served stream over the last two seconds."""
        now = self.clock()
        arrivals = self._arrivals
        while arrivals and arrivals[0][0] < now - _RATE_WINDOW:
            arrivals.popleft()
        return sum(size for _, size in arrivals) * 8 / _RATE_WINDOW

    def limits(self) -> dict[str, float | None]:
        """The viewers' limits in buffers (the page's lag bars): seconds
        times the frame rate, or None when the rate is unknown."""
        rate = self.config.frame_rate if self.config is not None else None
        if not rate:
            return {"soft": None, "hard": float(_BUFFERS_MAX)}
        return {"soft": math.ceil(self.soft_limit * rate),
                "hard": min(math.ceil(self.hard_limit * rate), _BUFFERS_MAX)}

    def status(self) -> dict[str, Any]:
        """The ``"video"`` object of ``/stats``: what the stream is and how
        the browser viewers are served. Keys: ``format``, ``codec`` (null
        when the page cannot decode it), ``reason``, ``width``, ``height``,
        ``frame_rate``, ``keyframe_interval`` (seconds, measured), ``bitrate_in``
        (bit/s), ``units`` (access units made so far), ``viewers``,
        ``soft_limit``/``hard_limit`` (seconds of lag)."""
        config = self.config or VideoConfig(None, reason="no video seen yet")
        doc = _config_json(config, self.format)
        doc.update(keyframe_interval=self._keyframe_interval, bitrate_in=self.bitrate_in(),
                   units=self._units, viewers=self.sink.num_handles,
                   soft_limit=self.soft_limit, hard_limit=self.hard_limit)
        return doc
