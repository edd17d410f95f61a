"""Shared test helpers: the buffers, client streams, sockets and callback
recorder that the tests of several rules use.

Conventions of the rule tests: ``b(n)`` is buffer number n, 10 bytes unless
stated, and ``bs(...)`` what a client reads after some of them; ``k0`` /
``d1`` (``frame``, ``frames``, ``payload``) are a keyframe / a delta unit. A
"prompt" client is a :class:`RecordingStream` that writes at once; a client
whose "stream blocks inside send_all(x)" is a stalled RecordingStream that has
been given ``x``: ``x`` is being written, so it is neither waiting nor part of
the lag (docs/semantics.rst, "The model: one history, one cursor per client").
Over real sockets, buffers are self-describing frames (``seq_frame``) whose
order and wholeness a reader checks byte for byte.

Where the tests of a rule are (each rule is a section of docs/semantics.rst):

* where a new client starts: test_placement.py; in the core,
  test_core_placement.py
* how much history is kept: test_retention.py
* limits and soft-limit recovery: test_limits_recovery.py
* timeout: test_timeout.py
* remove_flush: test_remove_flush.py; remove and clear:
  test_remove_and_clear.py
* add, serve, duplicates, callback order, who closes streams:
  test_lifecycle_callbacks.py
* leaving the block (linger, exceptions, cancellation): test_shutdown_linger.py
* whole buffers in order, segments, partial writes: test_socket_writes.py
* peers that close and streams that fail: test_peer_close_and_errors.py;
  bytes peers write: test_peer_messages.py
* streamheaders: test_streamheader.py; sync pacing: test_clock.py;
  refused arguments: test_validation.py; batching: test_batching.py
* TLS: test_tls.py; DSCP: test_dscp.py; fronts: test_front_*.py
* who may watch and how many (docs/security.md): test_access.py (the
  policy), test_front_access.py (at the fronts), test_security_cli.py (the
  command: tokens, TLS with real clients, a low fd limit),
  test_security_proxy.py (behind HAProxy)
* the pure core: test_core_log.py (BufferLog), test_core_history.py
  (History), and test_history_model.py (History against a brute-force model)
"""

from __future__ import annotations

import signal
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from trio_msink import Buffer, ClientStats, ClientStatus, Format, Sink
from trio_msink._log import BufferLog
from trio_msink.framing import Framer

# -- hang guard ----------------------------------------------------------------


class Spinning(BaseException):
    """A test ran far past its ``trio.fail_after``: some task is spinning
    without a checkpoint, so Trio's own deadline can never fire."""


@pytest.fixture
def no_spin() -> Iterator[None]:
    """Turn a task that spins without checkpoints into a failure, not a hung suite
    (use it with ``pytestmark = pytest.mark.usefixtures("no_spin")``).

    A BaseException, so that the sink's ``except Exception`` around client
    I/O cannot swallow it."""

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Spinning("no checkpoint for 15 s: a task is spinning")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 15)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- buffers -------------------------------------------------------------------


def b(n: int, size: int = 10) -> bytes:
    """Buffer number ``n``: distinct, recognisable bytes, ``size`` long."""
    return f"b{n}".encode().ljust(size, b".")


def bs(*numbers: int, size: int = 10) -> bytes:
    """What a client reads after buffers ``numbers``."""
    return b"".join(b(n, size) for n in numbers)


def frame(name: str, pts: float | None = None) -> Buffer:
    """``"k0"`` is a keyframe, ``"d1"`` a delta unit; 10 bytes each."""
    return Buffer(name.encode().ljust(10, b"."), pts=pts, delta_unit=name.startswith("d"))


def frames(names: str) -> list[Buffer]:
    return [frame(name) for name in names.split()]


def payload(names: str) -> bytes:
    """What a client reads after the frames ``names`` (e.g. ``"k0 d1"``)."""
    return b"".join(name.encode().ljust(10, b".") for name in names.split())


