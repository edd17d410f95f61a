"""Bytes that peers write: discarded, or reported through ``on_message`` with
``send_messages``; a peer's EOF is a removal with CLOSED (``handle_read``)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import (
    ADDED,
    Events,
    b,
    bs,
    connect,
    lifecycle,
    read_exactly,
    serving,
    settle,
    tcp_pair,
)

from trio_msink import ClientStatus, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_peer_data_is_discarded_or_reported_and_peer_close_is_closed() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            client, peer = trio.testing.memory_stream_pair()
            statuses: list[ClientStatus] = []

            async def serve() -> None:
                statuses.append(await sink.serve(client))

            nursery.start_soon(serve)
            await settle()
            assert sink.num_handles == 1
            await peer.send_all(b"hello")
            await settle()
            assert events.messages == []  # discarded
            assert events.of(client) == ADDED
            await sink.send(b(0))
            assert await read_exactly(peer, 10) == bs(0)
            sink.send_messages = True
            await peer.send_all(b"again")
            await settle()
            assert events.messages == [(client, b"again")]
            assert events.of(client) == ADDED
            await peer.aclose()
            await settle()
            assert events.of(client) == lifecycle(ClientStatus.CLOSED)
            assert statuses == [ClientStatus.CLOSED]
            assert sink.num_handles == 0


async def test_bytes_a_peer_writes_are_reported_through_on_message() -> None:
    events = Events()
    with trio.fail_after(10):
        async with (
            Sink(send_messages=True, **events.callbacks()) as sink,
            serving(sink.serve) as port,
        ):
            client = await connect(port)
            await events.wait_added(1)
            server = events.added[0]
            await client.send_all(b"hello ")
            await client.send_all(b"sink")
            await events.wait_for(lambda: sum(len(d) for _, d in events.messages) >= 10)
            assert all(stream is server for stream, _ in events.messages)
            assert all(type(data) is bytes for _, data in events.messages)
            assert b"".join(d for _, d in events.messages) == b"hello sink"
            # the peer closing, with nothing ever sent to it, is seen
            await client.aclose()
            assert await events.wait_removed(server) == ClientStatus.CLOSED


async def test_bytes_a_peer_writes_are_discarded_without_send_messages() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, serving(sink.serve) as port:
            client = await connect(port)
            await events.wait_added(1)
            await client.send_all(b"ignored")
            await client.aclose()
            # the data was read before the EOF that removed the client
            assert await events.wait_removed(events.added[0]) == ClientStatus.CLOSED
            assert events.messages == []


async def test_peer_half_close_is_seen_as_closed_with_handle_read() -> None:
    events = Events()
    server, client = await tcp_pair()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink:
            sink.add(server)
            await client.send_eof()
            assert await events.wait_removed(server) == ClientStatus.CLOSED
    await server.aclose()
    await client.aclose()
