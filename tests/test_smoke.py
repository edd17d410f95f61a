"""The shortest path through the library: one TCP client of a served Sink
receives exactly what is sent after it joined."""

from __future__ import annotations

import trio
from conftest import LOCALHOST, Events, read_exactly, serving

from trio_msink import Sink


async def test_tcp_client_receives_what_is_sent() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, serving(sink.serve) as port:
            stream = await trio.open_tcp_stream(LOCALHOST, port)
            await events.wait_added(1)
            for i in range(5):
                await sink.send(b"hello%d" % i)
            assert await read_exactly(stream, 30) == b"hello0hello1hello2hello3hello4"
            await stream.aclose()
