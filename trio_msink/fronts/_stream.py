"""The common part of the fronts' adapters to ``trio.abc.SendStream``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

__all__ = ["AdapterSendStream"]


class AdapterSendStream(trio.abc.SendStream):
    """A ``trio.abc.SendStream`` over another API (a WebSocket, an anyio stream).

    Keeps the stream contract the sink relies on: one sender at a time
    (:exc:`trio.BusyResourceError` otherwise), :exc:`trio.ClosedResourceError`
    after :meth:`aclose`, and an empty ``send_all`` sends nothing. Subclasses
    implement :meth:`_send` (one ``send_all``) and ``aclose``.
    """

    _closed_message = "this stream was closed"

    def __init__(self) -> None:
        self._closed = False
        self._sending = False
        self._receiving = False

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(self._closed_message)

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data`` (see the subclass for how)."""
        self._check_open()
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if not len(data):
                await trio.lowlevel.checkpoint()
                return
            await self._send(data)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Return at once (after a checkpoint): the wrapped API offers no
        writability wait, and the stream contract allows a spurious wake-up
        ("might not block"); a writer that then blocks in ``send_all`` is
        what the sink's ``timeout`` watches."""
        self._check_open()
        await trio.lowlevel.checkpoint()

    async def _receive_guarded(
        self, max_bytes: int | None, receive: Callable[[int | None], Awaitable[bytes]]
    ) -> bytes:
        """``receive_some`` for subclasses that also receive: the same checks
        (closed, ``max_bytes`` >= 1, one receiver at a time) around ``receive``."""
        self._check_open()
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            return await receive(max_bytes)
        finally:
            self._receiving = False
