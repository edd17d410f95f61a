"""Writes to socket clients that keep up: batched, exact, within limits."""

from __future__ import annotations

import os
from functools import partial

import pytest
import trio
import trio.testing

from trio_msink import ClientStatus, Sink


async def _serve_and_connect(sink: Sink, nursery: trio.Nursery,
                             count: int) -> list[trio.SocketStream]:
    joined = trio.Semaphore(0)
    previous = sink.on_client_added

    def added(stream: trio.abc.SendStream) -> None:
        if previous is not None:
            previous(stream)
        joined.release()

    sink.on_client_added = added
    listeners = await nursery.start(partial(trio.serve_tcp, sink.serve, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(count)]
    for _ in range(count):
        await joined.acquire()
    await trio.testing.wait_all_tasks_blocked()  # every writer parked
    return clients


async def _read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk
        data += chunk
    return bytes(data)


async def test_a_burst_of_sends_costs_few_writes_per_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    writev = os.writev

    def counting_writev(fd: int, buffers: list[memoryview]) -> int:
        nonlocal calls
        calls += 1
        return writev(fd, buffers)

    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            clients = await _serve_and_connect(sink, nursery, 3)
            monkeypatch.setattr(os, "writev", counting_writev)
            payload = [b"%05d" % i * 20 for i in range(50)]
            for data in payload:
                await sink.send(data)
            for client in clients:
                assert await _read_exactly(client, 5000) == b"".join(payload)
            # one write per client for the whole burst, not one per buffer
            assert calls <= 2 * len(clients)
            nursery.cancel_scope.cancel()


async def test_batching_never_pushes_a_reader_over_a_limit() -> None:
    removed: list[ClientStatus] = []
    served: list[trio.abc.SendStream] = []
    with trio.fail_after(20):
        async with Sink(buffers_max=4, buffers_soft_max=2,
                        on_client_added=served.append,
                        on_client_removed=lambda s, status: removed.append(status)) as sink, \
                trio.open_nursery() as nursery:
            clients = await _serve_and_connect(sink, nursery, 5)
            got = [bytearray() for _ in clients]

            async def read(i: int, client: trio.SocketStream) -> None:
                while len(got[i]) < 200 * 100:
                    got[i] += await client.receive_some()

            async with trio.open_nursery() as readers:
                for i, client in enumerate(clients):
                    readers.start_soon(read, i, client)
                for n in range(200):
                    await sink.send(b"%099d\n" % n)
            expected = b"".join(b"%099d\n" % n for n in range(200))
            assert all(bytes(g) == expected for g in got)
            assert removed == []
            # every client is still served, none was resynced
            assert len(served) == 5 and sink.num_handles == 5
            for stream in served:
                stats = sink.get_stats(stream)
                assert stats is not None and stats.status == ClientStatus.OK
                assert stats.buffers_dropped == 0 and stats.bytes_sent == 200 * 100
            nursery.cancel_scope.cancel()


async def test_a_paced_producer_gets_each_buffer_written_when_it_pauses() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            (client,) = await _serve_and_connect(sink, nursery, 1)
            for n in range(5):
                await sink.send(b"frame%d" % n)
                # the producer waits (a paced source): the buffer goes out now
                assert await _read_exactly(client, 6) == b"frame%d" % n
            nursery.cancel_scope.cancel()


async def test_direct_writes_keep_the_client_stats() -> None:
    from trio_msink import Buffer

    with trio.fail_after(10):
        server_side: list[trio.abc.SendStream] = []
        async with Sink(sync=False, on_client_added=server_side.append) as sink, \
                trio.open_nursery() as nursery:
            (client,) = await _serve_and_connect(sink, nursery, 1)
            buffers = [Buffer(b"x" * 10, pts=1.0 + n if n % 2 else None) for n in range(8)]
            for buffer in buffers:
                await sink.send(buffer)
            assert await _read_exactly(client, 80) == b"x" * 80
            stats = sink.get_stats(server_side[0])
            assert stats is not None
            assert (stats.first_buffer_ts, stats.last_buffer_ts) == (2.0, 8.0)
            assert stats.bytes_sent == 80 and stats.lag_buffers == 0
            nursery.cancel_scope.cancel()