def pts_buffer(pts: float, size: int = 10, *, keyframe: bool = True) -> Buffer:
    """A buffer whose bytes name its PTS (seconds)."""
    return Buffer(f"t{pts:g}".encode().ljust(size, b"."), pts=pts, delta_unit=not keyframe)


_HEADER = struct.Struct("!II")  # sequence number, payload length


def seq_payload(seq: int, size: int) -> bytes:
    return (seq.to_bytes(4, "big") * (size // 4 + 1))[:size]


def seq_frame(seq: int, size: int) -> bytes:
    """One self-describing buffer: header then a payload that depends on ``seq``."""
    return _HEADER.pack(seq, size) + seq_payload(seq, size)


def parse_seq_frames(data: bytes) -> list[int]:
    """The sequence numbers of the whole frames in ``data``; fails on a cut or
    corrupted frame."""
    seqs: list[int] = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= _HEADER.size, f"frame header cut at byte {pos}"
        seq, size = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        assert data[pos : pos + size] == seq_payload(seq, size), f"frame {seq} cut or corrupted"
        pos += size
        seqs.append(seq)
    return seqs


# -- client streams whose pace the test controls -------------------------------


class RecordingStream(trio.abc.SendStream):
    """A send-only client that records what it is sent.

    While ``stalled`` its ``send_all`` blocks (the buffer being written is
    handed over but not completed) until :meth:`unstall`. ``writes`` holds
    the bytes of each completed ``send_all`` call; ``data`` all bytes.
    """

    def __init__(self, *, stalled: bool = False, fail: BaseException | None = None) -> None:
        self.writes: list[bytes] = []
        self.stalled = stalled
        self.fail = fail
        self.closed = False
        self._unstalled = trio.Event()
        if not stalled:
            self._unstalled.set()
        self.sends_started = 0

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def stall(self) -> None:
        self.stalled = True
        self._unstalled = trio.Event()

    def unstall(self) -> None:
        self.stalled = False
        self._unstalled.set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise trio.ClosedResourceError
        self.sends_started += 1
        if self.fail is not None:
            raise self.fail
        chunk = bytes(data)
        await self._unstalled.wait()
        await trio.lowlevel.checkpoint()
        self.writes.append(chunk)

    async def wait_send_all_might_not_block(self) -> None:
        await self._unstalled.wait()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class SteppedStream(trio.abc.SendStream):
    """A client that completes one ``send_all`` per :meth:`allow` call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._credits = trio.Semaphore(0)

    def allow(self) -> None:
        self._credits.release()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)
        await self._credits.acquire()
        self.writes.append(chunk)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class DelayedStream(trio.abc.SendStream):
    """Takes ``delay`` seconds for every ``send_all``, but always progresses."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.sleep(self.delay)
        self.writes.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


# -- driving the sink ----------------------------------------------------------


async def settle() -> None:
    """Let every task run until all are blocked."""
    await trio.testing.wait_all_tasks_blocked()


async def send_each(sink: Sink, buffers: list[Buffer]) -> None:
    """Send ``buffers`` one by one, letting prompt clients read after each."""
    for buffer in buffers:
        await sink.send(buffer)
        await settle()


def stats(sink: Sink, stream: trio.abc.SendStream) -> ClientStats:
    found = sink.get_stats(stream)
    assert found is not None, "the client is not registered"
    return found


def lag_of(sink: Sink, stream: trio.abc.SendStream) -> int:
    stats = sink.get_stats(stream)
    assert stats is not None, "a client that keeps up was removed"
    return stats.lag_buffers


async def poll_until(predicate: Callable[[], bool]) -> None:
    """Let other tasks (and the kernel) run until ``predicate()`` holds: for
    state no callback announces, such as a client's lag. The caller's
    ``fail_after`` bounds it."""
    while not predicate():
        await trio.lowlevel.checkpoint()


async def send_keeping_up(
    sink: Sink, keeping_up: Sequence[trio.abc.SendStream], buffers: Sequence[Buffer | bytes]
) -> None:
    """Send each buffer, then let the reading clients hand everything to their
    sockets, so that only a client that does not read accumulates lag."""
    for buffer in buffers:
        await sink.send(buffer)
        await poll_until(lambda: all(lag_of(sink, s) == 0 for s in keeping_up))


# -- real sockets on 127.0.0.1 -------------------------------------------------


LOCALHOST = "127.0.0.1"


Address = tuple[Any, ...]  # a socket address, as getpeername() returns it


def socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected pair of real (Unix) stream sockets: (sink side, reader side)."""
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


async def connect(port: int, *, rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP client of 127.0.0.1:``port``, with a receive buffer set before connecting."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((LOCALHOST, port))
    return trio.SocketStream(sock)


async def tcp_pair(
    *, rcvbuf: int | None = None, sndbuf: int | None = None, host: str = LOCALHOST
) -> tuple[trio.SocketStream, trio.SocketStream]:
    """``(server side, client side)`` of one real TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    async with listeners[0] as listener:
        family = listener.socket.family
        port = listener.socket.getsockname()[1]
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((host, port))
        server = await listener.accept()
    if sndbuf is not None:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return server, trio.SocketStream(sock)


def peer_of(stream: trio.abc.SendStream) -> Address:
    """The remote address of a served (server-side) stream, TLS unwrapped."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    return tuple(stream.socket.getpeername())


def name_of(client: trio.SocketStream) -> Address:
    return tuple(client.socket.getsockname())


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await stream.receive_some(size - len(got))
        assert chunk, f"EOF after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


async def read_client_to_eof(port: int, received: dict[Address, bytes]) -> None:
    """Connect, then read until the server closes; store the bytes by address."""
    client = await connect(port)
    async with client:
        received[name_of(client)] = await read_all(client)


@asynccontextmanager
async def serving(
    handler: Callable[[trio.SocketStream], Awaitable[object]],
) -> AsyncIterator[int]:
    """Run ``trio.serve_tcp(handler, 0)`` on 127.0.0.1; yields the port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOCALHOST))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@dataclass(frozen=True)
