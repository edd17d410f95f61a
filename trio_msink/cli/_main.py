"""``trio-msink``: serve a stream to TCP, HTTP and WebSocket clients at once."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

import trio

from .. import PropertyTypeError, PropertyValueError, Sink
from ..framing import DEFAULT_CHUNK_SIZE, FORMATS
from ..fronts.http import DEFAULT_HEADER_TIMEOUT
from ._defaults import describe_default, format_defaults
from ._errors import CommandError
from ._options import add_sink_flags, explicit_properties, flag_of, sink_properties
from ._security import add_security_flags
from ._sources import SourceError, add_source_flags, parse_host_port

__all__ = ["main"]

PROG = "trio-msink"

# `demo`: the serve defaults for MPEG-TS (players join on the newest
# keyframe, a client more than 5 s behind is resynced on a keyframe, one that
# stops reading is removed after 10 s), plus 2 s of history so that a joining
# player has a keyframe at once, and a short linger for a quick Ctrl-C.
DEMO_EXTRAS: dict[str, Any] = {"time_min": 2.0, "linger": 2.0}
# With no front flag: tcpserversink's default port, on loopback.
DEFAULT_TCP = ("127.0.0.1", 4953)
DEMO_FRONTS = {"tcp": "127.0.0.1:9000", "http": "127.0.0.1:8080", "ws": "127.0.0.1:8081"}


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are the one-line usage and one error line, as
    ``trio-msink: error: ...`` (argparse would print the whole usage, 40
    lines with every sink flag, and its own prog with the subcommand)."""

    #: The parser of each subcommand, whose usage line its flag errors show.
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"usage: {self.prog} {self._short_usage()}\n{PROG}: error: {message}\n")

    def _short_usage(self) -> str:
        return self.usage.replace("%(prog)s ", "", 1) if self.usage else "..."


def _version() -> str:
    try:
        return metadata.version("trio-msink")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        from .. import __version__

        return __version__


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG, usage="%(prog)s {serve,demo} [options]",
        description="Fan a live stream out to TCP, HTTP and WebSocket clients.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve SOURCE to clients", prog=f"{PROG} serve",
                           usage="%(prog)s [SOURCE] [options]")
    serve.add_argument("source", nargs="?", default="-", metavar="SOURCE",
                       help="-, a file, tcp://HOST:PORT, http://HOST:PORT/PATH or test "
                            "(default: -, stdin)")
    _add_server_flags(serve)
    add_security_flags(serve)
    add_source_flags(serve)
    add_sink_flags(serve)
    demo = sub.add_parser("demo", help="serve the test stream on TCP 9000, HTTP 8080, WS 8081",
                          prog=f"{PROG} demo", usage="%(prog)s [options]")
    _add_server_flags(demo, DEMO_FRONTS)
    add_security_flags(demo)
    add_sink_flags(demo, _describe_demo_default)
    parser.commands = {"serve": serve, "demo": demo}
    return parser


def _describe_demo_default(name: str) -> str | None:
    if name in DEMO_EXTRAS:
        return f"{DEMO_EXTRAS[name]:g}"
    return describe_default(name, "mpegts")


def _stream_format(args: argparse.Namespace) -> str:
    """The format the initial Sink's defaults are for (``auto``: undetected)."""
    if args.source == "test" and args.format == "auto":
        return "mpegts"  # the test pattern is MPEG-TS
    return str(args.format)


def command_properties(args: argparse.Namespace) -> dict[str, Any]:
    """The initial Sink's properties: the flags given, else the command's
    defaults for the stream's format (and demo's), else the Sink's."""
    explicit: frozenset[str] = args.explicit_properties
    defaults = format_defaults(_stream_format(args), explicit)
    if args.command == "demo":
        defaults.update({k: v for k, v in DEMO_EXTRAS.items() if k not in explicit})
    return sink_properties(args, defaults)


