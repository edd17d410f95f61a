"""Shared test doubles: streams whose pace the test controls."""

from __future__ import annotations

import trio
import trio.testing


class RecordingStream(trio.abc.SendStream):
    """A send-only client that records what it is sent.

    While ``stalled`` its ``send_all`` blocks (the buffer being written is
    handed over but not completed) until :meth:`unstall`. ``writes`` holds
    the bytes of each completed ``send_all`` call; ``data`` all bytes.
    """

    def __init__(self, *, stalled: bool = False, fail: BaseException | None = None) -> None:
        self.writes: list[bytes] = []
        self.stalled = stalled
        self.fail = fail
        self.closed = False
        self._unstalled = trio.Event()
        if not stalled:
            self._unstalled.set()
        self.sends_started = 0

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def stall(self) -> None:
        self.stalled = True
        self._unstalled = trio.Event()

    def unstall(self) -> None:
        self.stalled = False
        self._unstalled.set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise trio.ClosedResourceError
        self.sends_started += 1
        if self.fail is not None:
            raise self.fail
        chunk = bytes(data)
        await self._unstalled.wait()
        await trio.lowlevel.checkpoint()
        self.writes.append(chunk)

    async def wait_send_all_might_not_block(self) -> None:
        await self._unstalled.wait()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def settle() -> None:
    """Let every task run until all are blocked."""
    await trio.testing.wait_all_tasks_blocked()
