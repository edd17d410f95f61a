"""``trio-msink``: serve a stream to TCP, HTTP and WebSocket clients at once."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from .. import Format, RecoverPolicy, SyncMethod
from ._options import add_sink_flags, flag_of, sink_properties
from ._sources import SourceError, add_source_flags, parse_host_port

__all__ = ["main"]

PROG = "trio-msink"

# `demo`: real-time video for players that join at any time. Players need a
# keyframe to start (latest-keyframe gives them the newest one at once);
# 2 s of history lets a joining player start without waiting; a client more
# than ~4 s (at 25 fps) behind is resynced on a keyframe, and one 20 s behind
# is dropped, so a stalled player never holds more than that in memory.
DEMO_DEFAULTS: dict[str, Any] = {
    "sync_method": SyncMethod.LATEST_KEYFRAME,
    "recover_policy": RecoverPolicy.RESYNC_KEYFRAME,
    "buffers_soft_max": 100,
    "buffers_max": 500,
    "time_min": 2.0,
    "unit_format": Format.BUFFERS,
    "timeout": 30.0,
    "linger": 2.0,
}
DEMO_FRONTS = {"tcp": "127.0.0.1:9000", "http": "127.0.0.1:8080", "ws": "127.0.0.1:8081"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fan a live stream out to TCP, HTTP and WebSocket clients."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve SOURCE to clients")
    serve.add_argument("source", nargs="?", default="-", metavar="SOURCE",
                       help="-, a file, tcp://HOST:PORT or test (default: -, stdin)")
    _add_server_flags(serve)
    add_source_flags(serve)
    add_sink_flags(serve, {})
    demo = sub.add_parser("demo", help="serve the test stream on TCP 9000, HTTP 8080, WS 8081")
    _add_server_flags(demo, DEMO_FRONTS)
    add_source_flags(demo, positional=False)
    add_sink_flags(demo, DEMO_DEFAULTS)
    return parser


def _add_server_flags(parser: argparse.ArgumentParser,
                      fronts: dict[str, str] | None = None) -> None:
    fronts = fronts or {}
    parser.add_argument("--tcp", metavar="HOST:PORT", default=fronts.get("tcp"),
                        help="serve raw stream bytes on this TCP address")
    parser.add_argument("--http", metavar="HOST:PORT", default=fronts.get("http"),
                        help="serve HTTP (/stream, /stats, /) on this address")
    parser.add_argument("--ws", metavar="HOST:PORT", default=fronts.get("ws"),
                        help="serve WebSocket clients on this address")
    parser.add_argument("--format", choices=["auto", "mpegts", "h264", "raw"], default="auto",
                        help="framing of the input (default: auto)")
    parser.add_argument("--chunk-size", type=int, default=1316, metavar="BYTES",
                        help="buffer size for --format raw (default: %(default)s)")
    parser.add_argument("--content-type", default=None,
                        help="Content-Type of HTTP /stream (default: from --format)")
    parser.add_argument("--test-seconds", type=float, default=None, metavar="S",
                        help="with SOURCE test: stop after S seconds (default: never)")
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                        help="seconds an HTTP client has to send its request headers")
    parser.add_argument("--workers", type=int, default=1, metavar="K",
                        help="serve clients from K processes (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")


def _fail(parser: argparse.ArgumentParser, message: str) -> None:
    parser.exit(2, f"{PROG}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        args.source = "test"
    props = sink_properties(args)
    from .. import Sink

    try:
        Sink(**props)  # validate every flag before anything starts
    except (TypeError, ValueError) as exc:
        name = str(exc).split(" ", 1)[0].rstrip(":")
        flag = flag_of(name) if name in props else "options"
        _fail(parser, f"argument {flag}: {exc}")
    fronts: dict[str, tuple[str, int]] = {}
    for front in ("tcp", "http", "ws"):
        value = getattr(args, front)
        if value is not None:
            try:
                fronts[front] = parse_host_port(value, f"argument --{front}")
            except SourceError as exc:
                _fail(parser, str(exc))
    if not fronts:
        fronts["tcp"] = ("127.0.0.1", 4953)  # tcpserversink's default port
    if args.workers < 1:
        _fail(parser, f"argument --workers: must be >= 1, not {args.workers}")
    if args.chunk_size <= 0:
        _fail(parser, f"argument --chunk-size: must be > 0, not {args.chunk_size}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"{PROG}: %(message)s", stream=sys.stderr,
    )
    from ._server import Server

    try:
        server = Server(args, props, fronts)
    except SourceError as exc:
        _fail(parser, str(exc))
    try:
        trio.run(server.run)
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _signals() -> tuple[int, ...]:
    return (signal.SIGINT, signal.SIGTERM)
