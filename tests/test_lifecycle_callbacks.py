"""A client's life: add and serve, the callbacks in their order, duplicates, and
who closes streams (docs/semantics.rst, "Removal"; docs/gstreamer.rst,
"Signals, events and actions")."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from conftest import (
    Events,
    RecordingStream,
    b,
    bs,
    lifecycle,
    read_exactly,
    settle,
    stats,
    tcp_pair,
)

from trio_msink import ClientStatus, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_duplicate_add_reports_duplicate_and_keeps_the_first() -> None:
    with trio.fail_after(5):
        events = Events()
        async with Sink(**events.callbacks()) as sink:
            h = RecordingStream()
            sink.add(h)
            sink.add(h)
            assert events.of(h) == [("added", None), ("removed", ClientStatus.DUPLICATE)]
            assert sink.num_handles == 1
            assert stats(sink, h).status == ClientStatus.OK
            await sink.send(b(0))
            await settle()
            assert h.data == bs(0)  # still streaming, and only once
            assert events.of(h) == [("added", None), ("removed", ClientStatus.DUPLICATE)]


async def test_duplicate_serve_returns_duplicate() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            h = RecordingStream()
            sink.add(h)
            assert await sink.serve(h) == ClientStatus.DUPLICATE
            assert sink.num_handles == 1


async def test_add_and_send_outside_the_block_are_refused() -> None:
    """docs/semantics.rst, "Leaving the block": before the block is entered and
    after it is left, add and send raise ClosedResourceError, and no callback
    runs."""
    with trio.fail_after(5):
        events = Events()
        sink = Sink(**events.callbacks())
        a = RecordingStream()
        with pytest.raises(trio.ClosedResourceError):
            sink.add(a)
        assert sink.num_handles == 0
        assert events.log == []
        async with sink:
            pass
        with pytest.raises(trio.ClosedResourceError):
            sink.add(a)
        with pytest.raises(trio.ClosedResourceError):
            await sink.send(b(0))
        assert sink.num_handles == 0
        assert events.log == []


async def test_added_always_precedes_removed() -> None:
    """Quirk Q22 in docs/gstreamer.rst fixed: even a client removed from
    inside on_client_added."""
    with trio.fail_after(5):
        events = Events()
        sink = Sink(
            on_client_removed=events.on_client_removed,
            on_client_socket_removed=events.on_client_socket_removed,
        )

        def added(stream: Any) -> None:
            events.on_client_added(stream)
            sink.remove(stream)

        sink.on_client_added = added
        async with sink:
            a = RecordingStream()
            sink.add(a)
            await settle()
            assert events.of(a) == lifecycle(ClientStatus.REMOVED)
            assert sink.num_handles == 0


async def test_serve_returns_the_final_status_and_leaves_the_stream_open() -> None:
    events = Events()
    server, client = await tcp_pair()
    statuses: list[ClientStatus] = []
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:

            async def serve() -> None:
                statuses.append(await sink.serve(server))

            nursery.start_soon(serve)
            await events.wait_added(1)
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
    events = Events()
    server, client = await tcp_pair()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def serve() -> None:
                with scope:
                    await sink.serve(server)

            nursery.start_soon(serve)
            await events.wait_added(1)
            await sink.send(b"before")
            assert await read_exactly(client, 6) == b"before"
            scope.cancel()
            assert await events.wait_removed(server) == ClientStatus.REMOVED
            assert sink.num_handles == 0
            assert sink.get_stats(server) is None
            await events.wait_for(lambda: events.socket_removed == [server])
            await sink.send(b"not for the removed client")
            assert server.socket.fileno() != -1
            await server.send_all(b"mine")
            assert await read_exactly(client, 4) == b"mine"
    await server.aclose()
    await client.aclose()


async def test_sink_never_closes_a_stream_it_was_given() -> None:
    events = Events()
    pairs = [await tcp_pair() for _ in range(3)]
    open_in_callback: list[bool] = []

    def on_socket_removed(stream: trio.abc.SendStream) -> None:
        assert isinstance(stream, trio.SocketStream)
        open_in_callback.append(stream.socket.fileno() != -1)
        events.on_client_socket_removed(stream)

    with trio.fail_after(10):
        async with Sink(**{**events.callbacks(),
                        "on_client_socket_removed": on_socket_removed}) as sink:
            for server, _ in pairs:
                sink.add(server)
            sink.remove(pairs[0][0])  # removed by hand; the others as the block is left
        assert [status for _, status in events.removed] == [ClientStatus.REMOVED] * 3
        assert open_in_callback == [True] * 3
        for server, client in pairs:
            assert server.socket.fileno() != -1
            await server.send_all(b"still open")
            assert await read_exactly(client, 10) == b"still open"
            await server.aclose()
            await client.aclose()
