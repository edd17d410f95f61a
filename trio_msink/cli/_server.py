"""The running server: one source read, framed into Buffers, fanned out by
one Sink (and with ``--workers`` by the workers' Sinks too) to every front
(TCP, HTTP, WebSocket)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from functools import partial
from typing import Any

import trio

from .. import Buffer, ClientStatus, Sink
from ..framing import AutoFramer, Framer, open_framer
from ..fronts import ClientRegistry, WebSocketFront
from ..fronts._accept import AcceptLoop
from ..fronts.browser import BrowserVideo
from ._defaults import DEFAULT_FORMAT_BEFORE_DETECTION, format_defaults
from ._display import Display
from ._errors import CommandError
from ._handlers import (
    VIDEO_PATH,
    Handler,
    front_handlers,
    front_url,
    logging_callbacks,
    open_metrics,
)
from ._security import Security
from ._sources import Item, Source, SourceError, Upstream, listen_error, open_source
from ._sources import _FiniteSource as FiniteSource
from ._timeline import Timeline
from ._workers import Output, Relay, WorkerPool

__all__ = ["Server"]

logger = logging.getLogger("trio_msink.cli")

_CONTENT_TYPES = {"mpegts": "video/mp2t", "h264": "video/h264", "raw": "application/octet-stream"}


class Server:
    """``trio-msink serve``: read SOURCE, serve it, stop cleanly on a signal.

    :meth:`run` returns at the real end of a finite source (and after a
    signal); it raises :exc:`CommandError` for a failure a person can act
    on (a front or ``--ingest`` that cannot listen, ``--reconnect-max``
    reached). Building it raises :exc:`SourceError` (a CommandError) for a
    source that can never work.
    """

    def __init__(self, args: argparse.Namespace, props: dict[str, Any],
                 fronts: dict[str, tuple[str, int]]) -> None:
        self.args = args
        self.props = props
        self.fronts = fronts
        self.source: Source = open_source(args)
        self.format = "mpegts" if args.source == "test" and args.format == "auto" else args.format
        self.framer: Framer = open_framer(self.format, chunk_size=args.chunk_size, fps=args.fps)
        self.timeline = Timeline()  # pts that never go backwards (docs/framing.md)
        # The format whose command defaults the Sink has (see _defaults).
        self._defaults_format = (DEFAULT_FORMAT_BEFORE_DETECTION if self.format == "auto"
                                 else self.format)
        # The label of HTTP /stream: --content-type, else the format's, which
        # with --format auto follows the detected format (_apply_detected_defaults).
        self.content_type = args.content_type or _CONTENT_TYPES.get(self.format, "video/mp2t")
        self._told_unrecognised = False  # this upstream's "not recognised" line is out
        self.registry = ClientRegistry()
        self.display = Display(self.registry, interactive=sys.stderr.isatty())
        self.display.source = self.source.status
        self.security = Security.from_args(args, list(fronts))
        self.metrics = open_metrics(self.registry, self.source_status)
        # The browser viewers' video, when there is a WebSocket front.
        self.video: BrowserVideo | None = None

    def source_status(self) -> dict[str, Any]:
        """The ``"source"`` object of ``/stats``."""
        return self.source.status.snapshot(trio.current_time())

    def _callbacks(self) -> dict[str, Any]:  # Sink() checks each callback
        metrics = self.metrics

        def added(stream: trio.abc.SendStream) -> None:
            if metrics is not None:
                metrics.client_added(stream)
            self.display.client_added(stream)

        def removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
            if metrics is not None:
                metrics.client_removed(stream, status)
            self.display.client_removed(stream, status)

        def message(stream: trio.abc.SendStream, data: bytes) -> None:
            logger.debug("%d bytes from %s", len(data), self.registry.describe(stream))

        def dispatched(stream: trio.abc.SendStream, buffer: Buffer) -> None:
            logger.debug("%d bytes written to %s", len(buffer), self.registry.describe(stream))

        return {"on_client_added": added, "on_client_removed": removed,
                "on_message": message, "on_dispatched": dispatched}

    async def run(self) -> None:
        try:
            await self._run()
        except BaseExceptionGroup as group:
            error = _command_error(group)
            if error is None:
                raise
            raise error from group

    async def _run(self) -> None:
        listeners = await self._open_listeners()
        urls = [self.security.url(front_url(front, ls[0].socket.getsockname()))
                for front, ls in listeners.items()]
        self._tell_gate(listeners)
        fronts = dict(zip(listeners, urls, strict=True))
        ingest = await self.source.listen()
        if ingest is not None:  # push ingest: publishers need its address too
            urls.append(ingest)
        video_listeners = await self._open_video(listeners, fronts)
        pool: WorkerPool | None = None
        if self.args.workers > 1:
            config = {"props": self.props, "content_type": self.content_type,
                      "header_timeout": self.args.header_timeout, "fronts": fronts,
                      "security": self.security.worker_config()}
            pool = WorkerPool(self.args.workers - 1, config, sync=self.props["sync"])
            await pool.start()
            self.security.on_sighup.append(partial(pool.signal_workers, signal.SIGHUP))
        callbacks = (self._callbacks() if pool is None
                     else logging_callbacks(0, self.registry, self.metrics))
        try:
            async with Sink(**self.props, **callbacks) as sink, self._video_context():
                self.display.sink = sink
                if self.metrics is not None:
                    self.metrics.sink = sink
                local = front_handlers(sink, self.registry, lambda: self.content_type,
                                       self.args.header_timeout, self.source_status,
                                       video=self.video, fronts=fronts,
                                       gate=self.security.gate, metrics=self.metrics)
                accept = self.security.accept_loop(self.args.header_timeout)
                async with trio.open_nursery() as handlers:
                    async with trio.open_nursery() as main:
                        await main.start(self.security.watch)  # SIGHUP before the URLs
                        if video_listeners and self.video is not None:
                            viewers = WebSocketFront(self.video.sink, registry=self.registry,
                                                     name="video", path=VIDEO_PATH,
                                                     gate=self.security.gate)
                            main.start_soon(partial(accept.serve, viewers.serve_stream,
                                                    video_listeners, handler_nursery=handlers))
                        _serve_fronts(listeners, local, pool, main, handlers, accept)
                        for url in urls:
                            print(url, flush=True)
                        if self.args.command == "demo":
                            self._print_demo_help(urls)
                        main.start_soon(self._watch_signals, main.cancel_scope)
                        main.start_soon(self.display.run)
                        send, receive = trio.open_memory_channel[Item](0)
                        main.start_soon(self.source.run, send)
                        await self._pump(Relay(sink, pool, self.video), receive)
                        logger.info("end of input")
                        main.cancel_scope.cancel()
                    async with trio.open_nursery() as closing:  # every process drains
                        if pool is not None:
                            closing.start_soon(pool.close)
                        await sink.aclose()  # clients drain for `linger` seconds
        finally:
            if pool is not None:
                with trio.CancelScope(shield=True):
                    await pool.close()

    def _tell_gate(self, listeners: dict[str, list[trio.SocketListener]]) -> None:
        """The server's own pages (the HTTP front) and listening hosts are
        origins its WebSocket front admits (docs/security.md)."""
        gate = self.security.gate
        for front, opened in listeners.items():
            for listener in opened:
                host, port = listener.socket.getsockname()[:2]
                if front == "http":
                    gate.page_ports.add(port)
                try:
                    unspecified = ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified
                except ValueError:  # not an IP address: nothing to compare origins with
                    continue
                if not unspecified:
                    gate.listen_hosts.add(host)

    async def _open_video(self, listeners: dict[str, list[trio.SocketListener]],
                          fronts: dict[str, str]) -> list[trio.SocketListener]:
        """Browser viewers' video (docs/fronts.md): on the WebSocket front's
        ``/video``; with ``--workers``, whose processes share that port, on a
        port of the main process's own (returned), as only it converts the
        stream. Without a WebSocket front, none."""
        if "ws" not in listeners:
            return []
        callbacks: dict[str, Callable[..., None]] = {
            "on_client_added": self.display.client_added,
            "on_client_removed": self.display.client_removed}
        if self.metrics is not None:  # its viewers count in /metrics too
            callbacks = _chain(callbacks, self.metrics.callbacks("video"))
        self.video = BrowserVideo(self.format, on_client_added=callbacks["on_client_added"],
                                  on_client_removed=callbacks["on_client_removed"])
        if self.metrics is not None:
            self.metrics.add_sink("video", self.video.sink)
        if self.args.workers <= 1:
            fronts["video"] = fronts["ws"].rstrip("/") + VIDEO_PATH
            return []
        opened = await trio.open_tcp_listeners(0, host=self.fronts["ws"][0])
        video_url = self.security.url(front_url("ws", opened[0].socket.getsockname()))
        fronts["video"] = video_url.rstrip("/") + VIDEO_PATH
        return opened

    def _video_context(self) -> AbstractAsyncContextManager[object]:
        return self.video if self.video is not None else nullcontext()

    async def _open_listeners(self) -> dict[str, list[trio.SocketListener]]:
        """Every front's listening sockets, before anything is printed;
        CommandError naming the front's flag and address if one fails."""
        listeners: dict[str, list[trio.SocketListener]] = {}
        try:
            for front, (host, port) in self.fronts.items():
                try:
                    listeners[front] = await trio.open_tcp_listeners(port, host=host)
                except OSError as exc:
                    raise listen_error(f"--{front} {_address(host, port)}", exc) from exc
        except BaseException:
            for opened in listeners.values():
                for listener in opened:
                    await trio.aclose_forcefully(listener)
            raise
        return listeners

    def _print_demo_help(self, urls: list[str]) -> None:
        """How to watch the demo, with the URLs the fronts really listen on."""
        url = {u.split("://", 1)[0]: u for u in urls}
        hints = []
        if "tcp" in url:
            hints.append(f"watch it:  ffplay {url['tcp']}")
        if "http" in url:
            hints.append(f"{'':11}vlc {url['http']}stream")
            what = "the video and live stats" if "ws" in url else "live stats"
            hints.append(f"{what} in a browser: {url['http']}")
        if "ws" in url:
            hints.append(f"WebSocket: {url['ws']}")
        print("\n".join("  " + hint for hint in hints), file=sys.stderr, flush=True)

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logger.info("%s: stopping", signal.Signals(signum).name)
                scope.cancel()
                return

    def _restart(self) -> None:
        """A new upstream (connection, publisher, fallback origin): the
        framer starts over and emits nothing until the new stream's headers
        and a keyframe (so clients resume on a clean keyframe, after the new
        headers if they changed); pacing starts a new segment of the
        timeline instead of waiting for, or bursting to, the new clock."""
        self.framer.restart()
        self.timeline.discontinuity()
        self._told_unrecognised = False
        if self.video is not None:
            self.video.restart()

    def _apply_detected_defaults(self, output: Output) -> None:
        """``--format auto``: once the format is known (again, after a
        restart), the Sinks get the command's defaults for it, and HTTP
        ``/stream`` its label (unless ``--content-type`` gave one)."""
        if not isinstance(self.framer, AutoFramer):
            return
        detected = self.framer.detected
        if detected is None:
            return
        label = self.args.content_type or _CONTENT_TYPES[detected]
        if label != self.content_type:
            self.content_type = label
            output.set_content_type(label)
        if detected == self._defaults_format:
            return
        self._defaults_format = detected
        if self.video is not None:
            self.video.use_format(detected)
        explicit: frozenset[str] = getattr(self.args, "explicit_properties", frozenset())
        logger.info("input format: %s", detected)
        output.set_properties(format_defaults(detected, explicit))

    def _refuse_unrecognised(self) -> bool:
        """``--format auto`` fell back to raw: the input is neither MPEG-TS
        nor H.264, so it is not served under a video label unless
        ``--content-type`` says what it is (docs/cli.md, "Input that auto
        does not recognise"). True while its bytes are dropped (a relay's
        origin or a publisher: until the next upstream); SourceError (exit
        1) for stdin or a file, which have no other upstream to wait for."""
        if not isinstance(self.framer, AutoFramer) or self.framer.detected != "raw":
            return False
        spec = self.source.status.spec
        if self.args.content_type is not None:
            if not self._told_unrecognised:
                logger.warning("source %s: neither MPEG-TS nor H.264: served as raw chunks "
                               "labelled %s", spec, self.args.content_type)
                self._told_unrecognised = True
            return False
        what = ("neither MPEG-TS nor H.264 in its first bytes (--format auto); "
                "give --format raw or --content-type TYPE to serve it as bytes")
        if isinstance(self.source, FiniteSource):
            raise SourceError(f"SOURCE {spec}: {what}")
        if not self._told_unrecognised:
            logger.warning("source %s: %s; not served until the next upstream", spec, what)
            self._told_unrecognised = True
        return True

    async def _send_all(self, output: Output, buffers: list[Buffer]) -> None:
        if self._refuse_unrecognised():
            return
        self._apply_detected_defaults(output)
        if self.framer.header_changed:
            output.set_streamheader(self.framer.streamheader)
        for buffer in buffers:
            await output.send(self.timeline.stamp(buffer, trio.current_time()))

    async def _pump(self, output: Relay, items: trio.MemoryReceiveChannel[Item]) -> None:
        started = False
        async with items:
            async for item in items:
                if isinstance(item, Upstream):
                    if started:
                        self._restart()
                    started = True
                    continue
                await self._send_all(output, self.framer.feed(item))
                if output.pool is not None:  # the workers' /stats show the source too
                    output.set_source_status(self.source_status(), trio.current_time())
                await output.send_batch()
        await self._send_all(output, self.framer.flush())
        await output.send_batch()


