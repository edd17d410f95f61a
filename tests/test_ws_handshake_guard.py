"""``WebSocketFront.serve_stream`` drops a peer that goes before completing
the opening handshake at once, not at ``handshake_timeout``, on plain TCP
and under TLS; clients that complete it keep their real address
(docs/front_websocket.md, "A peer that goes mid-handshake")."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import trio
from conftest import TLS, serving
from trio_websocket import open_websocket_url

from trio_msink import Sink
from trio_msink.fronts import WebSocketFront

HALF_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


async def _serve_one(front: WebSocketFront, wrap: Callable[[trio.SocketStream], trio.abc.Stream],
                     done: trio.Event, stream: trio.SocketStream) -> None:
    await front.serve_stream(wrap(stream))
    done.set()


async def _half_handshake_then_close(tls: TLS | None) -> None:
    """Start a front whose handshake timeout is far away, send half a request
    and close: serve_stream must return (the connection released) long before."""
    with trio.fail_after(30):
        async with Sink(sync=False) as sink:
            front = WebSocketFront(sink, handshake_timeout=600)
            done = trio.Event()

            def wrap(stream: trio.SocketStream) -> trio.abc.Stream:
                if tls is None:
                    return stream
                return tls.server_stream(stream)

            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(partial(
                    trio.serve_tcp, partial(_serve_one, front, wrap, done), 0,
                    host="127.0.0.1"))
                port = listeners[0].socket.getsockname()[1]
                client: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
                if tls is not None:
                    client = trio.SSLStream(client, tls.client, server_hostname="localhost")
                await client.send_all(HALF_REQUEST)
                await trio.sleep(0.2)  # the front is now reading the request
                await client.aclose()
                await done.wait()  # within fail_after, not the 600 s timeout
                nursery.cancel_scope.cancel()


async def test_a_tcp_peer_closing_mid_handshake_is_dropped_at_once() -> None:
    await _half_handshake_then_close(None)


async def test_a_tls_peer_closing_mid_handshake_is_dropped_at_once(tls: TLS) -> None:
    await _half_handshake_then_close(tls)


async def test_a_tls_client_is_registered_with_its_real_address(tls: TLS) -> None:
    with trio.fail_after(30):
        added = trio.Event()
        async with Sink(sync=False, on_client_added=lambda _: added.set()) as sink:
            front = WebSocketFront(sink)

            async def handler(stream: trio.SocketStream) -> None:
                await front.serve_stream(tls.server_stream(stream))

            async with serving(handler) as port, open_websocket_url(
                    f"wss://localhost:{port}/", ssl_context=tls.client) as ws:
                await added.wait()
                await sink.send(b"hello")
                assert await ws.get_message() == b"hello"
                [(_, info)] = front.registry.items()
                assert info.front == "websocket"
                assert info.address is not None
                assert info.address.rsplit(":", 1)[0] == "127.0.0.1", info.address
