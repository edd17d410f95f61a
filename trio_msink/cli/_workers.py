"""``--workers K``: serve clients from K processes, the source read once.

The main process (worker 0) reads and frames the source, paces it
(``--sync``), serves its share of the clients with its own Sink, and relays
every buffer to K - 1 worker processes over socketpairs; it owns the
listening sockets and deals the accepted connections round robin: one to
itself, one to each worker (``SCM_RIGHTS``). Each worker runs its own Sink
(``sync`` off: the stream arrives paced) and the fronts' handlers, so the
clients' writes are spread over K cores, and a buffer crosses at most one
extra process on its way to a client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .. import Buffer, ClientStatus, Sink
from ..fronts import ClientRegistry
from ._server import front_handlers

__all__ = ["WorkerPool", "worker_main"]

logger = logging.getLogger("trio_msink.cli")

# kind, flags (1: delta unit, 2: header), pts (NaN: none), payload length
_HEAD = struct.Struct("!BBdI")
_BUFFER, _HEADERS = 1, 2
_LENGTH = struct.Struct("!I")
# Relayed messages are written to the workers in batches of up to this many
# bytes (one chunk of input usually), one system call per worker per batch.
_BATCH_BYTES = 1 << 20


def _encode(kind: int, buffer: Buffer | None, payload: bytes = b"") -> list[bytes | memoryview]:
    if buffer is not None:
        flags = (1 if buffer.delta_unit else 0) | (2 if buffer.header else 0)
        pts = math.nan if buffer.pts is None else buffer.pts
        return [_HEAD.pack(kind, flags, pts, buffer.size), *buffer.segments]
    return [_HEAD.pack(kind, 0, math.nan, len(payload)), payload]


class _Worker:
    def __init__(self, process: trio.Process, data: trio.SocketStream,
                 control: socket.socket) -> None:
        self.process = process
        self.data = data
        self.control = control


class WorkerPool:
    """The main process's side: relays the stream and hands out connections."""

    def __init__(self, count: int, config: dict[str, Any], sync: bool) -> None:
        self.count = count
        self.config = config
        self.sync = sync
        self.workers: list[_Worker] = []
        self._next = 0
        self._base: float | None = None
        self._batch: list[bytes | memoryview] = []
        self._batched = 0
        self._pending_headers: bytes | None = None

    async def start(self) -> None:
        for index in range(self.count):
            data_main, data_child = socket.socketpair()
            control_main, control_child = socket.socketpair()
            config = {**self.config, "index": index + 1, "data_fd": data_child.fileno(),
                      "control_fd": control_child.fileno()}
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trio_msink.cli._workers", json.dumps(config)],
                pass_fds=(data_child.fileno(), control_child.fileno()),
            )
            data_child.close()
            control_child.close()
            control_main.setblocking(False)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(data_main))
            self.workers.append(_Worker(process, stream, control_main))

    async def _relay(self, parts: list[bytes | memoryview]) -> None:
        """Batch a message; written to the workers by :meth:`flush` (at the end
        of each chunk of input, or before waiting for a buffer's time)."""
        self._batch.extend(parts)
        self._batched += sum(len(p) for p in parts)
        if self._batched >= _BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        """Write the batched messages to every worker, one call each."""
        if not self._batch:
            return
        data = b"".join(self._batch)
        self._batch.clear()
        self._batched = 0
        for worker in self.workers:
            await worker.data.send_all(data)

    def set_streamheader(self, buffers: list[Buffer]) -> None:
        """New headers: relayed ahead of the next buffer."""
        self._pending_headers = b"".join(_LENGTH.pack(b.size) + b.tobytes() for b in buffers)

    async def send(self, buffer: Buffer) -> None:
        headers, self._pending_headers = self._pending_headers, None
        if headers is not None:
            await self._relay(_encode(_HEADERS, None, headers))
        if self.sync and buffer.pts is not None:
            if self._base is None:
                self._base = trio.current_time() - buffer.pts
            elif self._base + buffer.pts > trio.current_time():
                await self.flush()
                await trio.sleep_until(self._base + buffer.pts)
        await self._relay(_encode(_BUFFER, buffer))

    async def hand_off(self, front: str, listener: trio.SocketListener,
                       local: Callable[[trio.SocketStream], Awaitable[object]],
                       nursery: trio.Nursery) -> None:
        """Accept connections forever; in turn, serve one here (``local``, in
        ``nursery``) and pass one to each worker process."""

        async def serve_here(stream: trio.SocketStream) -> None:
            async with stream:
                await local(stream)

        while True:
            stream = await listener.accept()
            turn = self._next % (len(self.workers) + 1)
            self._next += 1
            if turn == 0:
                nursery.start_soon(serve_here, stream)
                continue
            worker = self.workers[turn - 1]
            fd = stream.socket.detach()
            try:
                while True:
                    try:
                        socket.send_fds(worker.control, [front.encode()], [fd])
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(worker.control)
            finally:
                os.close(fd)

    async def close(self) -> None:
        """End of stream: each worker lets its clients drain, then exits."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.flush()
        for worker in self.workers:
            await worker.data.aclose()
            worker.control.close()
        for worker in self.workers:
            await worker.process.wait()


# -- the worker process ------------------------------------------------------------------
async def _receive_stream(stream: trio.SocketStream, sink: Sink) -> None:
    """Read the relayed stream in large chunks; each chunk's buffers are sent
    to the sink back to back, so its flusher writes them to a client in one
    call."""
    pending = bytearray()
    while chunk := await stream.receive_some(1 << 20):
        pending += chunk
        offset = 0
        while len(pending) - offset >= _HEAD.size:
            kind, flags, pts, length = _HEAD.unpack_from(pending, offset)
            start = offset + _HEAD.size
            if len(pending) - start < length:
                break
            payload = bytes(pending[start : start + length])
            offset = start + length
            if kind == _HEADERS:
                sink.set_streamheader(_decode_headers(payload))
            else:
                await sink.send(Buffer(payload, pts=None if math.isnan(pts) else pts,
                                       delta_unit=bool(flags & 1), header=bool(flags & 2)))
        del pending[:offset]


def _decode_headers(payload: bytes) -> list[Buffer]:
    headers, offset = [], 0
    while offset < len(payload):
        (size,) = _LENGTH.unpack_from(payload, offset)
        offset += _LENGTH.size
        headers.append(Buffer(payload[offset : offset + size], header=True))
        offset += size
    return headers


async def _receive_clients(control: socket.socket, handlers: dict[str, Any],
                           nursery: trio.Nursery) -> None:
    async def run(handler: Any, stream: trio.SocketStream) -> None:
        async with stream:
            await handler(stream)

    while True:
        await trio.lowlevel.wait_readable(control)
        try:
            message, fds, _, _ = socket.recv_fds(control, 64, 8)
        except BlockingIOError:
            continue
        if not message and not fds:
            return
        for fd in fds:
            sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
            handler = handlers.get(message.decode(), handlers["tcp"])
            nursery.start_soon(run, handler, trio.SocketStream(sock))


def logging_callbacks(index: int, registry: ClientRegistry) -> dict[str, Any]:
    """Sink callbacks that log each client event with the worker's number."""
    name = f"worker {index}"

    def added(stream: trio.abc.SendStream) -> None:
        logger.info("%s: client added: %s", name, registry.describe(stream))

    def removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
        logger.info("%s: client removed (%s): %s", name, status.name, registry.describe(stream))

    return {"on_client_added": added, "on_client_removed": removed}


async def _worker(config: dict[str, Any]) -> None:
    registry = ClientRegistry()
    props = {**config["props"], "sync": False}
    data = trio.SocketStream(trio.socket.from_stdlib_socket(
        socket.socket(fileno=config["data_fd"])))
    control = socket.socket(fileno=config["control_fd"])
    control.setblocking(False)
    async with Sink(**props, **logging_callbacks(config["index"], registry)) as sink:
        handlers = front_handlers(sink, registry, config["content_type"],
                                  config["header_timeout"])
        async with trio.open_nursery() as clients:
            async with trio.open_nursery() as main:
                main.start_soon(_receive_clients, control, handlers, clients)
                await _receive_stream(data, sink)
                main.cancel_scope.cancel()
            await sink.aclose()


def worker_main(argv: list[str]) -> None:
    """Entry point of a worker process (started by :class:`WorkerPool`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    config = json.loads(argv[0])
    logging.basicConfig(level=logging.INFO, format="trio-msink: %(message)s",
                        stream=sys.stderr)
    trio.run(_worker, config)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
