"""Writer tasks: hand a client's waiting buffers to its stream.

Two strategies, chosen per stream:

* :func:`write_socket` for a plain ``trio.SocketStream``: one non-blocking
  ``writev`` carries as many waiting buffers as the socket accepts (up to
  ``IOV_MAX`` segments); buffers it did not take stay waiting, so a stalled
  client's backlog shows as lag and the limits see it.
* :func:`write_stream` for any other ``trio.abc.SendStream`` (TLS, pipes,
  WebSocket adapters, test doubles): one buffer at a time, one ``send_all``
  per buffer (a WebSocket adapter turns each into one message).

Both report progress to a :class:`Progress` (the Sink's client record), and
both stop by returning once the client's flush is done.
"""

from __future__ import annotations

import os
from typing import Protocol

import trio

from ._buffer import Buffer
from ._channel import ClientChannel
from ._history import History

__all__ = ["InFlight", "Progress", "account", "batch", "write_socket", "write_stream"]

# Linux caps one writev at IOV_MAX (1024) segments; 4 MiB per call keeps
# a burst to one client from monopolising the loop (a 100 MB history would
# otherwise be offered in one call).
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
_MAX_BYTES_PER_CALL = 4 * 1024 * 1024


class Progress(Protocol):
    """What a writer tells the sink about its client."""

    channel: ClientChannel
    writing: bool
    inflight: InFlight

    def progressed(self, nbytes: int) -> None: ...
    def dispatched(self, buffer: Buffer) -> None: ...
    def stall_deadline(self) -> float: ...
    def stalled(self) -> None: ...
    def flushed(self) -> None: ...
    def became_busy(self) -> None: ...
    async def park(self) -> None: ...
    def unpark(self) -> None: ...

    @property
    def fd(self) -> int: ...


async def _wait_for_data(client: Progress) -> bool:
    """Wait until the client has data; False when its flush is complete."""
    channel = client.channel
    if channel.flushed():
        client.flushed()
        return False
    await channel.wait()
    client.became_busy()
    return True


async def write_stream(client: Progress, stream: trio.abc.SendStream) -> None:
    """Write one buffer at a time with ``stream.send_all``."""
    channel = client.channel
    while True:
        items = channel.take(1)
        if not items:
            if not await _wait_for_data(client):
                return
            continue
        client.writing = True
        for item in items:
            # One send_all per buffer, so that message-based adapters (a
            # WebSocket) see whole buffers; only a multi-segment buffer is
            # joined, since a generic stream takes one bytes-like at a time.
            if item.size:
                data = item.segments[0] if len(item.segments) == 1 else item.tobytes()
                with trio.move_on_at(client.stall_deadline()) as scope:
                    await stream.send_all(data)
                if scope.cancelled_caught:
                    client.stalled()
                    return
                client.progressed(item.size)
            client.dispatched(item)
        client.writing = False


class InFlight:
    """Segments handed to the socket but not completely written yet."""

    def __init__(self) -> None:
        self.items: list[tuple[Buffer, int]] = []  # (buffer, bytes still to write)
        self.segments: list[memoryview] = []

    def __bool__(self) -> bool:
        return bool(self.segments)


def _segments_of(items: list[Buffer], room: int, budget: int) -> list[memoryview]:
    out: list[memoryview] = []
    for item in items:
        for segment in item.segments:
            if segment.nbytes and len(out) < room and budget > 0:
                out.append(segment)
                budget -= segment.nbytes
    return out


async def write_socket(client: Progress, stream: trio.SocketStream) -> None:
    """Write with non-blocking ``writev`` calls of many buffers each.

    When the client is caught up the task parks: while parked, the sink
    writes new buffers to the socket directly from ``send`` (see
    :meth:`Sink._write_parked`), and wakes the task only when the socket
    does not take everything at once.
    """
    channel = client.channel
    fd = stream.socket.fileno()
    inflight = client.inflight
    while True:
        headers: tuple[Buffer, ...] = ()
        data: list[Buffer] = []
        room = _IOV_MAX - len(inflight.segments)
        if room > 0:
            headers, data = channel.peek(room)
        if not inflight and not data:
            if channel.flushed():
                client.flushed()
                return
            await client.park()
            continue
        offered = [*headers, *data]
        iov = inflight.segments + _segments_of(offered, room, _MAX_BYTES_PER_CALL)
        written = 0
        if iov:
            try:
                written = os.writev(fd, iov)
            except BlockingIOError:
                written = 0
        if written:
            client.progressed(written)
        remaining = account(client, inflight, headers, data, written)
        client.writing = remaining
        if remaining or (not written and iov):
            with trio.move_on_at(client.stall_deadline()) as scope:
                await trio.lowlevel.wait_writable(fd)
            if scope.cancelled_caught:
                client.stalled()
                return
        elif not iov:
            # Only zero-length buffers were waiting: they are written by taking them.
            for item in channel.take(len(data)):
                client.dispatched(item)
        else:
            await trio.lowlevel.checkpoint()


