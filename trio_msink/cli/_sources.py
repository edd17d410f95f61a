"""Where the served stream comes from: stdin, a file, a TCP server, or the
built-in test pattern. Each source is an async iterator of byte chunks."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncGenerator

import trio

__all__ = ["SourceError", "open_source", "parse_host_port"]

_CHUNK = 64 * 1024


class SourceError(ValueError):
    """A SOURCE argument that cannot be used."""


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → ``(host, port)``; ValueError naming ``what``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SourceError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port_text)


async def _read_fd(fd: int) -> AsyncGenerator[bytes, None]:
    os.set_blocking(fd, False)
    stream = trio.lowlevel.FdStream(os.dup(fd))
    async with stream:
        while data := await stream.receive_some(_CHUNK):
            yield data


async def _read_file(path: str) -> AsyncGenerator[bytes, None]:
    async with await trio.open_file(path, "rb") as f:
        while data := await f.read(_CHUNK):
            yield data


async def _read_tcp(host: str, port: int) -> AsyncGenerator[bytes, None]:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        while data := await stream.receive_some(_CHUNK):
            yield data


async def _read_test(fps: int, seconds: float | None) -> AsyncGenerator[bytes, None]:
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


def open_source(spec: str, *, test_fps: int = 25,
                test_seconds: float | None = None) -> AsyncGenerator[bytes, None]:
    """The byte chunks of SOURCE: ``-``, a path, ``tcp://HOST:PORT`` or ``test``."""
    if spec == "-":
        return _read_fd(sys.stdin.fileno())
    if spec == "test":
        try:
            import av  # noqa: F401
        except ImportError:
            raise SourceError("SOURCE test needs PyAV: pip install 'trio-msink[server]'") from None
        return _read_test(test_fps, test_seconds)
    if spec.startswith("tcp://"):
        host, port = parse_host_port(spec[len("tcp://"):].rstrip("/"), "SOURCE")
        return _read_tcp(host, port)
    if "://" in spec:
        raise SourceError(f"SOURCE: unsupported scheme in {spec!r} (use -, a path, "
                          "tcp://HOST:PORT or test)")
    if not os.path.isfile(spec):
        raise SourceError(f"SOURCE: no such file: {spec!r}")
    return _read_file(spec)
