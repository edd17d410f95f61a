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
import enum
import json
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import trio

from .. import Buffer, Sink
from .._clock import PacingBase
from ..fronts import ClientRegistry
from ..fronts.browser import BrowserVideo
from ._defaults import apply_properties
from ._handlers import front_handlers, logging_callbacks, open_metrics
from ._security import Security
from ._wire import (
    CONTENT_TYPE,
    PROPERTIES,
    STATUS,
    WireDecoder,
    encode_buffer,
    encode_headers,
    encode_json,
)

__all__ = ["Output", "Relay", "WorkerPool", "worker_main"]

logger = logging.getLogger("trio_msink.cli")

# Relayed messages are written to the workers in batches of up to this many
# bytes (one chunk of input usually), one system call per worker per batch.
_BATCH_BYTES = 1 << 20
# Seconds between two source status messages to the workers.
_STATUS_INTERVAL = 1.0


class Output(Protocol):
    """Where framed buffers go: the main process's Sink and the workers."""

    def set_streamheader(self, buffers: list[Buffer]) -> None: ...
    async def send(self, buffer: Buffer) -> None: ...
    async def send_batch(self) -> None:
        """Push out what was batched from one chunk of input."""
        ...
    def set_properties(self, properties: dict[str, Any]) -> None: ...
    def set_content_type(self, content_type: str) -> None:
        """The label of HTTP ``/stream`` from now on (a detected format)."""
        ...


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
        # the Sink's own pacing rule (docs/semantics.rst, "Sync pacing")
        self._pacing = PacingBase()
        self._batch: list[bytes | memoryview] = []
        self._batched = 0
        self._pending_headers: bytes | None = None
        self._status_sent = -math.inf

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
        """Batch a message; written to the workers by :meth:`send_batch` (at
        the end of each chunk of input, or before waiting for a buffer's time)."""
        self._queue(parts)
        if self._batched >= _BATCH_BYTES:
            await self.send_batch()

    def _queue(self, parts: list[bytes | memoryview]) -> None:
        self._batch.extend(parts)
        self._batched += sum(len(p) for p in parts)

    def set_properties(self, properties: dict[str, Any]) -> None:
        """Sink properties for every worker, relayed ahead of the next buffer."""
        self._queue([encode_json(PROPERTIES, {k: _json_value(v)
                                              for k, v in properties.items()})])

    def set_content_type(self, content_type: str) -> None:
        """The workers' label of HTTP ``/stream``, relayed ahead of the next buffer."""
        self._queue([encode_json(CONTENT_TYPE, content_type)])

    def set_source_status(self, status: dict[str, Any], now: float) -> None:
        """The source's status for the workers' /stats, at most once a second."""
        if now - self._status_sent >= _STATUS_INTERVAL:
            self._status_sent = now
            self._queue([encode_json(STATUS, status)])

    async def send_batch(self) -> None:
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
        self._pending_headers = encode_headers(buffers)

    async def send(self, buffer: Buffer) -> None:
        headers, self._pending_headers = self._pending_headers, None
        if headers is not None:
            await self._relay([headers])
        due = self._pacing.due(buffer.pts, trio.current_time()) if self.sync else None
        if due is not None:
            await self.send_batch()
            await trio.sleep_until(due)
        await self._relay(encode_buffer(buffer))

    async def hand_off(self, front: str, listener: trio.SocketListener,
                       local: Callable[[trio.SocketStream], Awaitable[object]],
                       nursery: trio.Nursery,
                       accept: Callable[[trio.SocketListener], Awaitable[trio.SocketStream]]
                       | None = None) -> None:
        """Accept connections forever (with ``accept(listener)`` if given: the
        fronts' accept loop, which waits out a lack of descriptors); in turn,
        serve one here (``local``, in ``nursery``) and pass one to each worker
        process."""

        async def serve_here(stream: trio.SocketStream) -> None:
            async with stream:
                await local(stream)

        while True:
            stream = await (accept(listener) if accept is not None else listener.accept())
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

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every worker process (SIGHUP: reload)."""
        for worker in self.workers:
            if worker.process.returncode is None:
                worker.process.send_signal(signum)

    async def close(self) -> None:
        """End of stream: each worker lets its clients drain, then exits."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.send_batch()
        for worker in self.workers:
            await worker.data.aclose()
            worker.control.close()
        for worker in self.workers:
            await worker.process.wait()


