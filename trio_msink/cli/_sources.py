"""Where the served stream comes from, and the flags that say so.

A source is any of:

* finite: ``-`` (stdin), a file, ``test`` (the built-in pattern; finite
  with ``--test-seconds``): their end is the end of the stream;
* pulled from the network: ``tcp://HOST:PORT``, ``http://HOST:PORT/PATH``
  (:mod:`._upstream`), reconnected forever unless ``--reconnect-max``; with
  several, the next one is the fallback of the one before;
* pushed to us: ``--ingest tcp://HOST:PORT`` or ``--ingest
  http://HOST:PORT/PATH`` (:mod:`._ingest`), one publisher at a time.

Every source runs as one task that sends :data:`Item` objects into a
channel: byte chunks, and an :class:`Upstream` marker before the first
chunk of each new connection or publisher (the framer restarts there).
The task returns only at the real end of a finite source; a spec that can
never work raises :exc:`SourceError` before anything is served.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from ._errors import CommandError
from ._source_state import SourceStatus

__all__ = [
    "READ_SIZE",
    "Item",
    "NetSpec",
    "Source",
    "SourceError",
    "Upstream",
    "add_source_flags",
    "describe_error",
    "listen_error",
    "log_change",
    "open_source",
    "parse_host_port",
    "parse_net_spec",
]

logger = logging.getLogger("trio_msink.cli")

#: Bytes asked for per read from any source (a socket, a pipe, a file).
READ_SIZE = 64 * 1024
# Seconds an upstream may stay silent before it counts as lost. A live
# stream sends several packets a second; 10 s covers a congested link and
# the longest GOP a live encoder uses, like ffmpeg's rw_timeout advice and
# MediaMTX's readTimeout (10 s).
DEFAULT_SOURCE_TIMEOUT = 10.0


class SourceError(CommandError, ValueError):
    """A source that cannot be used (a bad spec, a missing file), or one
    given up on (``--reconnect-max``). The message names it first."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """Marker: the chunks after it come from a new connection or publisher
    (``spec``, with ``detail`` such as the publisher's address)."""

    spec: str
    detail: str = ""


#: What a source task sends: a chunk of bytes, or the start of a new upstream.
Item = bytes | Upstream


class Source(Protocol):
    """One running source (see the module docstring)."""

    status: SourceStatus

    async def listen(self) -> str | None:
        """Open the source's listening sockets, if it has any (push ingest),
        and return the URL publishers use; CommandError if that fails."""
        ...

    async def run(self, send: trio.MemorySendChannel[Item]) -> None:
        """Send the stream into ``send`` and close it at the real end of a
        finite source; network sources return only when cancelled."""
        ...


@dataclass(frozen=True, slots=True)
class NetSpec:
    """A parsed ``tcp://HOST:PORT`` or ``http://HOST:PORT/PATH``."""

    scheme: str
    host: str
    port: int
    path: str
    text: str

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def log_change(line: str | None) -> None:
    """Log one line per source state change (``None``: no change)."""
    if line is not None:
        logger.info("%s", line)


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → ``(host, port)``; SourceError naming ``what``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SourceError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port_text)


def parse_net_spec(text: str, what: str) -> NetSpec:
    """``tcp://HOST:PORT`` or ``http://HOST[:PORT]/PATH`` (port 80 by
    default); SourceError naming ``what`` for anything else."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("tcp", "http"):
        raise SourceError(f"{what}: unsupported URL {text!r} (use tcp://HOST:PORT or "
                          "http://HOST:PORT/PATH)")
    if scheme == "tcp":
        host, port = parse_host_port(rest.rstrip("/"), f"{what} {text}")
        return NetSpec("tcp", host, port, "", text)
    authority, slash, path = rest.partition("/")
    if "@" in authority or "?" in authority or "#" in authority:
        raise SourceError(f"{what}: unsupported URL {text!r} (no user info or query "
                          "before the path)")
    if authority.endswith("]") or ":" not in authority.lstrip("[").split("]")[-1]:
        authority += ":80"
    host, port = parse_host_port(authority, f"{what} {text}")
    return NetSpec("http", host, port, "/" + path if slash else "/", text)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the source: fallback sources (after SOURCE), ``--ingest``,
    ``--source-timeout``, ``--reconnect-max``. (``demo`` has none: its
    source is the built-in pattern; :func:`open_source` uses the defaults.)"""
    parser.add_argument("fallbacks", nargs="*", metavar="FALLBACK", default=[],
                        help="more tcp:// or http:// sources, tried in turn when the one "
                             "before fails (the first is preferred when it is back)")
    group = parser.add_argument_group("source options")
    group.add_argument("--ingest", metavar="URL", default=None,
                       help="instead of SOURCE, accept one publisher pushing the stream to "
                            "tcp://HOST:PORT or http://HOST:PORT/PATH (PUT or POST)")
    group.add_argument("--source-timeout", type=float, default=DEFAULT_SOURCE_TIMEOUT,
                       metavar="S", help="a network source or publisher silent for S seconds "
                                         "is lost (0: never; default: %(default)s)")
    group.add_argument("--reconnect-max", type=int, default=None, metavar="N",
                       help="give up (exit 1) after N failed connection attempts in a row "
                            "(default: retry forever)")


