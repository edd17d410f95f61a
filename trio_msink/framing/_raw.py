"""Raw: fixed-size chunks, for streams the sink need not understand."""

from __future__ import annotations

from .._buffer import Buffer
from ._base import Framer, check_size

__all__ = ["DEFAULT_CHUNK_SIZE", "RawFramer"]

# 7 TS packets: the payload size of MPEG-TS over UDP/RTP (VLC, ffmpeg's
# pkt_size=1316, SMPTE 2022-2), which fits a 1500-byte Ethernet MTU.
DEFAULT_CHUNK_SIZE = 1316


class RawFramer(Framer):
    """Cuts the stream into ``chunk_size``-byte buffers, all keyframes,
    without timestamps or streamheader; :meth:`flush` emits the remainder,
    :meth:`restart` drops it.

    Raises :exc:`FramingError` if ``chunk_size`` is not an int >= 1.
    """

    format = "raw"

    def __init__(self, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__()
        self._chunk_size = check_size("chunk_size", chunk_size, 1)
        self._pending = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held until a chunk is full (less than ``chunk_size``)."""
        return len(self._pending)

    def _feed(self, data: bytes) -> list[Buffer]:
        pending, size = self._pending, self._chunk_size
        pending += data
        whole = len(pending) - len(pending) % size
        out = [Buffer(bytes(pending[i : i + size])) for i in range(0, whole, size)]
        del pending[:whole]
        return [buffer for buffer in out if self._admit(buffer)]

    def _flush(self) -> list[Buffer]:
        out = [Buffer(bytes(self._pending))] if self._pending else []
        self._pending = bytearray()
        return [buffer for buffer in out if self._admit(buffer)]

    def _restart(self) -> None:
        self._pending = bytearray()
