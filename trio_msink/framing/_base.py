"""The interface every framer keeps, and the one exception it may raise."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

from .._buffer import Buffer

__all__ = ["DEFAULT_MAX_UNIT_SIZE", "Framer", "FramingError"]

# An access unit larger than this is cut (the rest follows as delta buffers),
# so that a stream without boundaries cannot grow memory without end. A 4K
# intra frame at broadcast bitrates is 1-4 MiB; GStreamer's queue2 and
# ffmpeg's probesize default to similar orders of magnitude (2-5 MB).
DEFAULT_MAX_UNIT_SIZE = 8 * 1024 * 1024


class FramingError(ValueError):
    """Raised by the framing layer for misuse only: a bad argument or option.

    Garbage *input* never raises: framers skip what they cannot parse and
    count it in :attr:`Framer.discarded`.
    """


class Framer(ABC):
    """Turns a byte stream into :class:`~trio_msink.Buffer` objects.

    Pure and synchronous: no I/O, no clock. Feed bytes as they arrive with
    :meth:`feed`, which returns the buffers completed so far; call
    :meth:`flush` at the end of input for what is still held. The output
    does not depend on how the input is cut into chunks.

    :attr:`streamheader` holds the current stream-configuration buffers
    (``header=True``); :attr:`header_changed` says whether the last
    :meth:`feed`/:meth:`flush` call changed them. Check it right after the
    call and give the new headers to :meth:`Sink.set_streamheader` before
    sending the buffers that call returned.
    """

    #: Name of the format, as accepted by :func:`open_framer`.
    format: ClassVar[str] = ""

    def __init__(self) -> None:
        self._streamheader: list[Buffer] = []
        self._header_changed = False
        self._discarded = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Buffer]:
        """Add bytes of the stream; return the buffers completed by them.

        Raises :exc:`FramingError` if ``data`` is not bytes-like.
        """
        chunk = _as_bytes(data, "data")
        self._header_changed = False
        return self._feed(chunk)

    def flush(self) -> list[Buffer]:
        """End of input: return every buffer still held (possibly partial).

        The framer can be fed again afterwards; it starts over as after a
        discontinuity but keeps its streamheader and timestamp counters.
        """
        self._header_changed = False
        return self._flush()

    @property
    def streamheader(self) -> list[Buffer]:
        """The current header buffers (``header=True``); empty if none yet."""
        return list(self._streamheader)

    @property
    def header_changed(self) -> bool:
        """True if the last :meth:`feed` or :meth:`flush` changed :attr:`streamheader`."""
        return self._header_changed

    @property
    def discarded(self) -> int:
        """Bytes of input skipped as unparseable so far (not in any buffer)."""
        return self._discarded

    @property
    @abstractmethod
    def buffered(self) -> int:
        """Bytes held inside the framer, waiting for more input (bounded)."""

    @abstractmethod
    def _feed(self, data: bytes) -> list[Buffer]: ...

    @abstractmethod
    def _flush(self) -> list[Buffer]: ...

    def _set_streamheader(self, headers: list[Buffer]) -> None:
        old = [h.tobytes() for h in self._streamheader]
        if old != [h.tobytes() for h in headers]:
            self._streamheader = headers
            self._header_changed = True


def _as_bytes(data: object, name: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise FramingError(f"{name} must be bytes-like, not {type(data).__name__}")


def check_size(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else :exc:`FramingError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FramingError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise FramingError(f"{name} must be >= {minimum}, not {value}")
    return value


def check_rate(name: str, value: object) -> float | None:
    """``value`` as a positive finite float, or None; else :exc:`FramingError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FramingError(f"{name} must be a number or None, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise FramingError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)
