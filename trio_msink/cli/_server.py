"""The running server: one source read, framed into Buffers, fanned out by
one Sink to every front (TCP, HTTP, WebSocket)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any, Protocol

import trio

from .. import Buffer, ClientStatus, Sink
from ..framing import open_framer
from ..fronts import ClientRegistry, HttpFront, WebSocketFront
from ._display import Display
from ._sources import open_source
from ._timeline import Timeline

__all__ = ["Output", "Server", "front_handlers", "front_url"]

logger = logging.getLogger("trio_msink.cli")

_CONTENT_TYPES = {"mpegts": "video/mp2t", "h264": "video/h264", "raw": "application/octet-stream"}


def front_url(front: str, sockname: Any) -> str:
    """The line printed for a listening front: ``tcp://H:P``, ``http://H:P/``, ``ws://H:P/``."""
    host, port = sockname[0], sockname[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{front}://{host}:{port}" + ("" if front == "tcp" else "/")


Handler = Callable[[trio.SocketStream], Awaitable[object]]


def front_handlers(sink: Sink, registry: ClientRegistry, content_type: str,
                   header_timeout: float) -> dict[str, Handler]:
    """The ``trio.serve_tcp`` handler of each front, all feeding ``sink``."""

    async def tcp(stream: trio.SocketStream) -> None:
        with registry.registered(stream, "tcp"):
            await sink.serve(stream)

    http = HttpFront(sink, content_type=content_type, registry=registry,
                     header_timeout=header_timeout)
    ws = WebSocketFront(sink, registry=registry)
    return {"tcp": tcp, "http": http.serve, "ws": ws.serve_stream}


class Output(Protocol):
    """Where framed buffers go: a Sink, or the worker processes."""

    def set_streamheader(self, buffers: list[Buffer]) -> None: ...
    async def send(self, buffer: Buffer) -> None: ...


class _Tee:
    """The worker relay, then the main process's own sink (``--workers``)."""

    def __init__(self, pool: Output, sink: Sink) -> None:
        self.pool = pool
        self.sink = sink

    def set_streamheader(self, buffers: list[Buffer]) -> None:
        self.pool.set_streamheader(buffers)
        self.sink.set_streamheader(buffers)

    async def send(self, buffer: Buffer) -> None:
        await self.pool.send(buffer)  # waits for the buffer's time (sync)
        await self.sink.send(buffer)

    async def flush(self) -> None:
        await _flush(self.pool)


async def _flush(output: Output) -> None:
    """Push out what ``output`` batched from one chunk of input (worker relays)."""
    flush = getattr(output, "flush", None)
    if flush is not None:
        await flush()


class Server:
    """``trio-msink serve``: read SOURCE, serve it, stop cleanly on a signal."""

    def __init__(self, args: argparse.Namespace, props: dict[str, Any],
                 fronts: dict[str, tuple[str, int]]) -> None:
        self.args = args
        self.props = props
        self.fronts = fronts
        self.source: AsyncGenerator[bytes, None] = open_source(args.source,
                                                       test_seconds=args.test_seconds)
        fmt = "mpegts" if args.source == "test" and args.format == "auto" else args.format
        self.framer = open_framer(fmt, chunk_size=args.chunk_size, fps=args.fps)
        self.content_type = args.content_type or _CONTENT_TYPES.get(fmt, "video/mp2t")
        self.registry = ClientRegistry()
        self.display = Display(self.registry, interactive=sys.stderr.isatty())

    def _callbacks(self) -> dict[str, Any]:  # Sink() checks each callback
        def added(stream: trio.abc.SendStream) -> None:
            self.display.client_added(stream)

        def removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
            self.display.client_removed(stream, status)

        def message(stream: trio.abc.SendStream, data: bytes) -> None:
            logger.debug("%d bytes from %s", len(data), self.registry.describe(stream))

        def dispatched(stream: trio.abc.SendStream, buffer: Buffer) -> None:
            logger.debug("%d bytes written to %s", len(buffer), self.registry.describe(stream))

        return {"on_client_added": added, "on_client_removed": removed,
                "on_message": message, "on_dispatched": dispatched}

    async def run(self) -> None:
        if self.args.workers > 1:
            await self._run_workers()
            return
        async with Sink(**self.props, **self._callbacks()) as sink:
            self.display.sink = sink
            async with trio.open_nursery() as handlers:
                async with trio.open_nursery() as main:
                    urls = await self._listen(sink, main, handlers)
                    for url in urls:
                        print(url, flush=True)
                    if self.args.command == "demo":
                        self._print_demo_help(urls)
                    main.start_soon(self._watch_signals, main.cancel_scope)
                    main.start_soon(self.display.run)
                    await self._pump(sink)
                    logger.info("end of input")
                    main.cancel_scope.cancel()
                await sink.aclose()  # clients drain for `linger` seconds
        self.display.close()

    async def _listen(self, sink: Sink, nursery: trio.Nursery,
                      handlers: trio.Nursery) -> list[str]:
        urls: list[str] = []
        serve = front_handlers(sink, self.registry, self.content_type, self.args.header_timeout)
        for front, (host, port) in self.fronts.items():
            listeners = await nursery.start(
                partial(trio.serve_tcp, serve[front], port, host=host, handler_nursery=handlers)
            )
            urls.append(front_url(front, listeners[0].socket.getsockname()))
        return urls

    async def _run_workers(self) -> None:
        from ._workers import WorkerPool, logging_callbacks

        config = {"props": self.props, "content_type": self.content_type,
                  "header_timeout": self.args.header_timeout}
        pool = WorkerPool(self.args.workers - 1, config, sync=self.props["sync"])
        await pool.start()
        try:
            async with Sink(**self.props, **logging_callbacks(0, self.registry)) as sink:
                local = front_handlers(sink, self.registry, self.content_type,
                                       self.args.header_timeout)
                async with trio.open_nursery() as handlers:
                    async with trio.open_nursery() as main:
                        urls = []
                        for front, (host, port) in self.fronts.items():
                            listeners = await trio.open_tcp_listeners(port, host=host)
                            urls.append(front_url(front, listeners[0].socket.getsockname()))
                            for listener in listeners:
                                main.start_soon(pool.hand_off, front, listener, local[front],
                                                handlers)
                        for url in urls:
                            print(url, flush=True)
                        if self.args.command == "demo":
                            self._print_demo_help(urls)
                        main.start_soon(self._watch_signals, main.cancel_scope)
                        await self._pump(_Tee(pool, sink))
                        logger.info("end of input")
                        main.cancel_scope.cancel()
                    async with trio.open_nursery() as closing:  # every process drains
                        closing.start_soon(pool.close)
                        await sink.aclose()
        finally:
            with trio.CancelScope(shield=True):
                await pool.close()

    def _print_demo_help(self, urls: list[str]) -> None:
        """How to watch the demo, with the URLs the fronts really listen on."""
        url = {u.split("://", 1)[0]: u for u in urls}
        hints = []
        if "tcp" in url:
            hints.append(f"watch it:  ffplay {url['tcp']}")
        if "http" in url:
            hints.append(f"{'':11}vlc {url['http']}stream")
            hints.append(f"live stats in a browser: {url['http']}")
        if "ws" in url:
            hints.append(f"WebSocket: {url['ws']}")
        print("\n".join("  " + hint for hint in hints), file=sys.stderr, flush=True)

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logger.info("%s: stopping", signal.Signals(signum).name)
                scope.cancel()
                return

    async def _pump(self, sink: Output) -> None:
        framer = self.framer
        headers: list[bytes] = []
        timeline = Timeline()  # pts that never go backwards (docs/framing.md)

        async def send_all(buffers: list[Buffer]) -> None:
            nonlocal headers
            current = [h.tobytes() for h in framer.streamheader]
            if current != headers:
                headers = current
                sink.set_streamheader(framer.streamheader)
            for buffer in buffers:
                await sink.send(timeline.stamp(buffer, trio.current_time()))

        async with aclosing(self.source) as source:
            async for chunk in source:
                await send_all(framer.feed(chunk))
                await _flush(sink)
            await send_all(framer.flush())
            await _flush(sink)
