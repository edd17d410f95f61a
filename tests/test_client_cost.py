"""What a connected client costs the sink: no task of its own when served,
its socket read by the sink's one read group, and a few KiB of memory
(docs/performance.md, "10,000 viewers in one process")."""

from __future__ import annotations

import gc
import socket
import tracemalloc

import pytest
import trio
from conftest import Events, b, bs, lifecycle, poll_until, read_exactly, settle, tcp_pair

from trio_msink import ClientStatus, Sink
from trio_msink._readers import GROUPED

pytestmark = pytest.mark.usefixtures("no_spin")

needs_epoll = pytest.mark.skipif(not GROUPED, reason="the read group needs select.epoll (Linux)")


async def test_served_clients_add_no_task_to_the_sink() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            assert sink._nursery is not None
            own_tasks = len(sink._nursery.child_tasks)
            pairs = [await tcp_pair() for _ in range(20)]
            for server, _ in pairs:
                nursery.start_soon(sink.serve, server)
            await settle()
            assert sink.num_handles == 20
            # Each client runs in the task that called serve; reading is grouped.
            assert len(sink._nursery.child_tasks) == own_tasks
            await sink.send(b(1))
            for _, client in pairs:
                assert await read_exactly(client, 10) == bs(1)
            sink.clear()
            for server, client in pairs:
                await server.aclose()
                await client.aclose()


async def test_added_clients_still_get_a_task_each() -> None:
    with trio.fail_after(10):
        async with Sink() as sink:
            assert sink._nursery is not None
            own_tasks = len(sink._nursery.child_tasks)
            server, client = await tcp_pair()
            sink.add(server)
            await settle()
            assert len(sink._nursery.child_tasks) == own_tasks + 1
            await sink.send(b(2))
            assert await read_exactly(client, 10) == bs(2)
            sink.remove(server)
            await settle()
            assert len(sink._nursery.child_tasks) == own_tasks
            await server.aclose()
            await client.aclose()


@needs_epoll
async def test_one_read_group_sees_each_peers_bytes_and_eof() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(send_messages=True, **events.callbacks()) as sink, \
                trio.open_nursery() as nursery:
            pairs = [await tcp_pair() for _ in range(8)]
            statuses: dict[int, ClientStatus] = {}

            async def serve(i: int, stream: trio.SocketStream) -> None:
                statuses[i] = await sink.serve(stream)

            for i, (server, _) in enumerate(pairs):
                nursery.start_soon(serve, i, server)
            await settle()
            await pairs[3][1].send_all(b"hello")
            await pairs[5][1].send_all(b"there")
            await poll_until(lambda: len(events.messages) == 2)
            assert sorted(events.messages, key=lambda m: m[1]) == [
                (pairs[3][0], b"hello"), (pairs[5][0], b"there")]
            await pairs[5][1].aclose()  # EOF from one peer: only it is CLOSED
            await poll_until(lambda: 5 in statuses)
            assert statuses == {5: ClientStatus.CLOSED}
            assert events.of(pairs[5][0]) == lifecycle(ClientStatus.CLOSED)
            assert sink.num_handles == 7
            await sink.send(b(7))
            for i, (_, client) in enumerate(pairs):
                if i != 5:
                    assert await read_exactly(client, 10) == bs(7)
            sink.clear()
        for server, client in pairs:
            await server.aclose()
            await client.aclose()


@needs_epoll
async def test_a_peer_reset_while_parked_is_closed_and_the_stream_is_unregistered() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            server, client = await tcp_pair()
            done: list[ClientStatus] = []

            async def serve() -> None:
                done.append(await sink.serve(server))

            nursery.start_soon(serve)
            await settle()
            client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
            await client.aclose()  # linger 0: an RST, not a FIN
            await poll_until(lambda: bool(done))
            assert done == [ClientStatus.CLOSED]
            assert not sink._readers._clients  # the read group let go of it
            await server.aclose()


async def test_a_served_socket_client_costs_under_8_kib() -> None:
    """Python allocations per served TCP client (the sink's part and Trio's
    socket wrappers), measured with tracemalloc over 100 clients."""
    count = 100
    with trio.fail_after(30):
        async with Sink() as sink, trio.open_nursery() as nursery:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(count)
            peers, accepted = [], []
            for _ in range(count):  # plain sockets, made before the first snapshot
                peer = socket.create_connection(listener.getsockname())
                peers.append(peer)
                accepted.append(listener.accept()[0])
            await sink.send(b(0))
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                streams = [trio.SocketStream(trio.socket.from_stdlib_socket(s))
                           for s in accepted]
                for stream in streams:
                    nursery.start_soon(sink.serve, stream)
                await settle()
                await sink.send(b(1))
                await settle()
                assert sink.num_handles == count
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
            per_client = growth / count
            assert 0 < per_client < 8 * 1024, f"{per_client:.0f} B per client"
            sink.clear()
            for stream in streams:
                await stream.aclose()
            for peer in peers:
                peer.close()
            listener.close()