def _serve_fronts(listeners: dict[str, list[trio.SocketListener]], local: dict[str, Handler],
                  pool: WorkerPool | None, nursery: trio.Nursery,
                  handlers: trio.Nursery, accept: AcceptLoop) -> None:
    """Accept on every front: each connection is served here (``local``, its
    task in ``handlers``, through ``accept``: addresses, limits, TLS; see
    docs/security.md), or with ``--workers`` dealt round robin over this
    process and the workers."""
    for front, front_listeners in listeners.items():
        if pool is None:
            nursery.start_soon(partial(accept.serve, local[front], front_listeners,
                                       handler_nursery=handlers))
            continue
        for listener in front_listeners:
            nursery.start_soon(pool.hand_off, front, listener,
                               partial(accept.serve_connection, handler=local[front]),
                               handlers, accept.accept)


def _chain(first: dict[str, Callable[..., None]],
           second: dict[str, Callable[..., None]]) -> dict[str, Callable[..., None]]:
    """Sink callbacks that call ``first``'s, then ``second``'s, for each event."""
    def both(a: Callable[..., None], b: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            a(*args)
            b(*args)
        return call
    return {name: both(first[name], second[name]) for name in first}


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _command_error(group: BaseExceptionGroup) -> CommandError | None:
    """The CommandError inside ``group`` (raised from a task), if any."""
    for exc in group.exceptions:
        if isinstance(exc, CommandError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _command_error(exc)
            if found is not None:
                return found
    return None
