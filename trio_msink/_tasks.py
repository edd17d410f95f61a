"""A client's tasks: the writer that hands its waiting buffers to its stream,
and the reader that notices when the peer closes.

:func:`run_client` runs both inside the client's cancel scope (``remove``
cancels it) and turns what they raise into a removal: ``CLOSED`` for a
broken or closed stream, ``ERROR`` for anything else; nothing escapes.
A plain socket is read by the sink's :class:`~trio_msink._readers.ReadGroup`
instead, so that a socket client costs one task, not three.

Two writing strategies, chosen per stream:

* :func:`write_socket` for a plain ``trio.SocketStream``: one non-blocking
  ``writev`` carries as many waiting buffers as the socket accepts (up to
  ``IOV_MAX`` segments); buffers it did not take stay waiting, so a stalled
  client's backlog shows as lag and the limits see it. Caught up, the task
  parks and the direct-write path (:mod:`trio_msink._direct`) writes to the
  socket from ``send``.
* :func:`write_stream` for any other ``trio.abc.SendStream`` (TLS, pipes,
  WebSocket adapters, test doubles): one buffer at a time, one ``send_all``
  per buffer (a WebSocket adapter turns each into one message).

Both report progress to the :class:`~trio_msink._client.Client`, and both
return once the client's remove-flush has written everything (having
removed the client).
"""

from __future__ import annotations

import logging
import os
import socket
from functools import partial
from typing import TypeGuard

import trio

from ._buffer import Buffer
from ._client import Client
from ._direct import IOV_MAX, MAX_BYTES_PER_WRITE, DirectWriter
from ._enums import ClientStatus
from ._fanout import Fanout
from ._framed import FramedSocketStream, original, write_message

__all__ = ["run_client", "write_socket", "write_stream"]

logger = logging.getLogger("trio_msink")


async def run_client(client: Client, fanout: Fanout, direct: DirectWriter,
                     read: bool) -> None:
    """Serve ``client`` until it is removed: its writer, and with ``read``
    its reader too (a readable stream that no read group reads)."""
    try:
        if client.removed:
            return
        if not read and _plain_socket(client.stream):
            # No cancel scope of its own (two sets per client in Trio):
            # write_socket stops at its next step once the client is removed,
            # and removal cancels the one wait that may block (wait_scope).
            await _write(client, fanout, direct)
            return
        scope = client.scope = trio.CancelScope()
        with scope:
            if not read:
                await _write(client, fanout, direct)
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read, client, client.stream)
                await _write(client, fanout, direct)
                nursery.cancel_scope.cancel()
    finally:
        client.writing = False
        client.finished.set()


async def _write(client: Client, fanout: Fanout, direct: DirectWriter) -> None:
    stream = client.stream
    try:
        if _plain_socket(stream):
            await write_socket(client, stream, fanout, direct)
        elif isinstance(stream, FramedSocketStream):
            with stream._served(partial(direct.unpark, client), client.inflight):
                await write_socket(client, stream.socket_stream, fanout, direct, stream)
        else:
            await write_stream(client, stream, fanout)
    except (trio.BrokenResourceError, trio.ClosedResourceError, BrokenPipeError,
            ConnectionResetError):
        client.remove(ClientStatus.CLOSED)
    except Exception:
        logger.debug("writing to %r failed", stream, exc_info=True)
        client.remove(ClientStatus.ERROR)


def _plain_socket(stream: trio.abc.SendStream) -> TypeGuard[trio.SocketStream]:
    return type(stream) is trio.SocketStream and stream.socket.type == socket.SOCK_STREAM


async def _writable(client: Client, fd: int) -> bool:
    """Wait until ``fd`` is writable; False once the client is removed, by
    ``remove`` meanwhile or (here) ``SLOW`` after ``timeout`` without progress."""
    if client.removed:
        return False
    with trio.CancelScope(deadline=client.stall_deadline()) as scope:
        client.wait_scope = scope
        try:
            await trio.lowlevel.wait_writable(fd)
        finally:
            client.wait_scope = None
    if client.removed:
        return False
    if scope.cancelled_caught:
        client.remove_slow()
        return False
    return True


