"""Helpers of the source tests (test_sources, test_ingest, test_relay_tree):
collecting what a source task sends, recording and decoding what a relay's
players get."""

from __future__ import annotations

import random
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from trio_msink.cli._sources import Item, Source, Upstream

# A pause in arrival longer than this is a gap (the stream runs at 25 fps).
_GAP = 0.8

def free_port() -> int:
    """A port on 127.0.0.1 that nothing uses now, for a server that is
    restarted on the same port. It is taken below the kernel's ephemeral
    range (32768 and up on Linux), so that the outgoing connections of
    other tests on a busy machine cannot take it while the server is down."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Collector:
    """Runs a source and keeps what it sends, with a wake-up per item."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.changed = trio.Event()

    async def run(self, source: Source) -> None:
        send, receive = trio.open_memory_channel[Item](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(source.run, send)
            async for item in receive:
                self.items.append(item)
                self.changed.set()
                self.changed = trio.Event()

    async def wait_for(self, check: Callable[[list[Item]], bool]) -> None:
        while not check(self.items):
            await self.changed.wait()

    async def run_until_upstreams(self, source: Source, count: int) -> None:
        """Run ``source`` until it has announced ``count`` upstreams (the
        first connection and each reconnect), then stop it."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.run, source)
            await self.wait_for(lambda items: len(
                [i for i in items if isinstance(i, Upstream)]) >= count)
            nursery.cancel_scope.cancel()

    def data(self) -> bytes:
        return b"".join(i for i in self.items if isinstance(i, bytes))

    def upstreams(self) -> list[str]:
        return [i.spec for i in self.items if isinstance(i, Upstream)]


async def until(check: Callable[[], bool]) -> None:
    """Poll ``check`` (for state that has no event to wait on)."""
    while True:
        if check():
            return
        await trio.sleep(0.02)


@dataclass
class Player:
    """A TCP client of a relay that records what arrives, and when."""

    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    async def run(self, port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            while data := await stream.receive_some(65536):
                self.chunks.append((trio.current_time(), data))
                self.arrived.set()
                self.arrived = trio.Event()

    async def next_data_after(self, when: float) -> float:
        """When the first bytes after ``when`` arrived (waits for them)."""
        while True:
            for t, _ in self.chunks:
                if t > when:
                    return t
            await self.arrived.wait()

    async def wait_bytes(self, count: int) -> None:
        start = self.received
        while self.received - start < count:
            await self.arrived.wait()

    @property
    def received(self) -> int:
        return sum(len(c) for _, c in self.chunks)

    def segments(self) -> list[bytes]:
        """The recorded stream cut at each gap."""
        parts: list[bytearray] = []
        last = -1e9
        for t, data in self.chunks:
            if t - last > _GAP or not parts:
                parts.append(bytearray())
            parts[-1] += data
            last = t
        return [bytes(p) for p in parts]


@dataclass
class FfmpegPlayer:
    """A real player on a relay: ffmpeg decoding the live stream, one
    ``framecrc`` line per decoded picture; records when each came and
    every error ffmpeg prints."""

    frames: list[float] = field(default_factory=list)
    errors: bytearray = field(default_factory=bytearray)
    process: trio.Process | None = None

    async def run(self, ffmpeg: str, url: str) -> None:
        self.process = await trio.lowlevel.open_process(
            [ffmpeg, "-hide_banner", "-v", "error", "-probesize", "100000",
             "-analyzeduration", "500000", "-i", url, "-map", "0:v", "-f", "framecrc",
             "-flush_packets", "1", "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._errors)
                pending = b""
                assert self.process.stdout is not None
                async for chunk in self.process.stdout:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    now = trio.current_time()
                    self.frames += [now for line in lines if line and not line.startswith(b"#")]
        finally:
            with trio.CancelScope(shield=True):
                self.process.kill()
                await self.process.wait()

    async def _errors(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.errors += chunk

    def frames_after(self, when: float) -> int:
        return sum(1 for t in self.frames if t > when)


def decode(ffmpeg: str, data: bytes) -> tuple[int, str]:
    """Decode ``data`` (MPEG-TS) with ffmpeg; (frames decoded, error output)."""
    with tempfile.NamedTemporaryFile(suffix=".ts") as f:
        f.write(data)
        f.flush()
        result = subprocess.run(
            [ffmpeg, "-hide_banner", "-v", "error", "-i", f.name, "-map", "0:v",
             "-f", "framecrc", "-"],
            capture_output=True, text=True, timeout=60, check=False)
    frames = sum(1 for line in result.stdout.splitlines() if line and not line.startswith("#"))
    return frames, result.stderr.strip() + ("" if result.returncode == 0 else " (failed)")


def check_player(ffmpeg: str, player: Player, gaps: int) -> None:
    """What a player that stayed connected got decodes without a single
    error, as one stream (as the player decoded it live), and there are
    frames after each of at least ``gaps`` gaps.

    A piece after a gap may begin with the last frame from before the gap
    (the relay held it until the next frame began), so the pieces are
    checked for frames only: decoding one on its own may complain about
    that first frame, which the live player decoded with what came before.
    """
    frames, errors = decode(ffmpeg, b"".join(data for _, data in player.chunks))
    assert errors == "" and frames >= 50, (frames, errors)
    segments = player.segments()
    assert len(segments) >= gaps + 1, [len(s) for s in segments]
    for segment in segments:
        assert decode(ffmpeg, segment)[0] >= 10
