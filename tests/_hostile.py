"""The hostile-client suite's harness: one ``trio-msink serve`` process fed by
a steady source, a steady ffmpeg viewer, and the measurements every attack
is judged by.

An attack passes when, measured here:

* the server stays up (the process is alive after it);
* a fresh client is served during it: an HTTP ``GET /stream`` gets its
  first TS packet within :data:`FRESH_WITHIN` (1 s) of connecting (if one
  is late, the next must not be: see :func:`fresh_client`);
* afterwards the server's descriptors (``/proc/PID/fd``) return to the
  baseline taken before it, within :data:`FD_SLACK`, and its resident
  memory (``VmRSS`` in ``/proc/PID/status``) to within :data:`RSS_SLACK`
  of it;
* a steady ffmpeg viewer decodes without a word: ffmpeg ``-v error``
  writes nothing once it has decoded its first picture, and it decodes at
  least a quarter of the pictures the source made meanwhile.

The server runs as a plain subprocess owned by a module-scoped fixture (so
one server serves all the attacks of a module); each test talks to it over
loopback with trio.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio
from _server import COMMAND, need_tool

# A fresh viewer gets the streamheader and the latest keyframe from the
# shared history at once; 1 s is the bound (a player's start-up
# budget), far above the milliseconds it takes on an idle machine.
FRESH_WITHIN = 1.0
# A few descriptors may be in flight when the baseline is read (a probe
# closing, the player's reconnect): the point is that the thousands of the
# attack are gone.
FD_SLACK = 8
# CPython keeps freed small objects in its arenas and glibc keeps freed
# heap below the top, so RSS after thousands of connections does not fall
# back to the byte; 32 MiB is far below what a leak of them would keep
# (2,000 connections that each kept one 64 KiB read buffer: 125 MiB).
RSS_SLACK = 32 * 1024 * 1024
# How long the measurements wait for the server to let go of an attack.
RECOVERY = 20.0
# Pictures a second of ``SOURCE test``, the steady source.
SOURCE_FPS = 25
# How often the steady viewer's ffmpeg reports its picture count
# (``-stats_period``): the count the harness sees is up to this old.
PROGRESS_PERIOD = 0.2
# The shortest interval the steady viewer is judged over. An attack can be
# over in less than one PROGRESS_PERIOD (1,000 refused connections take a
# tenth of a second), and over such an interval a healthy viewer may have
# reported no new picture yet; five reports' worth is far from that edge.
VIEWER_WINDOW = 5 * PROGRESS_PERIOD


def raise_fd_limit(wanted: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to ``wanted`` (or the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    """Open descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def port_of(urls: Sequence[str], scheme: str) -> int:
    url = next(u for u in urls if u.startswith(scheme + "://"))
    return int(url.rsplit(":", 1)[1].strip("/"))


# -- the steady viewer ---------------------------------------------------------