class TLS:
    server: ssl.SSLContext
    client: ssl.SSLContext

    def server_stream(self, stream: trio.SocketStream) -> trio.SSLStream[trio.SocketStream]:
        """``stream`` as the server side of a TLS connection (localhost's certificate)."""
        return trio.SSLStream(stream, self.server, server_side=True)


@pytest.fixture(scope="session")
def tls() -> TLS:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TLS(server, client)


# -- callbacks -----------------------------------------------------------------


Event = tuple[str, ClientStatus | None]


def lifecycle(status: ClientStatus) -> list[Event]:
    """The callbacks a client gets from its add to its removal."""
    return [("added", None), ("removed", status), ("socket_removed", None)]


ADDED: list[Event] = [("added", None)]


class Events:
    """Records the sink's client callbacks in order, with the Trio time of
    each; waiters wake on every callback.

    ``callbacks()`` gives the keyword arguments that install it on a Sink
    (all four callbacks; ``on_message`` only runs with ``send_messages``).
    """

    def __init__(self) -> None:
        #: ``(callback name, stream, status)`` in the order they ran.
        self.log: list[tuple[str, trio.abc.SendStream, ClientStatus | None]] = []
        self.messages: list[tuple[trio.abc.SendStream, bytes]] = []
        self._times: dict[tuple[str, int], float] = {}
        self._changed = trio.Event()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_client_added": self.on_client_added,
            "on_client_removed": self.on_client_removed,
            "on_client_socket_removed": self.on_client_socket_removed,
            "on_message": self.on_message,
        }

    def _record(self, name: str, stream: trio.abc.SendStream,
                status: ClientStatus | None) -> None:
        self.log.append((name, stream, status))
        self._times[(name, id(stream))] = trio.current_time()
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def on_client_added(self, stream: trio.abc.SendStream) -> None:
        self._record("added", stream, None)

    def on_client_removed(self, stream: trio.abc.SendStream, status: ClientStatus) -> None:
        self._record("removed", stream, status)

    def on_client_socket_removed(self, stream: trio.abc.SendStream) -> None:
        self._record("socket_removed", stream, None)

    def on_message(self, stream: trio.abc.SendStream, data: bytes) -> None:
        self.messages.append((stream, data))
        self._poke()

    # -- what happened ---------------------------------------------------------
    @property
    def added(self) -> list[trio.abc.SendStream]:
        return [s for name, s, _ in self.log if name == "added"]

    @property
    def removed(self) -> list[tuple[trio.abc.SendStream, ClientStatus]]:
        return [(s, status) for name, s, status in self.log
                if name == "removed" and status is not None]

    @property
    def socket_removed(self) -> list[trio.abc.SendStream]:
        return [s for name, s, _ in self.log if name == "socket_removed"]

    @property
    def statuses(self) -> list[ClientStatus]:
        """The statuses of the removals, in order."""
        return [status for _, status in self.removed]

    def of(self, stream: object) -> list[Event]:
        """The callbacks about ``stream``, in order."""
        return [(name, status) for name, s, status in self.log if s is stream]

    def removed_at(self, stream: object) -> float:
        """The Trio time at which ``stream`` was removed."""
        return self._times[("removed", id(stream))]

    def status(self, stream: trio.abc.SendStream) -> ClientStatus | None:
        """The status ``stream`` was removed with; None while registered."""
        found = [status for s, status in self.removed if s is stream]
        assert len(found) <= 1, f"removed more than once: {found}"
        return found[0] if found else None

    def server_for(self, client: trio.SocketStream) -> trio.abc.SendStream:
        """The served stream whose peer is ``client``."""
        (stream,) = [s for s in self.added if peer_of(s) == name_of(client)]
        return stream

    # -- waiting (the caller's fail_after bounds each) ---------------------------
    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_added(self, count: int) -> None:
        await self.wait_for(lambda: len(self.added) >= count)

    async def wait_socket_removed(self, count: int = 1) -> None:
        await self.wait_for(lambda: len(self.socket_removed) >= count)

    async def wait_removed(self, stream: trio.abc.SendStream) -> ClientStatus:
        await self.wait_for(lambda: self.status(stream) is not None)
        status = self.status(stream)
        assert status is not None
        return status