def _json_value(value: Any) -> Any:
    # Enum properties travel as their int values (the Sink accepts both).
    return int(value) if isinstance(value, enum.IntEnum) else value


class Relay:
    """The :class:`Output` of the main process: its own Sink, and with
    ``--workers`` the worker pool first (the pool waits for each buffer's
    time, so both get it paced), then the browser viewers' video."""

    def __init__(self, sink: Sink, pool: WorkerPool | None = None,
                 video: BrowserVideo | None = None) -> None:
        self.sink = sink
        self.pool = pool
        self.video = video

    def set_streamheader(self, buffers: list[Buffer]) -> None:
        if self.pool is not None:
            self.pool.set_streamheader(buffers)
        self.sink.set_streamheader(buffers)
        if self.video is not None:
            self.video.set_streamheader(buffers)

    async def send(self, buffer: Buffer) -> None:
        if self.pool is not None:
            await self.pool.send(buffer)
        await self.sink.send(buffer)
        if self.video is not None:  # the browser viewers' units, made once here
            await self.video.send(buffer)

    async def send_batch(self) -> None:
        if self.pool is not None:
            await self.pool.send_batch()

    def set_properties(self, properties: dict[str, Any]) -> None:
        if self.pool is not None:
            self.pool.set_properties(properties)
        apply_properties(self.sink, properties)

    def set_content_type(self, content_type: str) -> None:
        # The main process's HTTP front reads the Server's label itself.
        if self.pool is not None:
            self.pool.set_content_type(content_type)

    def set_source_status(self, status: dict[str, Any], now: float) -> None:
        if self.pool is not None:
            self.pool.set_source_status(status, now)


# -- the worker process ------------------------------------------------------------------
class _WorkerState:
    source: dict[str, Any] | None = None
    content_type = ""  # set from the worker's config


async def _receive_stream(stream: trio.SocketStream, sink: Sink, state: _WorkerState) -> None:
    """Read the relayed stream in large chunks; each chunk's buffers are sent
    to the sink back to back, so the sink writes them to a client in one
    call."""
    decoder = WireDecoder()
    while chunk := await stream.receive_some(1 << 20):
        for message in decoder.feed(chunk):
            if message.buffer is not None:
                await sink.send(message.buffer)
            elif message.headers is not None:
                sink.set_streamheader(message.headers)
            elif message.kind == STATUS:
                state.source = message.value
            elif message.kind == CONTENT_TYPE:
                state.content_type = message.value
            else:
                apply_properties(sink, message.value)


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


async def _worker(config: dict[str, Any]) -> None:
    registry = ClientRegistry()
    props = {**config["props"], "sync": False}
    data = trio.SocketStream(trio.socket.from_stdlib_socket(
        socket.socket(fileno=config["data_fd"])))
    control = socket.socket(fileno=config["control_fd"])
    control.setblocking(False)
    state = _WorkerState()
    state.content_type = config["content_type"]
    security = Security.from_worker_config(config["security"])  # docs/security.md
    accept = security.accept_loop(config["header_timeout"])
    metrics = open_metrics(registry, lambda: state.source)
    async with Sink(**props, **logging_callbacks(config["index"], registry, metrics)) as sink:
        if metrics is not None:
            metrics.sink = sink
        handlers = {front: partial(accept.serve_connection, handler=handler)
                    for front, handler in front_handlers(
                        sink, registry, lambda: state.content_type, config["header_timeout"],
                        lambda: state.source, fronts=config.get("fronts"),
                        gate=security.gate, metrics=metrics).items()}
        async with trio.open_nursery() as clients:
            async with trio.open_nursery() as main:
                await main.start(security.watch)
                main.start_soon(_receive_clients, control, handlers, clients)
                await _receive_stream(data, sink, state)
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