@dataclass
class Player:
    """``ffmpeg -v error`` decoding ``url`` to nothing, watched by two threads."""

    url: str
    process: subprocess.Popen[bytes] | None = None
    frames: int = 0
    #: ffmpeg's error lines once it had decoded a picture (must stay empty).
    errors_after_start: list[str] = field(default_factory=list)
    #: Its error lines before (a viewer may join mid-unit; not a failure).
    errors_before_start: list[str] = field(default_factory=list)

    def start(self) -> None:
        ffmpeg = need_tool("ffmpeg")
        self.process = subprocess.Popen(
            [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-progress", "pipe:1",
             "-stats_period", str(PROGRESS_PERIOD), "-i", self.url, "-f", "null", "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        threading.Thread(target=self._progress, daemon=True).start()
        threading.Thread(target=self._errors, daemon=True).start()

    def _progress(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            match = re.match(rb"frame=(\d+)", line)
            if match:
                self.frames = int(match.group(1))

    def _errors(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            text = line.decode(errors="replace").rstrip()
            (self.errors_after_start if self.frames else self.errors_before_start).append(text)

    def wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.frames:
            assert self.process is not None and self.process.poll() is None, self.report()
            assert time.monotonic() < deadline, "ffmpeg decoded nothing: " + self.report()
            time.sleep(0.1)

    def report(self) -> str:
        return (f"frames={self.frames} errors={self.errors_after_start[:5]} "
                f"before={self.errors_before_start[:5]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the server ---------------------------------------------------------------


@dataclass
class Baseline:
    fds: int
    rss: int
    frames: int
    time: float


@dataclass
class HostileServer:
    """A running ``trio-msink serve`` with a steady viewer."""

    process: subprocess.Popen[bytes]
    urls: list[str]
    stderr: bytearray
    player: Player | None = None
    #: What a fresh (authorised) viewer asks the HTTP front for.
    stream_path: str = "/stream"

    @property
    def pid(self) -> int:
        return self.process.pid

    def port(self, scheme: str) -> int:
        return port_of(self.urls, scheme)

    def assert_up(self) -> None:
        assert self.process.poll() is None, (
            f"the server exited ({self.process.returncode}): {self.stderr[-2000:].decode()}")

    async def fresh_client(self) -> float:
        """See :func:`fresh_client`: a viewer of :attr:`stream_path`."""
        return await fresh_client(self.port("http"), path=self.stream_path)

    async def baseline(self) -> Baseline:
        """Descriptors and memory once the previous attack has drained:
        the fd count is read when it has held still for a second."""
        self.assert_up()
        await quiet_fds(self.pid)
        return Baseline(fds(self.pid), rss(self.pid), self.player.frames if self.player else 0,
                        time.monotonic())

    async def check_recovered(self, base: Baseline) -> None:
        """The pass criteria after an attack (see the module docstring)."""
        self.assert_up()
        deadline = trio.current_time() + RECOVERY
        while fds(self.pid) > base.fds + FD_SLACK or rss(self.pid) > base.rss + RSS_SLACK:
            if trio.current_time() > deadline:
                raise AssertionError(
                    f"not back to baseline after {RECOVERY:g} s: fds {fds(self.pid)} "
                    f"(before {base.fds}, slack {FD_SLACK}), rss {rss(self.pid) >> 20} MiB "
                    f"(before {base.rss >> 20} MiB, slack {RSS_SLACK >> 20} MiB)")
            await trio.sleep(0.2)
        # Shown with a failure (and with -s): what was measured.
        print(f"recovered: fds {base.fds} -> {fds(self.pid)}, rss {base.rss >> 20} -> "
              f"{rss(self.pid) >> 20} MiB, viewer frames {base.frames} -> "
              f"{self.player.frames if self.player else None}, "
              f"{time.monotonic() - base.time:.2f} s after the baseline")
        await self.fresh_client()
        if self.player is not None:
            await trio.sleep(max(0.0, VIEWER_WINDOW - (time.monotonic() - base.time)))
            self.check_player(base)

    def check_player(self, base: Baseline) -> None:
        player = self.player
        assert player is not None and player.process is not None
        assert player.process.poll() is None, "the steady viewer stopped: " + player.report()
        assert not player.errors_after_start, "the steady viewer saw errors: " + player.report()
        # At least a quarter of real time since the baseline (the source
        # makes 25 pictures a second): a viewer stalled by the attack for
        # most of it fails, a loaded machine does not. Judged over at least
        # VIEWER_WINDOW (see check_recovered), so never fewer than 6.
        elapsed = time.monotonic() - base.time
        assert elapsed >= VIEWER_WINDOW, f"judged over {elapsed:.2f} s only"
        expected = int(SOURCE_FPS * elapsed / 4)
        assert player.frames - base.frames >= max(1, expected), (
            f"the steady viewer decoded {player.frames - base.frames} pictures in "
            f"{elapsed:.2f} s, {expected} expected at least: " + player.report())


async def quiet_fds(pid: int, still: float = 1.0, limit: float = RECOVERY) -> None:
    """Wait until the descriptor count of ``pid`` has not changed for ``still`` s."""
    deadline = trio.current_time() + limit
    last, since = fds(pid), trio.current_time()
    while trio.current_time() - since < still and trio.current_time() < deadline:
        await trio.sleep(0.1)
        now = fds(pid)
        if now != last:
            last, since = now, trio.current_time()


def start_server(args: Sequence[str], *, fronts: int, nofile: int | None = None,
                 timeout: float = 60.0) -> HostileServer:
    """Start ``trio-msink ARGS`` (with at most ``nofile`` descriptors) and
    wait for its ``fronts`` URL lines."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen([*COMMAND, *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=limit)
    stderr = bytearray()

    def collect() -> None:
        assert process.stderr is not None
        for chunk in iter(lambda: process.stderr.read1(65536), b""):  # type: ignore[union-attr]
            stderr.extend(chunk)

    threading.Thread(target=collect, daemon=True).start()
    urls: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while len(urls) < fronts:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"server exited early: {stderr.decode()}")
        urls.append(line.decode().strip())
    return HostileServer(process, urls, stderr)


def stop_server(server: HostileServer) -> None:
    if server.player is not None:
        server.player.stop()
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def serving(args: Sequence[str], *, fronts: int, player: bool = True,
            nofile: int | None = None, stream_path: str = "/stream",
            ) -> Iterator[HostileServer]:
    """A server (and its steady viewer on ``stream_path`` of the HTTP front)."""
    server = start_server(args, fronts=fronts, nofile=nofile)
    server.stream_path = stream_path
    try:
        if player:
            server.player = Player(f"http://127.0.0.1:{server.port('http')}{stream_path}")
            server.player.start()
            server.player.wait_started()
        yield server
    finally:
        stop_server(server)


# -- clients -----------------------------------------------------------------------


async def first_packet(port: int, path: str) -> float:
    """An HTTP viewer of ``path``: seconds from connecting to its first TS packet."""
    start = trio.current_time()
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            data = b""
            while True:
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep and len(body) >= 188:  # a close-delimited body: TS packets
                    break
                chunk = await stream.receive_some()
                assert chunk, f"closed before the first packet: {data[:200]!r}"
                data += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body[0] == 0x47, body[:32]
    return trio.current_time() - start


async def fresh_client(port: int, *, path: str = "/stream") -> float:
    """A fresh viewer gets its first TS packet within :data:`FRESH_WITHIN`;
    its time. One more viewer is tried if the first one is late, so that a
    single scheduling hiccup of a loaded machine is not taken for the
    server's fault; two late viewers in a row are an AssertionError."""
    took = await first_packet(port, path)
    if took > FRESH_WITHIN:
        retried = await first_packet(port, path)
        assert retried <= FRESH_WITHIN, (
            f"fresh clients waited {took:.2f} s and {retried:.2f} s for their first packet")
        took = retried
    print(f"fresh client: first packet after {took * 1000:.0f} ms")
    return took


async def connect_many(port: int, count: int, *, first: bytes = b"",
                       setup: Callable[[socket.socket], None] | None = None,
                       source: str | None = None) -> list[trio.SocketStream]:
    """``count`` connections to ``port`` (from the loopback address
    ``source``, if given), each sent ``first``; made 100 at a time, so that
    the listen backlog never overflows."""
    streams: list[trio.SocketStream] = []

    async def one() -> None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if setup is not None:
            setup(sock)  # type: ignore[arg-type]
        if source is not None:
            await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        if first:
            await stream.send_all(first)
        streams.append(stream)

    for start in range(0, count, 100):
        async with trio.open_nursery() as nursery:
            for _ in range(min(100, count - start)):
                nursery.start_soon(one)
    return streams


def small_receive_buffer(sock: socket.socket) -> None:
    """A client that reads nothing holds little: the server's writes block soon."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def reset_on_close(sock: socket.socket) -> None:
    """close() sends RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def close_all(streams: list[trio.SocketStream]) -> None:
    for stream in streams:
        await trio.aclose_forcefully(stream)
    streams.clear()
