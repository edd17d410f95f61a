"""`Buffer`: one unit of the stream, shared by every client without copies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Buffer", "BytesLike", "as_buffer"]

BytesLike = bytes | bytearray | memoryview


def _check_time(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    return float(value)


def _segments(data: object) -> tuple[memoryview, ...]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (_flat(data),)
    if isinstance(data, (str, int)) or not isinstance(data, Sequence):
        raise TypeError(
            "data must be bytes-like or a sequence of bytes-like segments, "
            f"not {type(data).__name__}"
        )
    segments = []
    for i, segment in enumerate(data):
        if not isinstance(segment, (bytes, bytearray, memoryview)):
            raise TypeError(f"data[{i}] must be bytes-like, not {type(segment).__name__}")
        segments.append(_flat(segment))
    return tuple(segments)


def _flat(data: BytesLike) -> memoryview:
    view = memoryview(data)
    if not view.contiguous:
        raise TypeError("data must be C-contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


@dataclass(frozen=True, slots=True, eq=False)
class Buffer:
    """One buffer of the stream.

    ``data`` is a bytes-like object, or a sequence of bytes-like segments that
    are sent back to back as one buffer (no copy is made). ``pts`` and
    ``duration`` are seconds or ``None``. ``delta_unit=True`` marks a buffer
    that is not a sync point; ``keyframe`` is its negation. ``header=True``
    marks stream-configuration data (see :meth:`Sink.set_streamheader`).

    Raises :exc:`TypeError` for wrong types and :exc:`ValueError` for a
    non-finite timestamp or a negative duration.
    """

    #: The payload: bytes-like, or a sequence of bytes-like segments.
    data: BytesLike | Sequence[BytesLike]
    #: Presentation timestamp in seconds, or None.
    pts: float | None = None
    #: Duration in seconds, or None.
    duration: float | None = None
    #: True for a buffer that is not a sync point.
    delta_unit: bool = False
    #: True for stream-configuration data (see :meth:`Sink.set_streamheader`).
    header: bool = False
    #: The payload as flat byte views, sent back to back (no copies).
    segments: tuple[memoryview, ...] = field(init=False, repr=False, compare=False)
    #: Total payload size in bytes (``len(buffer)``).
    size: int = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        data: BytesLike | Sequence[BytesLike],
        *,
        pts: float | None = None,
        duration: float | None = None,
        delta_unit: bool = False,
        header: bool = False,
    ) -> None:
        segments = _segments(data)
        pts_s = _check_time("pts", pts)
        duration_s = _check_time("duration", duration)
        if duration_s is not None and duration_s < 0:
            raise ValueError(f"duration must be >= 0, not {duration!r}")
        if not isinstance(delta_unit, bool):
            raise TypeError(f"delta_unit must be a bool, not {type(delta_unit).__name__}")
        if not isinstance(header, bool):
            raise TypeError(f"header must be a bool, not {type(header).__name__}")
        setter = object.__setattr__
        setter(self, "data", data)
        setter(self, "pts", pts_s)
        setter(self, "duration", duration_s)
        setter(self, "delta_unit", delta_unit)
        setter(self, "header", header)
        setter(self, "segments", segments)
        setter(self, "size", sum(s.nbytes for s in segments))

    @property
    def keyframe(self) -> bool:
        """True when this buffer is a sync point (``not delta_unit``)."""
        return not self.delta_unit

    def __len__(self) -> int:
        return self.size

    def tobytes(self) -> bytes:
        """The payload as one ``bytes`` object (a copy; for tests and small data)."""
        return b"".join(self.segments)

    def __repr__(self) -> str:
        flags = "".join(
            [" delta" if self.delta_unit else " key", " header" if self.header else ""]
        )
        return f"<Buffer {self.size} bytes pts={self.pts}{flags}>"


def as_buffer(value: object, name: str = "buffer") -> Buffer:
    """A Buffer as is; plain bytes-like as a keyframe with no timestamp."""
    if isinstance(value, Buffer):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Buffer(value)
    raise TypeError(f"{name} must be a Buffer or bytes-like, not {type(value).__name__}")