async def _read(client: Client, stream: trio.abc.SendStream) -> None:
    """Read until EOF (``CLOSED``); report the bytes with ``send_messages``."""
    assert isinstance(stream, trio.abc.ReceiveStream)
    while True:
        try:
            data = await stream.receive_some()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            client.remove(ClientStatus.CLOSED)
            return
        except Exception:
            logger.debug("reading from %r failed", stream, exc_info=True)
            client.remove(ClientStatus.ERROR)
            return
        if not data:
            client.remove(ClientStatus.CLOSED)
            return
        client.received(bytes(data))


async def _wait_for_data(client: Client, fanout: Fanout) -> bool:
    """Wait until the client has data; False once its remove-flush is done
    (and the client removed)."""
    if fanout.history.flushed(client.cursor):
        client.remove_flushed()
        return False
    await fanout.wait(client.cursor)
    client.became_busy()
    return True


async def write_stream(client: Client, stream: trio.abc.SendStream, fanout: Fanout) -> None:
    """Write one buffer at a time with ``stream.send_all``."""
    history, cursor = fanout.history, client.cursor
    while True:
        items = history.take(cursor, 1)
        if not items:
            if not await _wait_for_data(client, fanout):
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
                    client.remove_slow()
                    return
                client.progressed(item.size)
            client.dispatched(item)
        client.writing = False


def _segments_of(items: list[Buffer], room: int, budget: int) -> list[memoryview]:
    out: list[memoryview] = []
    for item in items:
        for segment in item.segments:
            if segment.nbytes and len(out) < room and budget > 0:
                out.append(segment)
                budget -= segment.nbytes
    return out


async def write_socket(client: Client, stream: trio.SocketStream, fanout: Fanout,
                       direct: DirectWriter, framed: FramedSocketStream | None = None) -> None:
    """Write with non-blocking ``writev`` calls of many buffers each.

    When the client is caught up the task parks in ``direct``, which writes
    new buffers to the socket from ``send`` and wakes the task only when the
    socket does not take everything at once (or the client needs more than
    a plain write: headers, a remove-flush).

    For a ``framed`` client each buffer goes out behind its header, and a
    message from ``framed.send_between`` is written between two whole
    buffers: once one is waiting, nothing new is offered until what is in
    flight is written.
    """
    history, cursor = fanout.history, client.cursor
    fd = client.fd = stream.socket.fileno()
    inflight = client.inflight
    while not client.removed:
        headers: tuple[Buffer, ...] = ()
        data: list[Buffer] = []
        room = IOV_MAX - len(inflight.segments)
        if framed is not None and framed._message() is not None:
            if not inflight:
                if not await write_message(framed, client):
                    client.remove_slow()
                    return
                continue
            room = 0
        if room > 0 and framed is not None:
            # Two segments a buffer (its header, its payload): no more are offered.
            headers, data = history.peek(cursor, max(1, room // 2))
            framing = framed.framing
            headers = tuple(framing.framed(item) for item in headers)
            data = [framing.framed(item) for item in data]
        elif room > 0:
            headers, data = history.peek(cursor, room)
        if not inflight and not data:
            if history.flushed(cursor):
                client.remove_flushed()
                return
            await direct.park(client)
            continue
        offered = [*headers, *data]
        iov = inflight.segments + _segments_of(offered, room, MAX_BYTES_PER_WRITE)
        written = 0
        if iov:
            try:
                written = os.writev(fd, iov)
            except BlockingIOError:
                written = 0
        if written:
            client.progressed(written)
        booking = inflight.book(headers, data, written)
        history.take(cursor, booking.taken)
        for item in booking.completed:
            client.dispatched(original(item))
        remaining = client.writing = bool(inflight)
        if remaining or (not written and iov):
            if not await _writable(client, fd):
                return
        elif not iov:
            # Only zero-length buffers were waiting: they are written by taking them.
            for item in history.take(cursor, len(data)):
                client.dispatched(item)
        else:
            await trio.lowlevel.checkpoint()
