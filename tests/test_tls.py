"""TLS clients (``trio.SSLStream`` over TCP on 127.0.0.1) get exactly the bytes sent."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import (
    LOCALHOST,
    TLS,
    Address,
    Events,
    name_of,
    parse_seq_frames,
    peer_of,
    read_all,
    seq_frame,
    serving,
)

from trio_msink import Buffer, ClientStatus, Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_tls_clients_receive_exact_bytes(tls: TLS) -> None:
    events = Events()
    sent: list[Buffer] = []
    joined_at: dict[Address, int] = {}
    received: dict[Address, bytes] = {}
    statuses: list[ClientStatus] = []

    def on_added(stream: trio.abc.SendStream) -> None:
        assert isinstance(stream, trio.SSLStream)
        joined_at[peer_of(stream)] = len(sent)
        events.on_client_added(stream)

    async def send_next(sink: Sink) -> None:
        seq = len(sent)
        data = seq_frame(seq, 1000 + seq * 3001)
        # multi-segment buffers over TLS too
        sent.append(Buffer([data[:5], data[5:9], data[9:]]) if seq % 2 else Buffer(data))
        await sink.send(sent[-1])

    async def tls_client(port: int) -> None:
        tcp = await trio.open_tcp_stream(LOCALHOST, port)
        stream = trio.SSLStream(tcp, tls.client, server_hostname="localhost")
        async with stream:
            received[name_of(tcp)] = await read_all(stream)

    with trio.fail_after(30):
        async with Sink(**{**events.callbacks(), "on_client_added": on_added}) as sink:

            async def handler(tcp: trio.SocketStream) -> None:
                stream = trio.SSLStream(tcp, tls.server, server_side=True)
                try:
                    statuses.append(await sink.serve(stream))
                finally:
                    await stream.aclose()  # ours to close: sends close_notify

            async with serving(handler) as port, trio.open_nursery() as clients:
                for i in range(5):
                    clients.start_soon(tls_client, port)
                    await events.wait_added(i + 1)
                    for _ in range(2):
                        await send_next(sink)
                for stream in events.added:
                    sink.remove_flush(stream)

    assert statuses == [ClientStatus.REMOVED] * 5
    assert len(received) == 5
    for address, data in received.items():
        start = joined_at[address]
        assert parse_seq_frames(data) == list(range(start, len(sent)))
        assert data == b"".join(b.tobytes() for b in sent[start:])
    assert sink.bytes_served == sum(len(data) for data in received.values())
