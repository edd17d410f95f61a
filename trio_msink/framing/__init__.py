"""Framing: turn a byte stream into :class:`~trio_msink.Buffer` objects.

Pure and synchronous, like h11's state machines: bytes go in with
:meth:`Framer.feed`, finished buffers come out with their keyframe flags,
timestamps and the stream's headers. No trio, no I/O. See ``docs/framing.md``.

::

    framer = open_framer("auto")
    for buffer in framer.feed(chunk):
        ...
    if framer.header_changed:
        sink.set_streamheader(framer.streamheader)
"""

from __future__ import annotations

from ._base import DEFAULT_MAX_UNIT_SIZE, Framer, FramingError
from ._detect import DEFAULT_PROBE_SIZE, FORMATS, AutoFramer, detect_format, open_framer
from ._h264 import H264Framer
from ._mpegts import MpegTsFramer
from ._raw import DEFAULT_CHUNK_SIZE, RawFramer

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_UNIT_SIZE",
    "DEFAULT_PROBE_SIZE",
    "FORMATS",
    "AutoFramer",
    "Framer",
    "FramingError",
    "H264Framer",
    "MpegTsFramer",
    "RawFramer",
    "detect_format",
    "open_framer",
]