class _FiniteSource:
    """stdin, a file or the test pattern: one upstream, then the end."""

    def __init__(self, spec: str, open_chunks: Callable[[], AsyncIterator[bytes]]) -> None:
        self.status = SourceStatus(spec)
        self._open = open_chunks

    async def listen(self) -> str | None:
        return None

    async def run(self, send: trio.MemorySendChannel[Item]) -> None:
        async with send:
            log_change(self.status.live(self.status.spec, trio.current_time()))
            await send.send(Upstream(self.status.spec))
            try:
                async for chunk in self._open():
                    self.status.received(len(chunk), trio.current_time())
                    await send.send(chunk)
            except OSError as exc:
                raise SourceError(f"SOURCE {self.status.spec}: {describe_error(exc)}") from exc
            log_change(self.status.ended(trio.current_time()))


async def _read_fd(fd: int) -> AsyncIterator[bytes]:
    os.set_blocking(fd, False)
    stream = trio.lowlevel.FdStream(os.dup(fd))
    async with stream:
        while data := await stream.receive_some(READ_SIZE):
            yield data


async def _read_file(path: str) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as f:
        while data := await f.read(READ_SIZE):
            yield data


async def _read_test(fps: int, seconds: float | None) -> AsyncIterator[bytes]:
    from ._testsource import TestPattern

    pattern = TestPattern(fps=fps)
    start = trio.current_time()
    frame = 0
    while seconds is None or frame < seconds * fps:
        await trio.sleep_until(start + frame / fps)
        data = pattern.frame()
        frame += 1
        if data:
            yield data
    yield pattern.close()


def open_source(args: argparse.Namespace) -> Source:
    """The source the parsed flags name; SourceError if it can never work.

    Reads ``args.source``, ``args.fallbacks``, ``args.ingest``,
    ``args.source_timeout``, ``args.reconnect_max`` and
    ``args.test_seconds``.
    """
    spec: str = args.source
    fallbacks: list[str] = list(getattr(args, "fallbacks", None) or [])
    ingest: str | None = getattr(args, "ingest", None)
    timeout = float(getattr(args, "source_timeout", DEFAULT_SOURCE_TIMEOUT))
    attempts: int | None = getattr(args, "reconnect_max", None)
    if not timeout >= 0:
        raise SourceError(f"--source-timeout: must be >= 0 seconds, not {timeout}")
    if attempts is not None and attempts < 1:
        raise SourceError(f"--reconnect-max: must be >= 1, not {attempts}")
    if ingest is not None:
        if spec != "-" or fallbacks:
            raise SourceError(f"--ingest {ingest}: replaces SOURCE; give one or the other")
        from ._ingest import IngestSource

        return IngestSource(parse_net_spec(ingest, "--ingest"), timeout=timeout)
    if "://" in spec or fallbacks:
        from ._upstream import PullSource

        specs = [parse_net_spec(s, "SOURCE") for s in [spec, *fallbacks]]
        return PullSource(specs, timeout=timeout, max_attempts=attempts)
    if spec == "-":
        return _FiniteSource("-", lambda: _read_fd(sys.stdin.fileno()))
    if spec == "test":
        try:
            import av  # noqa: F401
        except ImportError:
            raise SourceError("SOURCE test needs PyAV: pip install 'trio-msink[server]'") from None
        seconds = args.test_seconds
        return _FiniteSource("test", lambda: _read_test(25, seconds))
    if not os.path.isfile(spec):
        raise SourceError(f"SOURCE: no such file: {spec!r}")
    if not os.access(spec, os.R_OK):
        raise SourceError(f"SOURCE {spec}: permission denied")
    return _FiniteSource(spec, lambda: _read_file(spec))


def describe_error(exc: BaseException) -> str:
    """A short, lower-case reason for people: ``connection refused``,
    ``cannot resolve host``, ``timed out``..."""
    if isinstance(exc, socket.gaierror):
        return "cannot resolve host"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, OSError):
        if exc.errno is not None:  # trio's strerror also names the address
            return os.strerror(exc.errno).lower()
        if exc.strerror:
            return exc.strerror.lower()
        cause = exc.__cause__
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            return describe_error(cause.exceptions[-1])
        if cause is not None:
            return describe_error(cause)
    return str(exc) or type(exc).__name__


def listen_error(what: str, exc: OSError) -> CommandError:
    """The one-line error for a listening socket that could not be opened."""
    if exc.errno == errno.EADDRINUSE:
        reason = "address already in use"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason = "address not available on this machine"
    else:
        reason = describe_error(exc)
    return CommandError(f"{what}: {reason}")
