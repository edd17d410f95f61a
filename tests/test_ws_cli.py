"""``trio-msink serve --ws`` on the fast path, in one process and with
``--workers 2``: a client on wsproto's state machine (which fails on any
frame cut or interleaved) pings while the stream flows and gets a pong
between whole messages of whole TS packets."""

from __future__ import annotations

import pytest
import trio
from _server import run_server
from _ws_client import RawClient
from wsproto.events import BytesMessage, Ping, Pong

SERVE_TEST = ["serve", "test", "--sync-method", "latest-keyframe", "--linger", "1"]


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_ws_answers_pings_between_whole_messages(workers: int) -> None:
    args = [*SERVE_TEST, "--ws", "127.0.0.1:0", "--workers", str(workers)]
    with trio.fail_after(60):
        async with run_server(args, fronts=1) as server:
            client = await RawClient.connect(server.port("ws"))
            messages: list[bytes] = []
            pongs: list[bytes] = []
            pings: list[bytes] = []
            while len(messages) < 40 or len(pongs) < 3:
                if len(pings) < 3 and len(messages) >= 5 + 10 * len(pings):
                    pings.append(b"ping %d" % len(pings))
                    await client.send(Ping(pings[-1]))
                for event in await client.events():
                    if isinstance(event, BytesMessage):
                        messages.append(bytes(event.data))
                    elif isinstance(event, Pong):
                        pongs.append(bytes(event.payload))
            await client.stream.aclose()
    assert pongs == pings
    for message in messages:
        assert len(message) % 188 == 0  # whole TS packets: whole buffers
        assert all(message[i] == 0x47 for i in range(0, len(message), 188))
