"""Bytes handed to a socket and not yet written: the in-flight account.

Pure bookkeeping (no trio, no socket): a writer offers a socket the unwritten
tail of what is in flight, then the headers and data buffers due, in one
``writev``; :meth:`InFlight.book` is told how many bytes the socket took and
says which buffers that completed and how many of the offered data buffers
were taken (a buffer that got at least one byte is taken: it is being
written, so it is no longer waiting). The caller takes those from the history
and reports the completed ones; everything else stays waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._buffer import Buffer

__all__ = ["Booking", "InFlight"]


@dataclass(slots=True)
class Booking:
    """What one :meth:`InFlight.book` found."""

    #: How many of the offered data buffers the socket took (with the
    #: headers before them, if any): the caller hands them over.
    taken: int = 0
    #: Buffers completely written by this write, in order (headers included).
    completed: list[Buffer] = field(default_factory=list)


class InFlight:
    """Segments handed to the socket but not completely written yet."""

    __slots__ = ("items", "segments")

    def __init__(self) -> None:
        #: ``(buffer, bytes still to write)``, oldest first.
        self.items: list[tuple[Buffer, int]] = []
        #: The unwritten tail of ``items``, as the next ``writev`` offers it.
        self.segments: list[memoryview] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def book(self, headers: Sequence[Buffer], data: Sequence[Buffer], written: int) -> Booking:
        """Book ``written`` bytes of a write that offered the in-flight
        segments, then ``headers`` and ``data``: finish in-flight buffers,
        take the offered ones the socket accepted; a partly written one
        becomes in flight."""
        booking = Booking()
        # 1. what was already in flight
        items = self.items
        while items and written:
            buffer, left = items[0]
            step = min(left, written)
            written -= step
            left -= step
            if left:
                items[0] = (buffer, left)
            else:
                items.pop(0)
                booking.completed.append(buffer)
        self._drop_written(sum(left for _, left in items))
        if items or not written:
            return booking
        # 2. the offered headers and data: take every data buffer that got a
        #    byte or was completely written (zero-length ones); headers go
        #    with the first.
        header_bytes = sum(h.size for h in headers)
        count, pos = 0, 0
        for i, buffer in enumerate(data):
            start = pos if i else 0
            pos += buffer.size + (header_bytes if i == 0 else 0)
            if written > start or written >= pos:
                count += 1
            else:
                break
        booking.taken = count
        if count:
            for buffer in (*headers, *data[:count]):
                step = min(buffer.size, written)
                written -= step
                if step == buffer.size:
                    booking.completed.append(buffer)
                else:
                    items.append((buffer, buffer.size - step))
            self._rebuild()
        return booking

    def _drop_written(self, left: int) -> None:
        """Keep only the last ``left`` bytes of the in-flight segments."""
        segments: list[memoryview] = []
        for segment in reversed(self.segments):
            if left <= 0:
                break
            if segment.nbytes <= left:
                segments.append(segment)
                left -= segment.nbytes
            else:
                segments.append(segment[segment.nbytes - left :])
                left = 0
        segments.reverse()
        self.segments = segments

    def _rebuild(self) -> None:
        """In-flight segments from the in-flight items' unwritten tails."""
        segments: list[memoryview] = []
        for buffer, left in self.items:
            skip = buffer.size - left
            for segment in buffer.segments:
                if skip >= segment.nbytes:
                    skip -= segment.nbytes
                    continue
                segments.append(segment[skip:])
                skip = 0
        self.segments = segments
