"""anyio adapter, on anyio's Trio backend inside pytest-trio tests."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
import trio
import trio.testing
from conftest import Events

from trio_msink import Buffer, ClientStatus, Sink
from trio_msink.fronts import AnyioSendStream, AnyioStream


class MemoryByteStream(anyio.abc.ByteStream):
    """A byte stream over two anyio memory object streams (one per direction)."""

    def __init__(
        self,
        send: anyio.abc.ObjectSendStream[bytes],
        receive: anyio.abc.ObjectReceiveStream[bytes],
    ) -> None:
        self._send = send
        self._receive = receive

    async def send(self, item: bytes) -> None:
        assert isinstance(item, bytes)
        await self._send.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._receive.receive()

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def byte_stream_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    a_send, b_receive = anyio.create_memory_object_stream[bytes](100)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](100)
    return MemoryByteStream(a_send, a_receive), MemoryByteStream(b_send, b_receive)


async def test_anyio_tcp_listener_clients_get_the_stream() -> None:
    events = Events()
    statuses: list[ClientStatus] = []
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink, trio.open_nursery() as nursery:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            port = listener.extra(anyio.abc.SocketAttribute.local_port)

            async def handle(client: anyio.abc.SocketStream) -> None:
                async with client:
                    statuses.append(await sink.serve(AnyioStream(client)))

            nursery.start_soon(listener.serve, handle)
            client = await anyio.connect_tcp("127.0.0.1", port)
            await events.wait_added(1)
            await sink.send(b"one|")
            await sink.send(Buffer([b"tw", bytearray(b"o|")]))
            await sink.send(Buffer(memoryview(b"three"), delta_unit=True))
            expected = b"one|two|three"
            got = b""
            while len(got) < len(expected):
                got += await client.receive()
            assert got == expected
            await client.aclose()
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]
            await trio.testing.wait_all_tasks_blocked()
            assert statuses == [ClientStatus.CLOSED]
            nursery.cancel_scope.cancel()


async def test_send_stream_over_memory_byte_stream() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink:
            ours, theirs = byte_stream_pair()
            sink.add(AnyioSendStream(ours))
            await events.wait_added(1)
            for data in (b"abc", Buffer([b"d", b"ef"]), b"g"):
                await sink.send(data)
            assert [await theirs.receive() for _ in range(3)] == [b"abc", b"def", b"g"]
            # The peer goes away: anyio's BrokenResourceError reaches the sink as
            # trio's, which removes the client CLOSED (not ERROR).
            await theirs.aclose()
            await sink.send(b"lost")
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]


async def test_stream_end_of_stream_is_detected_while_idle() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(**events.callbacks()) as sink:
            ours, theirs = byte_stream_pair()
            sink.add(AnyioStream(ours))
            await events.wait_added(1)
            await theirs.send_eof()  # anyio.EndOfStream on our side: b"" for the sink
            await events.wait_socket_removed()
            assert events.statuses == [ClientStatus.CLOSED]


async def test_adapter_contract() -> None:
    with trio.fail_after(10):
        ours, theirs = byte_stream_pair()
        stream = AnyioStream(ours)
        await stream.wait_send_all_might_not_block()
        await stream.send_all(b"")  # sends nothing
        await stream.send_all(memoryview(b"xy"))
        assert await theirs.receive() == b"xy"
        await theirs.send(b"hello")
        assert await stream.receive_some() == b"hello"
        with pytest.raises(ValueError):
            await stream.receive_some(0)
        await stream.aclose()
        await stream.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"z")
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await stream.wait_send_all_might_not_block()
