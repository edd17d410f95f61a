"""WebSocket front: real trio-websocket clients on 127.0.0.1."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
from conftest import Events
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    serve_websocket,
)

from trio_msink import Buffer, ClientStatus, Sink
from trio_msink.fronts import ClientRegistry, WebSocketFront, WebSocketSendStream


async def start(nursery: trio.Nursery, front: WebSocketFront) -> str:
    server = await nursery.start(partial(serve_websocket, front.handle, "127.0.0.1", 0, None))
    return f"ws://127.0.0.1:{server.port}"


async def test_each_buffer_is_one_binary_message() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            registry = ClientRegistry()
            url = await start(nursery, WebSocketFront(sink, registry=registry))
            buffers = [b"first", b"x" * 70_000, b"\x00\x01", b"last"]
            async with open_websocket_url(url + "/live") as ws:
                await events.wait_added(1)
                [(_, info)] = list(registry)
                assert info.front == "websocket"
                local = ws.local
                assert info.address == f"{local.address}:{local.port}"  # type: ignore[union-attr]
                for data in buffers:
                    await sink.send(Buffer(data))
                got = [await ws.get_message() for _ in buffers]
                assert got == buffers
                assert all(isinstance(message, bytes) for message in got)
                # Messages from the client are read (and discarded) by the sink.
                await ws.send_message("hello")
                await sink.send(b"more")
                assert await ws.get_message() == b"more"
            # The peer closed: the client is removed CLOSED, without any write.
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]
            await trio.testing.wait_all_tasks_blocked()  # the handler unregisters
            assert len(registry) == 0
            nursery.cancel_scope.cancel()


async def test_removed_client_is_closed_by_the_front() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            url = await start(nursery, WebSocketFront(sink))
            async with open_websocket_url(url) as ws:
                await events.wait_added(1)
                await sink.send(b"one")
                assert await ws.get_message() == b"one"
                sink.remove(events.added[0])
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason is not None
                assert info.value.reason.code == 1000
            assert events.statuses == [ClientStatus.REMOVED]
            nursery.cancel_scope.cancel()


async def test_peer_close_detected_without_sink_reader() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(handle_read=False, **events.callbacks()) as sink, \
                trio.open_nursery() as nursery:
            url = await start(nursery, WebSocketFront(sink))
            async with open_websocket_url(url) as ws:
                await events.wait_added(1)
                await sink.send(b"one")
                assert await ws.get_message() == b"one"
            await events.wait_socket_removed()
            # Only the public API is used: the front removes the client itself.
            assert events.statuses == [ClientStatus.REMOVED]
            nursery.cancel_scope.cancel()


async def test_path_filter_rejects_other_paths() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            url = await start(nursery, WebSocketFront(sink, path="/live"))
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(url + "/other"):
                    pass  # pragma: no cover
            assert info.value.status_code == 404
            added = trio.Event()
            sink.on_client_added = lambda stream: added.set()
            async with open_websocket_url(url + "/live?x=1") as ws:
                await added.wait()
                await sink.send(b"ok")
                assert await ws.get_message() == b"ok"
            nursery.cancel_scope.cancel()


async def test_closed_sink_refuses_with_going_away() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with Sink() as sink:
                pass
            url = await start(nursery, WebSocketFront(sink))
            async with open_websocket_url(url) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason is not None
                assert info.value.reason.code == 1001
            nursery.cancel_scope.cancel()


async def test_adapter_errors_are_trio_errors() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            received: list[WebSocketConnection] = []
            ready = trio.Event()

            async def handler(request: object) -> None:
                connection = await request.accept()  # type: ignore[attr-defined]
                received.append(connection)
                ready.set()
                await trio.sleep_forever()

            server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}") as ws:
                await ready.wait()
                stream = WebSocketSendStream(received[0])
                await stream.wait_send_all_might_not_block()
                await stream.send_all(memoryview(b"abc"))
                await stream.send_all(b"")  # nothing is sent
                assert await ws.get_message() == b"abc"
                await ws.aclose()
                with pytest.raises(trio.BrokenResourceError):
                    await stream.send_all(b"late")
                await stream.aclose()
                with pytest.raises(trio.ClosedResourceError):
                    await stream.send_all(b"closed")
            nursery.cancel_scope.cancel()


async def test_multi_segment_buffer_is_one_message() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            url = await start(nursery, WebSocketFront(sink))
            async with open_websocket_url(url) as ws:
                await events.wait_added(1)
                await sink.send(Buffer([b"head-", b"tail"]))
                await sink.send(Buffer([b"a", memoryview(b"b"), bytearray(b"c")]))
                await sink.send(b"next")
                assert [await ws.get_message() for _ in range(3)] == [b"head-tail", b"abc", b"next"]
            nursery.cancel_scope.cancel()


async def test_serve_stream_is_a_serve_tcp_handler() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            front = WebSocketFront(sink)
            listeners = await nursery.start(
                partial(trio.serve_tcp, front.serve_stream, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await events.wait_added(1)
                [(_, info)] = list(front.registry)
                assert info.front == "websocket"
                await sink.send(Buffer([b"12", b"34"]))
                assert await ws.get_message() == b"1234"
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]
            nursery.cancel_scope.cancel()


async def test_serve_stream_drops_a_silent_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        async with Sink() as sink:
            front = WebSocketFront(sink, handshake_timeout=5.0)
            client, server = trio.testing.memory_stream_pair()
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(front.serve_stream, server)
                await client.send_all(b"GET / HTTP/1.1\r\n")  # and no more
                assert await client.receive_some() == b""
                assert trio.current_time() - start == 5.0
            assert sink.num_handles == 0
