"""The Sink over real sockets on 127.0.0.1 (TCP and TLS), and the timing rules
(timeout, linger) under Trio's mock clock.

Every socket test is bounded by ``trio.fail_after``; nothing waits on wall-clock
sleeps. Stream buffers are *frames*: an 8-byte header (sequence number, payload
length) and a payload derived from the sequence number, so a reader can check
order, wholeness and content byte for byte.
"""

from __future__ import annotations

import errno
import itertools
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from conftest import RecordingStream, settle

from trio_msink import Buffer, ClientStatus, RecoverPolicy, Sink

LOCALHOST = "127.0.0.1"
Address = tuple[Any, ...]

# -- frames --------------------------------------------------------------------

_HEADER = struct.Struct("!II")  # sequence number, payload length


def payload(seq: int, size: int) -> bytes:
    return (seq.to_bytes(4, "big") * (size // 4 + 1))[:size]


def frame(seq: int, size: int) -> bytes:
    """One self-describing buffer: header then a payload that depends on ``seq``."""
    return _HEADER.pack(seq, size) + payload(seq, size)


def parse_frames(data: bytes) -> list[int]:
    """The sequence numbers of the whole frames in ``data``; fails on a cut or
    corrupted frame."""
    seqs: list[int] = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= _HEADER.size, f"frame header cut at byte {pos}"
        seq, size = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        assert data[pos : pos + size] == payload(seq, size), f"frame {seq} cut or corrupted"
        pos += size
        seqs.append(seq)
    return seqs


# -- sockets -------------------------------------------------------------------


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


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


async def read_exactly(stream: trio.abc.ReceiveStream, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        assert chunk, f"EOF after {len(data)} of {count} bytes"
        data += chunk
    return bytes(data)


async def poll_until(predicate: Callable[[], bool]) -> None:
    """Let other tasks (and the kernel) run until ``predicate()`` holds: for
    state no callback announces, such as a client's lag. The caller's
    ``fail_after`` bounds it."""
    while not predicate():
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def serving(
    handler: Callable[[trio.SocketStream], Awaitable[object]],
) -> AsyncIterator[int]:
    """Run ``trio.serve_tcp(handler, 0)`` on 127.0.0.1; yields the port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=LOCALHOST))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


class CallbackLog:
    """Records the sink's callbacks; waiters wake on each one."""

    def __init__(self) -> None:
        self.added: list[trio.abc.SendStream] = []
        self.removed: list[tuple[trio.abc.SendStream, ClientStatus]] = []
        self.socket_removed: list[trio.abc.SendStream] = []
        self.messages: list[tuple[trio.abc.SendStream, bytes]] = []
        self._changed = trio.Event()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_client_added": self.on_client_added,
            "on_client_removed": self.on_client_removed,
            "on_client_socket_removed": self.on_client_socket_removed,
            "on_message": self.on_message,
        }

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def on_client_added(self, stream: trio.abc.SendStream) -> None:
        self.added.append(stream)
        self._poke()

    def on_client_removed(self, stream: trio.abc.SendStream, status: ClientStatus) -> None:
        self.removed.append((stream, status))
        self._poke()

    def on_client_socket_removed(self, stream: trio.abc.SendStream) -> None:
        self.socket_removed.append(stream)
        self._poke()

    def on_message(self, stream: trio.abc.SendStream, data: bytes) -> None:
        self.messages.append((stream, data))
        self._poke()

    def status(self, stream: trio.abc.SendStream) -> ClientStatus | None:
        found = [status for s, status in self.removed if s is stream]
        assert len(found) <= 1, f"removed more than once: {found}"
        return found[0] if found else None

    def server_for(self, client: trio.SocketStream) -> trio.abc.SendStream:
        """The served stream whose peer is ``client``."""
        (stream,) = [s for s in self.added if peer_of(s) == name_of(client)]
        return stream

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_added(self, count: int) -> None:
        await self.wait_for(lambda: len(self.added) >= count)

    async def wait_removed(self, stream: trio.abc.SendStream) -> ClientStatus:
        await self.wait_for(lambda: self.status(stream) is not None)
        status = self.status(stream)
        assert status is not None
        return status


def lag_of(sink: Sink, stream: trio.abc.SendStream) -> int:
    stats = sink.get_stats(stream)
    assert stats is not None, "a client that keeps up was removed"
    return stats.lag_buffers


async def send_keeping_up(
    sink: Sink, keeping_up: Sequence[trio.abc.SendStream], buffers: Sequence[Buffer | bytes]
) -> None:
    """Send each buffer, then let the reading clients hand everything to their
    sockets, so that only a client that does not read accumulates lag."""
    for buffer in buffers:
        await sink.send(buffer)
        await poll_until(lambda: all(lag_of(sink, s) == 0 for s in keeping_up))


async def read_client_to_eof(port: int, received: dict[Address, bytes]) -> None:
    """Connect, then read until the server closes; store the bytes by address."""
    client = await connect(port)
    async with client:
        received[name_of(client)] = await read_all(client)


# -- (1) many clients, each from its own join point ----------------------------


async def test_hundred_tcp_clients_each_receive_what_was_sent_after_they_joined() -> None:
    log = CallbackLog()
    sent: list[bytes] = []
    joined_at: dict[Address, int] = {}
    received: dict[Address, bytes] = {}

    def on_added(stream: trio.abc.SendStream) -> None:
        joined_at[peer_of(stream)] = len(sent)
        log.on_client_added(stream)

    async def send_next(sink: Sink) -> None:
        seq = len(sent)
        sent.append(frame(seq, (seq * 7919) % 3000))
        await sink.send(sent[-1])

    async def client(port: int) -> None:
        stream = await trio.open_tcp_stream(LOCALHOST, port)
        async with stream:
            received[name_of(stream)] = await read_all(stream)

    with trio.fail_after(60):
        async with (
            Sink(**{**log.callbacks(), "on_client_added": on_added}) as sink,
            serving(sink.serve) as port,
            trio.open_nursery() as clients,
        ):
            for i in range(100):
                clients.start_soon(client, port)
                await log.wait_added(i + 1)
                for _ in range(i % 3):
                    await send_next(sink)
            for _ in range(20):
                await send_next(sink)
            for stream in log.added:
                sink.remove_flush(stream)
        # the clients have read to EOF: serve returned and serve_tcp closed each stream

    assert len(received) == 100
    assert len(set(joined_at.values())) > 60, "clients should join at many points"
    for address, data in received.items():
        start = joined_at[address]
        assert parse_frames(data) == list(range(start, len(sent))), address
        assert data == b"".join(sent[start:]), address
    assert sorted(status for _, status in log.removed) == [ClientStatus.REMOVED] * 100
    assert sink.bytes_served == sum(len(data) for data in received.values())


# -- (2) a client that never reads among fast ones -----------------------------

_BIG = 64 * 1024
_FRAMES = 40


async def _small_send_buffer(sink: Sink, served: dict[Address, ClientStatus],
                             stream: trio.SocketStream) -> None:
    """serve_tcp handler: a 64 KiB kernel send buffer so a non-reader fills it fast."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BIG)
    served[peer_of(stream)] = await sink.serve(stream)


async def test_client_that_never_reads_is_removed_slow_and_others_get_everything() -> None:
    log = CallbackLog()
    served: dict[Address, ClientStatus] = {}
    received: dict[Address, bytes] = {}
    frames = [frame(seq, _BIG) for seq in range(_FRAMES)]
    with trio.fail_after(60):
        async with Sink(buffers_max=4, **log.callbacks()) as sink:
            async with (
                serving(partial(_small_send_buffer, sink, served)) as port,
                trio.open_nursery() as readers,
            ):
                for _ in range(3):
                    readers.start_soon(read_client_to_eof, port, received)
                stalled = await connect(port, rcvbuf=4096)  # and never read
                stalled_name = name_of(stalled)
                await log.wait_added(4)
                stalled_server = log.server_for(stalled)
                fast = [s for s in log.added if s is not stalled_server]

                await send_keeping_up(sink, fast, frames)

                assert log.status(stalled_server) == ClientStatus.SLOW
                assert sink.get_stats(stalled_server) is None
                assert [log.status(s) for s in fast] == [None] * 3
                assert sink.num_handles == 3
                for stream in fast:
                    sink.remove_flush(stream)
                await poll_until(lambda: stalled_name in served)
            await stalled.aclose()

    assert served[stalled_name] == ClientStatus.SLOW
    assert len(received) == 3
    for data in received.values():
        assert data == b"".join(frames)


@pytest.mark.parametrize(
    "policy", [RecoverPolicy.RESYNC_LATEST, RecoverPolicy.RESYNC_KEYFRAME]
)
async def test_client_that_never_reads_is_resynced_and_others_get_everything(
    policy: RecoverPolicy,
) -> None:
    log = CallbackLog()
    served: dict[Address, ClientStatus] = {}
    received: dict[Address, bytes] = {}
    # a keyframe every 4 buffers
    frames = [Buffer(frame(seq, _BIG), delta_unit=seq % 4 != 0) for seq in range(_FRAMES)]
    with trio.fail_after(60):
        async with (
            Sink(buffers_soft_max=3, recover_policy=policy, **log.callbacks()) as sink,
            serving(partial(_small_send_buffer, sink, served)) as port,
            trio.open_nursery() as readers,
        ):
            for _ in range(3):
                readers.start_soon(read_client_to_eof, port, received)
            stalled = await connect(port, rcvbuf=4096)
            stalled_name = name_of(stalled)
            await log.wait_added(4)
            stalled_server = log.server_for(stalled)
            fast = [s for s in log.added if s is not stalled_server]

            await send_keeping_up(sink, fast, frames)

            stats = sink.get_stats(stalled_server)
            assert stats is not None, "a soft limit must not remove the client"
            assert stats.status == ClientStatus.OK
            assert stats.buffers_dropped > 0
            for stream in fast:
                fast_stats = sink.get_stats(stream)
                assert fast_stats is not None
                assert fast_stats.buffers_dropped == 0
            # now the stalled client reads what it was left with
            async with stalled:
                for stream in log.added:
                    sink.remove_flush(stream)
                late = await read_all(stalled)

    expected = b"".join(f.tobytes() for f in frames)
    assert len(received) == 3
    for data in received.values():
        assert data == expected
    assert served[stalled_name] == ClientStatus.REMOVED
    # the resynced client's stream is whole frames, in order, with gaps
    seqs = parse_frames(late)
    assert seqs[0] == 0
    assert seqs == sorted(set(seqs))
    assert len(seqs) < _FRAMES
    if policy == RecoverPolicy.RESYNC_LATEST:
        assert seqs[-1] == _FRAMES - 1
        assert stats.buffers_dropped == _FRAMES - len(seqs)
    else:
        for before, after in itertools.pairwise(seqs):
            if after != before + 1:
                assert after % 4 == 0, f"resumed on delta unit {after} after {before}"
        assert stats.buffers_dropped <= _FRAMES - len(seqs)


# -- (3) TLS ---------------------------------------------------------------------


@dataclass(frozen=True)
class TLS:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls() -> TLS:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TLS(server, client)


async def test_tls_clients_receive_exact_bytes(tls: TLS) -> None:
    log = CallbackLog()
    sent: list[Buffer] = []
    joined_at: dict[Address, int] = {}
    received: dict[Address, bytes] = {}
    statuses: list[ClientStatus] = []

    def on_added(stream: trio.abc.SendStream) -> None:
        assert isinstance(stream, trio.SSLStream)
        joined_at[peer_of(stream)] = len(sent)
        log.on_client_added(stream)

    async def send_next(sink: Sink) -> None:
        seq = len(sent)
        data = frame(seq, 1000 + seq * 3001)
        # multi-segment buffers over TLS too
        sent.append(Buffer([data[:5], data[5:9], data[9:]]) if seq % 2 else Buffer(data))
        await sink.send(sent[-1])

    async def tls_client(port: int) -> None:
        tcp = await trio.open_tcp_stream(LOCALHOST, port)
        stream = trio.SSLStream(tcp, tls.client, server_hostname="localhost")
        async with stream:
            received[name_of(tcp)] = await read_all(stream)

    with trio.fail_after(30):
        async with Sink(**{**log.callbacks(), "on_client_added": on_added}) as sink:

            async def handler(tcp: trio.SocketStream) -> None:
                stream = trio.SSLStream(tcp, tls.server, server_side=True)
                try:
                    statuses.append(await sink.serve(stream))
                finally:
                    await stream.aclose()  # ours to close: sends close_notify

            async with serving(handler) as port, trio.open_nursery() as clients:
                for i in range(5):
                    clients.start_soon(tls_client, port)
                    await log.wait_added(i + 1)
                    for _ in range(2):
                        await send_next(sink)
                for stream in log.added:
                    sink.remove_flush(stream)

    assert statuses == [ClientStatus.REMOVED] * 5
    assert len(received) == 5
    for address, data in received.items():
        start = joined_at[address]
        assert parse_frames(data) == list(range(start, len(sent)))
        assert data == b"".join(b.tobytes() for b in sent[start:])
    assert sink.bytes_served == sum(len(data) for data in received.values())


# -- (4) peers that go away -----------------------------------------------------


async def test_peer_that_closes_is_removed_closed_and_the_others_are_served() -> None:
    log = CallbackLog()
    served: dict[Address, ClientStatus] = {}
    frames = [frame(seq, 100 + seq) for seq in range(10)]

    with trio.fail_after(10):
        async with Sink(**log.callbacks()) as sink:

            async def handler(stream: trio.SocketStream) -> None:
                served[peer_of(stream)] = await sink.serve(stream)

            async with serving(handler) as port:
                quitter = await connect(port)
                stayer = await connect(port)
                await log.wait_added(2)
                quitter_server = log.server_for(quitter)
                stayer_server = log.server_for(stayer)
                quitter_name = name_of(quitter)
                await quitter.aclose()

                assert await log.wait_removed(quitter_server) == ClientStatus.CLOSED
                assert log.socket_removed == [quitter_server]
                await poll_until(lambda: quitter_name in served)
                assert served[quitter_name] == ClientStatus.CLOSED

                for data in frames:
                    await sink.send(data)
                assert await read_exactly(stayer, sum(map(len, frames))) == b"".join(frames)
                assert log.status(stayer_server) is None
                assert sink.num_handles == 1
                await stayer.aclose()
                assert await log.wait_removed(stayer_server) == ClientStatus.CLOSED


async def test_peer_reset_while_writing_is_removed_closed() -> None:
    """Without reading, the writer itself sees the reset (ECONNRESET / EPIPE)."""
    log = CallbackLog()
    server, client = await tcp_pair()
    other_server, other_client = await tcp_pair()
    with trio.fail_after(10):
        async with Sink(handle_read=False, **log.callbacks()) as sink:
            sink.add(server)
            sink.add(other_server)
            # SO_LINGER 0: close() sends RST
            client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()
            sent = 0
            while log.status(server) is None:
                await sink.send(frame(sent, 1000))
                sent += 1
                await poll_until(lambda: lag_of(sink, other_server) == 0)
            assert log.status(server) == ClientStatus.CLOSED
            expected = b"".join(frame(seq, 1000) for seq in range(sent))
            assert await read_exactly(other_client, len(expected)) == expected
            assert sink.num_handles == 1
    await server.aclose()
    await other_server.aclose()
    await other_client.aclose()


# -- (5) streams that fail ---------------------------------------------------------


class FailingStream(trio.abc.SendStream):
    """A send stream whose ``send_all`` raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.attempts = 0
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.attempts += 1
        await trio.lowlevel.checkpoint()
        raise self.error

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize(
    "error",
    [RuntimeError("boom"), ValueError("bad"), OSError(errno.EIO, "I/O error")],
    ids=["RuntimeError", "ValueError", "OSError-EIO"],
)
async def test_stream_raising_in_send_all_is_removed_error_and_the_sink_keeps_running(
    error: Exception,
) -> None:
    log = CallbackLog()
    failing = FailingStream(error)
    server, client = await tcp_pair()
    frames = [frame(seq, 500) for seq in range(6)]
    with trio.fail_after(10):
        async with Sink(**log.callbacks()) as sink:
            sink.add(failing)
            sink.add(server)
            for data in frames[:3]:
                await sink.send(data)
            assert await log.wait_removed(failing) == ClientStatus.ERROR
            assert failing.attempts == 1
            for data in frames[3:]:
                await sink.send(data)
            late_server, late_client = await tcp_pair()
            sink.add(late_server)
            await sink.send(b"late")
            assert await read_exactly(client, 6 * len(frames[0]) + 4) == b"".join(frames) + b"late"
            assert await read_exactly(late_client, 4) == b"late"
            assert sink.num_handles == 2
    # leaving the block normally raised nothing; the sink closed no stream
    assert not failing.closed
    assert log.socket_removed.count(failing) == 1
    for stream in (server, client, late_server, late_client):
        await stream.aclose()


async def test_serve_of_a_failing_stream_returns_error() -> None:
    failing = FailingStream(RuntimeError("boom"))
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            statuses: list[ClientStatus] = []

            async def serve() -> None:
                statuses.append(await sink.serve(failing))

            nursery.start_soon(serve)
            await poll_until(lambda: sink.num_handles == 1)
            await sink.send(b"x")
        assert statuses == [ClientStatus.ERROR]


async def test_raising_callback_removes_its_client_with_error_only() -> None:
    log = CallbackLog()
    victim, victim_client = await tcp_pair()
    server, client = await tcp_pair()

    def on_dispatched(stream: trio.abc.SendStream, buffer: Buffer) -> None:
        if stream is victim:
            raise RuntimeError("callback bug")

    with trio.fail_after(10):
        async with Sink(send_dispatched=True, on_dispatched=on_dispatched,
                        **log.callbacks()) as sink:
            sink.add(victim)
            sink.add(server)
            await sink.send(b"one")
            assert await log.wait_removed(victim) == ClientStatus.ERROR
            await sink.send(b"two")
            assert await read_exactly(client, 6) == b"onetwo"
            assert log.status(server) is None
    for stream in (victim, victim_client, server, client):
        await stream.aclose()


# -- (6) big and multi-segment buffers -------------------------------------------------


async def test_multi_segment_and_large_buffers_arrive_intact() -> None:
    server, client = await tcp_pair()
    segments: list[bytes | bytearray | memoryview] = []
    for i in range(11):
        chunk = bytes([i]) * (i * 997)  # segment 0 is empty
        kinds = (bytes, bytearray, memoryview)
        segments.append(kinds[i % 3](chunk))
    multi = Buffer(segments)
    large = Buffer(bytes(range(256)) * (300 * 1024 // 256))
    assert len(segments) == 11
    assert len(large) == 300 * 1024
    expected = multi.tobytes() + large.tobytes()
    with trio.fail_after(10):
        async with Sink() as sink:
            sink.add(server)
            await sink.send(multi)
            await sink.send(large)
            received = await read_exactly(client, len(expected))
            assert received == expected
            assert sink.bytes_served == len(received)
            assert sink.bytes_to_serve == len(expected)
            stats = sink.get_stats(server)
            assert stats is not None
            assert stats.bytes_sent == len(received)
            sink.remove(server)
    # nothing more than the two buffers was written
    await server.aclose()
    assert await read_all(client) == b""
    await client.aclose()


async def test_backlog_of_thousands_of_buffers_is_written_exactly_in_many_writev_calls() -> None:
    """A client that does not read piles up more buffers than one writev takes
    (IOV_MAX); once it reads, partial writes cut buffers and segments anywhere
    and the bytes still arrive exactly, and every buffer is dispatched once."""
    server, client = await tcp_pair(rcvbuf=4096, sndbuf=8192)
    sent: list[Buffer] = []
    dispatched: list[Buffer] = []

    def on_dispatched(stream: trio.abc.SendStream, buffer: Buffer) -> None:
        assert stream is server
        dispatched.append(buffer)

    for seq in range(3000):
        data = frame(seq, (seq * 37) % 701)
        if seq % 5 == 0:
            sent.append(Buffer([data[:3], data[3:11], b"", data[11:]]))
        else:
            sent.append(Buffer(data))
        if seq % 7 == 0:
            sent.append(Buffer(b""))  # zero-length buffers are fine
    expected = b"".join(b.tobytes() for b in sent)
    with trio.fail_after(30):
        async with Sink(send_dispatched=True, on_dispatched=on_dispatched) as sink:
            sink.add(server)
            for buffer in sent:
                await sink.send(buffer)
            assert lag_of(sink, server) > 1024
            received = await read_exactly(client, len(expected))
            await poll_until(lambda: len(dispatched) == len(sent))
            assert sink.bytes_served == len(expected)
    assert received == expected
    assert parse_frames(received) == list(range(3000))
    assert [id(b) for b in dispatched] == [id(b) for b in sent]
    await server.aclose()
    await client.aclose()


# -- (7) serve's result, cancellation, and who closes streams ----------------------------


async def test_serve_returns_the_final_status_and_leaves_the_stream_open() -> None:
    log = CallbackLog()
    server, client = await tcp_pair()
    statuses: list[ClientStatus] = []
    with trio.fail_after(10):
        async with Sink(**log.callbacks()) as sink, trio.open_nursery() as nursery:

            async def serve() -> None:
                statuses.append(await sink.serve(server))

            nursery.start_soon(serve)
            await log.wait_added(1)
            await sink.send(b"data")
            assert await read_exactly(client, 4) == b"data"
            sink.remove(server)
        assert statuses == [ClientStatus.REMOVED]
        # still open, and still ours
        await server.send_all(b"mine")
        assert await read_exactly(client, 4) == b"mine"
    await server.aclose()
    await client.aclose()


async def test_cancelling_serve_removes_the_client_and_leaves_the_stream_open() -> None:
    log = CallbackLog()
    server, client = await tcp_pair()
    with trio.fail_after(10):
        async with Sink(**log.callbacks()) as sink, trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def serve() -> None:
                with scope:
                    await sink.serve(server)

            nursery.start_soon(serve)
            await log.wait_added(1)
            await sink.send(b"before")
            assert await read_exactly(client, 6) == b"before"
            scope.cancel()
            assert await log.wait_removed(server) == ClientStatus.REMOVED
            assert sink.num_handles == 0
            assert sink.get_stats(server) is None
            await log.wait_for(lambda: log.socket_removed == [server])
            await sink.send(b"not for the removed client")
            assert server.socket.fileno() != -1
            await server.send_all(b"mine")
            assert await read_exactly(client, 4) == b"mine"
    await server.aclose()
    await client.aclose()


async def test_sink_never_closes_a_stream_it_was_given() -> None:
    log = CallbackLog()
    pairs = [await tcp_pair() for _ in range(3)]
    open_in_callback: list[bool] = []

    def on_socket_removed(stream: trio.abc.SendStream) -> None:
        assert isinstance(stream, trio.SocketStream)
        open_in_callback.append(stream.socket.fileno() != -1)
        log.on_client_socket_removed(stream)

    with trio.fail_after(10):
        async with Sink(**{**log.callbacks(),
                        "on_client_socket_removed": on_socket_removed}) as sink:
            for server, _ in pairs:
                sink.add(server)
            sink.remove(pairs[0][0])  # removed by hand; the others as the block is left
        assert [status for _, status in log.removed] == [ClientStatus.REMOVED] * 3
        assert open_in_callback == [True] * 3
        for server, client in pairs:
            assert server.socket.fileno() != -1
            await server.send_all(b"still open")
            assert await read_exactly(client, 10) == b"still open"
            await server.aclose()
            await client.aclose()


# -- (8) DSCP ----------------------------------------------------------------------------------


def _tos(stream: trio.abc.SendStream) -> int:
    assert isinstance(stream, trio.SocketStream)
    return stream.socket.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)


async def test_qos_dscp_sets_ip_tos_on_served_sockets() -> None:
    log = CallbackLog()
    with trio.fail_after(10):
        async with Sink(qos_dscp=46, **log.callbacks()) as sink, serving(sink.serve) as port:
            first = await connect(port)
            await log.wait_added(1)
            assert _tos(log.added[0]) == 46 << 2
            # an assignment restamps the clients already served, and later ones
            sink.qos_dscp = 10
            assert _tos(log.added[0]) == 10 << 2
            second = await connect(port)
            await log.wait_added(2)
            assert _tos(log.added[1]) == 10 << 2
            await first.aclose()
            await second.aclose()


async def test_qos_dscp_minus_one_leaves_the_socket_alone() -> None:
    server, client = await tcp_pair()
    server.socket.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 8 << 2)
    async with Sink() as sink:
        sink.add(server)
        assert _tos(server) == 8 << 2
    await server.aclose()
    await client.aclose()


async def test_qos_dscp_sets_traffic_class_on_ipv6_sockets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server, client = await tcp_pair(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    async with Sink(qos_dscp=34) as sink:
        sink.add(server)
        assert server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == 34 << 2
    await server.aclose()
    await client.aclose()


async def test_qos_dscp_reaches_the_socket_under_tls(tls: TLS) -> None:
    server, client = await tcp_pair()
    stream = trio.SSLStream(server, tls.server, server_side=True)
    async with Sink(qos_dscp=8) as sink:
        sink.add(stream)
        assert _tos(server) == 8 << 2
        sink.remove(stream)
    await server.aclose()
    await client.aclose()


# -- (9) reading from clients ----------------------------------------------------------------


async def test_bytes_a_peer_writes_are_reported_through_on_message() -> None:
    log = CallbackLog()
    with trio.fail_after(10):
        async with (
            Sink(send_messages=True, **log.callbacks()) as sink,
            serving(sink.serve) as port,
        ):
            client = await connect(port)
            await log.wait_added(1)
            server = log.added[0]
            await client.send_all(b"hello ")
            await client.send_all(b"sink")
            await log.wait_for(lambda: sum(len(d) for _, d in log.messages) >= 10)
            assert all(stream is server for stream, _ in log.messages)
            assert all(type(data) is bytes for _, data in log.messages)
            assert b"".join(d for _, d in log.messages) == b"hello sink"
            # the peer closing, with nothing ever sent to it, is seen
            await client.aclose()
            assert await log.wait_removed(server) == ClientStatus.CLOSED


async def test_bytes_a_peer_writes_are_discarded_without_send_messages() -> None:
    log = CallbackLog()
    with trio.fail_after(10):
        async with Sink(**log.callbacks()) as sink, serving(sink.serve) as port:
            client = await connect(port)
            await log.wait_added(1)
            await client.send_all(b"ignored")
            await client.aclose()
            # the data was read before the EOF that removed the client
            assert await log.wait_removed(log.added[0]) == ClientStatus.CLOSED
            assert log.messages == []


async def test_peer_half_close_is_seen_as_closed_with_handle_read() -> None:
    log = CallbackLog()
    server, client = await tcp_pair()
    with trio.fail_after(10):
        async with Sink(**log.callbacks()) as sink:
            sink.add(server)
            await client.send_eof()
            assert await log.wait_removed(server) == ClientStatus.CLOSED
    await server.aclose()
    await client.aclose()


# -- (10) timeout (mock clock: real sockets cannot use it) ---------------------------------------


class PacedStream(trio.abc.SendStream):
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


async def test_timeout_removes_a_stalled_client_but_never_an_idle_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = CallbackLog()
    removed_at: list[float] = []

    def on_removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
        removed_at.append(trio.current_time())
        log.on_client_removed(stream, status)

    stalled = RecordingStream(stalled=True)
    healthy = RecordingStream()
    idle = RecordingStream()
    async with Sink(timeout=3, **{**log.callbacks(), "on_client_removed": on_removed}) as sink:
        sink.add(stalled)
        sink.add(healthy)
        start = trio.current_time()
        await sink.send(b"frame")
        sink.add(idle)  # after the send: it has nothing to write
        await trio.sleep(2.9)
        assert log.removed == []
        await trio.sleep(0.2)
        assert log.removed == [(stalled, ClientStatus.SLOW)]
        assert removed_at[0] - start == pytest.approx(3)
        await trio.sleep(1000)
        assert log.removed == [(stalled, ClientStatus.SLOW)]
        assert healthy.data == b"frame"
        # after a long idle stretch, new data is not a stall
        await sink.send(b"late")
        await settle()
        assert idle.data == b"late"
        assert healthy.data == b"framelate"
        assert log.removed == [(stalled, ClientStatus.SLOW)]


async def test_timeout_does_not_remove_a_client_that_progresses_slowly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = CallbackLog()
    paced = PacedStream(delay=2)
    async with Sink(timeout=3, **log.callbacks()) as sink:
        sink.add(paced)
        for i in range(5):
            await sink.send(b"%d" % i)
        await trio.sleep(20)  # 10 s of writing in all, never 3 s without progress
        assert paced.writes == [b"0", b"1", b"2", b"3", b"4"]
        assert log.removed == []


# -- (11) linger ---------------------------------------------------------------------------------


async def test_leaving_the_block_normally_lets_a_slow_reader_get_what_is_queued() -> None:
    log = CallbackLog()
    server, client = await tcp_pair(rcvbuf=4096, sndbuf=8192)
    frames = [frame(seq, 64 * 1024) for seq in range(20)]
    expected = b"".join(frames)
    go = trio.Event()
    received = bytearray()

    async def slow_reader() -> None:
        await go.wait()
        while len(received) < len(expected):
            received.extend(await client.receive_some(4096))
            await trio.lowlevel.checkpoint()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            async with Sink(**log.callbacks()) as sink:
                sink.add(server)
                for data in frames:
                    await sink.send(data)
                assert lag_of(sink, server) > 0
                go.set()  # reading starts only as the block is left
            assert log.removed == [(server, ClientStatus.REMOVED)]
            assert log.socket_removed == [server]
    assert bytes(received) == expected
    await server.send_all(b"after")  # the sink left it open
    assert await read_exactly(client, 5) == b"after"
    await server.aclose()
    await client.aclose()


class _Boom(Exception):
    pass


async def test_an_exception_in_the_block_removes_clients_at_once() -> None:
    log = CallbackLog()
    server, client = await tcp_pair(rcvbuf=4096, sndbuf=8192)
    frames = [frame(seq, 64 * 1024) for seq in range(20)]
    expected = b"".join(frames)
    reading = False
    reading_at_removal: list[bool] = []

    def on_removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
        reading_at_removal.append(reading)
        log.on_client_removed(stream, status)

    caught = False
    with trio.fail_after(10):
        try:
            # no linger limit: only an immediate removal lets this block end
            async with Sink(linger=-1, **{**log.callbacks(),
                            "on_client_removed": on_removed}) as sink:
                sink.add(server)
                for data in frames:
                    await sink.send(data)
                assert lag_of(sink, server) > 0
                raise _Boom
        except* _Boom:
            caught = True
    assert caught
    assert log.removed == [(server, ClientStatus.REMOVED)]
    assert reading_at_removal == [False]
    reading = True
    await server.aclose()  # ours to close
    with trio.fail_after(10):
        received = await read_all(client)
    assert len(received) < len(expected)
    assert received == expected[: len(received)]
    await client.aclose()


async def test_linger_expires_for_a_client_that_never_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = CallbackLog()
    stalled = RecordingStream(stalled=True)
    async with Sink(linger=5, **log.callbacks()) as sink:
        sink.add(stalled)
        await sink.send(b"stuck")
        await sink.send(b"waiting")
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(5)
    assert log.removed == [(stalled, ClientStatus.REMOVED)]
    assert log.socket_removed == [stalled]