def _add_server_flags(parser: argparse.ArgumentParser,
                      fronts: dict[str, str] | None = None) -> None:
    fronts = fronts or {}

    def default(front: str) -> str:
        if front in fronts:
            return f" (default: {fronts[front]})"
        if front == "tcp":
            return f" (default: {DEFAULT_TCP[0]}:{DEFAULT_TCP[1]} when no front is given)"
        return ""

    parser.add_argument("--tcp", metavar="HOST:PORT", default=fronts.get("tcp"),
                        help="serve raw stream bytes on this TCP address" + default("tcp"))
    parser.add_argument("--http", metavar="HOST:PORT", default=fronts.get("http"),
                        help="serve HTTP (/stream, /stats, /) on this address" + default("http"))
    parser.add_argument("--ws", metavar="HOST:PORT", default=fronts.get("ws"),
                        help="serve WebSocket clients on this address" + default("ws"))
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="framing of the input (default: auto)")
    parser.add_argument("--fps", type=float, default=None, metavar="F",
                        help="pictures per second of an H.264 elementary stream, which has "
                             "no timestamps: paces it and gives the time limits a clock "
                             "(default: none)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="BYTES",
                        help="buffer size for --format raw (default: %(default)s)")
    parser.add_argument("--content-type", default=None,
                        help="Content-Type of HTTP /stream (default: from --format, "
                             "or from the detected format with auto)")
    parser.add_argument("--test-seconds", type=float, default=None, metavar="S",
                        help="with SOURCE test: stop after S seconds (default: never)")
    parser.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT,
                        metavar="S", help="seconds an HTTP client has to send its request "
                                          "headers (default: %(default)g)")
    parser.add_argument("--workers", type=int, default=1, metavar="K",
                        help="serve clients from K processes (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug details; on a failure, print its traceback too")


def _check_flags(command: argparse.ArgumentParser, args: argparse.Namespace,
                 props: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Validate every flag before anything starts; returns the fronts."""
    try:
        Sink(**props)
    except (PropertyValueError, PropertyTypeError) as exc:
        command.error(f"argument {flag_of(exc.name)}: {exc}")
    fronts: dict[str, tuple[str, int]] = {}
    for front in ("tcp", "http", "ws"):
        value = getattr(args, front)
        if value is not None:
            try:
                fronts[front] = parse_host_port(value, f"argument --{front}")
            except SourceError as exc:
                command.error(str(exc))
    if not fronts:
        fronts["tcp"] = DEFAULT_TCP
    if args.workers < 1:
        command.error(f"argument --workers: must be >= 1, not {args.workers}")
    if args.chunk_size <= 0:
        command.error(f"argument --chunk-size: must be > 0, not {args.chunk_size}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        command.error(f"argument --fps: must be a number > 0, not {args.fps:g}")
    return fronts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 at the end of the input or
    on SIGINT/SIGTERM, 1 for a failure while running, 2 for a bad flag).

    A failure prints one line, ``trio-msink: error: <what failed>: <why>``,
    and its traceback only with ``-v``.
    """
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    command = parser.commands[args.command]
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "demo":
        args.source = "test"
    args.explicit_properties = explicit_properties(args)
    props = command_properties(args)
    fronts = _check_flags(command, args, props)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"{PROG}: %(message)s", stream=sys.stderr,
    )
    try:
        from ._server import Server

        try:
            server = Server(args, props, fronts)
        except SourceError as exc:
            command.error(str(exc))
        trio.run(server.run)
    except SystemExit:
        raise
    except BaseException as exc:  # every failure becomes one line (traceback with -v)
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in _leaves(exc)):
            return 0  # Ctrl-C before the signal handler took over: a stop, not a failure
        return _report(exc, verbose=args.verbose)
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def failure_line(exc: BaseException) -> str:
    """``<what failed>: <why>`` for an exception that ended the command: the
    first :exc:`CommandError` inside it (through exception groups), else the
    first :exc:`OSError`, else the first exception, named as unexpected."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, (CommandError, SourceError)):
            return str(leaf)
    for leaf in leaves:
        if isinstance(leaf, OSError):
            why = _lower_first(leaf.strerror or str(leaf))
            return why if leaf.filename is None else f"{leaf.filename}: {why}"
    first = leaves[0] if leaves else exc
    return f"unexpected {type(first).__name__}: {first} (-v shows the traceback)"


def _lower_first(text: str) -> str:
    """``Address already in use`` → ``address already in use`` (not ``IPv6 ...``)."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def _report(exc: BaseException, *, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{PROG}: error: {failure_line(exc)}", file=sys.stderr, flush=True)
    return 1
