"""The two HTTP/1.1 steps (h11) that the HTTP front and the command's push
ingest take alike: read a request head, and close after a refusal without
the refusal being lost to a reset."""

from __future__ import annotations

import h11
import trio

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "RECEIVE_SIZE", "lingering_close", "read_request"]

#: Bytes asked of the peer per read of a request head (one small head).
RECEIVE_SIZE = 4096
#: A lingering close's bounds: Apache's is 2 s per read, 30 s at most; ours
#: is 2 s and 1 MiB in total, so a peer cannot keep a refused connection.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


async def read_request(conn: h11.Connection, stream: trio.abc.ReceiveStream,
                       receive_size: int = RECEIVE_SIZE) -> h11.Request | None:
    """Feed ``conn`` until it yields a request head; ``None`` if the peer
    closed first. Raises :exc:`h11.RemoteProtocolError` for a bad request."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(receive_size)))
        elif isinstance(event, h11.Request):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:  # nothing else can come before a request head
            raise h11.RemoteProtocolError(f"unexpected {event!r}", error_status_hint=400)


async def lingering_close(stream: trio.abc.Stream, *, seconds: float = LINGER_SECONDS,
                          max_bytes: int = LINGER_BYTES,
                          receive_size: int = RECEIVE_SIZE) -> None:
    """Half-close, then read and discard what the peer still sends, for at
    most ``seconds`` and ``max_bytes`` in total.

    After an error response the peer may still be sending (a request body, an
    oversized head); closing with unread data makes the kernel send a reset,
    which can destroy the response before the peer reads it (a "lingering
    close", in Apache's words). A stream that cannot half-close is left as it
    is. Raises what the stream raises (:exc:`trio.BrokenResourceError`, ...).
    """
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return
    with trio.move_on_after(seconds):
        await stream.send_eof()
        left = max_bytes
        while left > 0 and (data := await stream.receive_some(receive_size)):
            left -= len(data)