def batch(channel: ClientChannel, start: int, end: int) -> tuple[list[memoryview], int, bool]:
    """The segments of waiting buffers ``start .. end - 1`` for one ``writev``:
    ``(segments, total bytes, complete)``; ``complete`` is False when they do
    not all fit in one call."""
    log = channel.history.log
    segments: list[memoryview] = []
    total = 0
    for seq in range(start, end):
        for segment in log[seq].segments:
            if segment.nbytes:
                segments.append(segment)
                total += segment.nbytes
        if len(segments) > _IOV_MAX or total > _MAX_BYTES_PER_CALL:
            return segments, total, False
    return segments, total, True


def account(
    client: Progress,
    inflight: InFlight,
    headers: tuple[Buffer, ...],
    data: list[Buffer],
    written: int,
) -> bool:
    """Book ``written`` bytes: finish in-flight buffers, take the offered ones
    the socket accepted (a partly written one becomes in-flight). Returns True
    when something is still in flight."""
    # 1. what was already in flight
    while inflight.items and written:
        buffer, left = inflight.items[0]
        step = min(left, written)
        written -= step
        left -= step
        if left:
            inflight.items[0] = (buffer, left)
        else:
            inflight.items.pop(0)
            client.dispatched(buffer)
    _drop_written(inflight, sum(left for _, left in inflight.items))
    if inflight.items or not written:
        return bool(inflight.items)
    # 2. the offered headers and data: take every data buffer that got a byte
    #    or was completely written (zero-length ones); headers go with the first.
    count, pos = 0, 0
    for i, buffer in enumerate(data):
        start = pos if i else 0
        pos += buffer.size + (sum(h.size for h in headers) if i == 0 else 0)
        if written > start or written >= pos:
            count += 1
        else:
            break
    for buffer in client.channel.take(count):
        step = min(buffer.size, written)
        written -= step
        if step == buffer.size:
            client.dispatched(buffer)
        else:
            inflight.items.append((buffer, buffer.size - step))
    _rebuild(inflight)
    return bool(inflight.items)


def _drop_written(inflight: InFlight, left: int) -> None:
    """Keep only the last ``left`` bytes of the in-flight segments."""
    segments: list[memoryview] = []
    for segment in reversed(inflight.segments):
        if left <= 0:
            break
        if segment.nbytes <= left:
            segments.append(segment)
            left -= segment.nbytes
        else:
            segments.append(segment[segment.nbytes - left :])
            left = 0
    segments.reverse()
    inflight.segments = segments


def _rebuild(inflight: InFlight) -> None:
    """In-flight segments from the in-flight items' unwritten tails."""
    segments: list[memoryview] = []
    for buffer, left in inflight.items:
        skip = buffer.size - left
        for segment in buffer.segments:
            if skip >= segment.nbytes:
                skip -= segment.nbytes
                continue
            segments.append(segment[skip:])
            skip = 0
    inflight.segments = segments



def write_parked(clients: list[Progress], history: History, *, dispatched: bool) -> None:
    """Write what just arrived to every parked socket client, from ``send``.

    Clients at the same position share one list of segments. A client whose
    socket takes everything stays parked; any other case (a partial write,
    headers due, a flush, a backlog larger than one call) wakes its writer
    task, which carries on from there.
    """
    end = history.log.next
    version = history.headers_version
    batches: dict[int, tuple[list[memoryview], int, bool]] = {}
    for client in clients:
        cursor = client.channel.cursor
        start = cursor.next
        if start is None or start >= end:
            continue
        if cursor.headers_version != version or cursor.flush_end is not None:
            client.unpark()
            continue
        found = batches.get(start)
        if found is None:
            found = batches[start] = batch(client.channel, start, end)
        segments, total, complete = found
        if not complete:
            client.unpark()
            continue
        try:
            written = os.writev(client.fd, segments) if segments else 0
        except BlockingIOError:
            written = 0
        except OSError:
            client.unpark()  # the writer meets the error again and reports it
            continue
        if written:
            client.progressed(written)
        if written == total:
            if dispatched:
                for item in client.channel.take(end - start):
                    client.dispatched(item)
            else:
                history.advance(cursor, end)
            continue
        data = [history.log[seq] for seq in range(start, end)]
        client.writing = account(client, client.inflight, (), data, written)
        client.unpark()
