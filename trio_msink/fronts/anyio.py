"""anyio adapter: hand an anyio application's connections to a Sink.

An anyio program running on the Trio backend (``anyio.run(main,
backend="trio")``, or any code inside ``trio.run``) can serve its byte
streams from a sink::

    async def handle(client: anyio.abc.SocketStream) -> None:
        async with client:
            await sink.serve(AnyioStream(client))

    listener = await anyio.create_tcp_listener(local_port=9000)
    await listener.serve(handle)

:class:`AnyioSendStream` wraps an ``anyio.abc.ByteSendStream``;
:class:`AnyioStream` wraps a bidirectional ``anyio.abc.ByteStream`` and adds
``receive_some``, so that the sink's reader sees the peer close
(``anyio.EndOfStream`` becomes ``b""``) and removes the client ``CLOSED``.
anyio's exceptions become Trio's (``anyio.BrokenResourceError`` →
``trio.BrokenResourceError`` and so on), which is what the sink classifies.

The Sink is a Trio object: these adapters work on anyio's Trio backend only
(on asyncio there is no Trio nursery to serve the client in).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import anyio.abc
import trio

from ._stream import AdapterSendStream

__all__ = ["AnyioSendStream", "AnyioStream"]

# Bytes asked for per receive when the caller gives no max_bytes: anyio's own
# default for ByteReceiveStream.receive.
_RECEIVE_SIZE = 65536


@contextmanager
def _trio_errors() -> Iterator[None]:
    """Re-raise anyio's resource errors (and OS errors) as Trio's."""
    try:
        yield
    except anyio.ClosedResourceError as exc:
        raise trio.ClosedResourceError(str(exc)) from exc
    except anyio.BusyResourceError as exc:
        raise trio.BusyResourceError(str(exc)) from exc
    except (anyio.BrokenResourceError, OSError) as exc:
        raise trio.BrokenResourceError(str(exc)) from exc


class AnyioSendStream(AdapterSendStream):
    """A ``trio.abc.SendStream`` over an ``anyio.abc.ByteSendStream``.

    ``send_all(data)`` is one ``stream.send(bytes(data))`` (a copy for
    non-``bytes`` data, as anyio's interface takes ``bytes``). Raises
    :exc:`trio.BrokenResourceError` when the peer is gone,
    :exc:`trio.ClosedResourceError` once closed, :exc:`trio.BusyResourceError`
    if two tasks send at once.
    """

    def __init__(self, stream: anyio.abc.ByteSendStream) -> None:
        super().__init__()
        self.anyio_stream = stream

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        with _trio_errors():
            await self.anyio_stream.send(data if isinstance(data, bytes) else bytes(data))

    async def aclose(self) -> None:
        """Close the anyio stream. Idempotent."""
        self._closed = True
        with _trio_errors():
            await self.anyio_stream.aclose()


class AnyioStream(AnyioSendStream, trio.abc.Stream):
    """:class:`AnyioSendStream` over an ``anyio.abc.ByteStream`` that also
    receives: ``receive_some`` returns ``b""`` at end of stream, as Trio's
    streams do (anyio raises ``EndOfStream`` instead)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        super().__init__(stream)
        self._byte_stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` bytes (default 64 KiB); ``b""`` at end of stream."""
        return await self._receive_guarded(max_bytes, self._receive)

    async def _receive(self, max_bytes: int | None) -> bytes:
        while True:
            try:
                with _trio_errors():
                    data = await self._byte_stream.receive(max_bytes or _RECEIVE_SIZE)
            except anyio.EndOfStream:
                return b""
            if data:  # anyio allows empty chunks and says to ignore them
                return data
