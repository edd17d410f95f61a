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

    :meth:`restart` says that the input starts over from a new upstream (a
    reconnect, a new publisher, another origin): the framer drops what it
    holds and emits nothing until the new stream's headers and a keyframe.
    """

    #: Name of the format, as accepted by :func:`open_framer`.
    format: ClassVar[str] = ""

    def __init__(self) -> None:
        self._streamheader: list[Buffer] = []
        self._header_changed = False
        self._discarded = 0
        # After restart(): the headers before it (as bytes), while nothing is
        # emitted until the new stream's headers and a keyframe are there;
        # None when output flows.
        self._gate: list[bytes] | None = None
        # Headers the new stream announced while the gate is closed: made
        # current only when the gate opens, so that streamheader never goes
        # through a state of no headers or of headers without a keyframe.
        self._gate_headers: list[Buffer] | None = None

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
        After :meth:`restart`, what is held before the new stream's
        headers and keyframe is still dropped.
        """
        self._header_changed = False
        return self._flush()

    def restart(self) -> None:
        """The input starts over from a new upstream (a reconnect, a new
        publisher, another origin).

        The framer drops partial input and any half-built unit, and starts
        over as on a new stream: the timestamps of the new upstream are
        unrelated to those before (MPEG-TS unwrapping, the H.264 picture
        count start again; docs/framing.md, "Timestamps", says how the
        server keeps the Sink's pacing right across it), and ``auto``
        probes the format again.

        Nothing is emitted until the new stream's headers (MPEG-TS: PAT and
        PMT; H.264: SPS and PPS; none for raw) and then a keyframe have
        arrived, so the first buffer emitted after a restart is a keyframe.
        :attr:`streamheader` keeps the old headers until then; on the call
        that returns that keyframe it holds the new ones, and
        :attr:`header_changed` is True if they differ from the headers
        before the restart. Restarting again before that compares with the
        headers before the first restart.
        """
        self._header_changed = False
        if self._gate is None:
            self._gate = [h.tobytes() for h in self._streamheader]
        self._gate_headers = None
        self._restart()

    @property
    def restarting(self) -> bool:
        """True from :meth:`restart` until the first buffer of the new stream."""
        return self._gate is not None

    # -- read-only properties (alike in shape, as all such are) ---------------
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

    @abstractmethod
    def _restart(self) -> None:
        """Drop everything held and every piece of parsing and timestamp
        state, headers included, as for a new stream."""

    def _has_headers(self) -> bool:
        """Whether the stream's headers, as far as a decoder needs them, are known."""
        return True

    def _set_streamheader(self, headers: list[Buffer]) -> None:
        if self._gate is not None:
            self._gate_headers = headers
            return
        old = [h.tobytes() for h in self._streamheader]
        if old != [h.tobytes() for h in headers]:
            self._streamheader = headers
            self._header_changed = True

    def _admit(self, buffer: Buffer) -> bool:
        """Whether ``buffer``, being completed now, is emitted.

        Always, but after :meth:`restart`: not before the first keyframe
        completed once the new stream's headers are known (the gate opens
        there). Framers call it as they complete each buffer, so that
        headers arriving after a keyframe do not admit that keyframe.
        """
        if self._gate is None:
            return True
        if buffer.keyframe and not buffer.header and self._has_headers():
            self._open_gate()
            return True
        return False

    def _open_gate(self) -> None:
        before, self._gate = self._gate, None
        headers, self._gate_headers = self._gate_headers, None
        if headers is None:
            headers = self._streamheader  # none announced: raw, or unchanged
        self._streamheader = headers
        self._header_changed = [h.tobytes() for h in headers] != before


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