# -- framers -------------------------------------------------------------------


def feed_chunks(framer: Framer, data: bytes, sizes: Sequence[int],
                bound: int = 0) -> list[Buffer]:
    """Feed ``data`` to ``framer`` in pieces of ``sizes`` (cycled), then
    flush; with ``bound``, check after each piece that the framer holds at
    most ``bound`` bytes."""
    out: list[Buffer] = []
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        out += framer.feed(data[pos : pos + size])
        pos, i = pos + size, i + 1
        if bound:
            assert framer.buffered <= bound
    return out + framer.flush()


# -- the pure core -------------------------------------------------------------


def amount(bufs: list[Buffer], fmt: Format, start: int, end: int) -> float:
    """Buffers ``start .. end - 1`` measured as docs/semantics.rst ("The model:
    one history, one cursor per client") defines lag, by brute force."""
    chosen = bufs[start:end]
    if fmt == Format.BYTES:
        return sum(len(b) for b in chosen)
    if fmt == Format.TIME:
        stamps = [b.pts for b in chosen if b.pts is not None]
        return stamps[-1] - stamps[0] if len(stamps) >= 2 else 0.0
    return len(chosen)


def make_log(specs: list[tuple[int, bool, float | None]]) -> BufferLog:
    log = BufferLog()
    for size, key, pts in specs:
        log.append(Buffer(b"x" * size, pts=pts, delta_unit=not key))
    return log
