from __future__ import annotations

from functools import partial

import trio

from trio_msink import Sink


async def test_tcp_client_receives_what_is_sent() -> None:
    with trio.fail_after(10):
        joined = trio.Event()
        async with Sink(on_client_added=lambda stream: joined.set()) as sink, \
                trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, sink.serve, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await joined.wait()
            for i in range(5):
                await sink.send(b"hello%d" % i)
            got = b""
            while len(got) < 30:
                got += await stream.receive_some()
            assert got == b"hello0hello1hello2hello3hello4"
            await stream.aclose()
            nursery.cancel_scope.cancel()
