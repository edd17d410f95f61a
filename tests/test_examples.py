"""The examples run: each against a local origin made here, on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHUNKS = [bytes([i]) * (1000 + i) for i in range(20)]
PAYLOAD = b"".join(CHUNKS)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def start_origin(nursery: trio.Nursery, finish: trio.Event) -> int:
    """A TCP origin: sends PAYLOAD to whoever connects, closes once `finish` is set."""

    async def origin(stream: trio.SocketStream) -> None:
        for chunk in CHUNKS:
            await stream.send_all(chunk)
        await finish.wait()

    listeners = await nursery.start(partial(trio.serve_tcp, origin, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def start_example(
    nursery: trio.Nursery, run: Callable[..., Awaitable[None]], origin_port: int
) -> tuple[int, trio.Event]:
    """Start an example's main coroutine; returns its port and an event set when it ends."""
    done = trio.Event()

    async def main(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await run(("127.0.0.1", origin_port), "127.0.0.1", 0, burst_bytes=len(PAYLOAD),
                  task_status=task_status)
        done.set()

    port: int = await nursery.start(main)
    return port, done


async def test_relay_forwards_the_origin_to_every_client() -> None:
    relay = load("relay")
    finish = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            origin_port = await start_origin(nursery, finish)
            port, done = await start_example(nursery, relay.relay, origin_port)
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
            for client in clients:
                got = b""
                while len(got) < len(PAYLOAD):
                    got += await client.receive_some()
                assert got == PAYLOAD
            finish.set()  # the origin ends: so does the relay, closing its clients
            for client in clients:
                assert await client.receive_some() == b""
                await client.aclose()
            await done.wait()
            nursery.cancel_scope.cancel()


async def test_websocket_bridge_sends_the_source_as_messages() -> None:
    bridge = load("websocket_bridge")
    finish = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            origin_port = await start_origin(nursery, finish)
            port, done = await start_example(nursery, bridge.bridge, origin_port)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                got = b""
                while len(got) < len(PAYLOAD):
                    message = await ws.get_message()
                    assert isinstance(message, bytes)
                    got += message
                assert got == PAYLOAD
                finish.set()
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            await done.wait()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("name", ["relay", "websocket_bridge"])
async def test_example_command_line_help(name: str) -> None:
    with trio.fail_after(30):
        result: Any = await trio.run_process(
            [sys.executable, str(EXAMPLES / f"{name}.py"), "--help"], capture_stdout=True
        )
    assert result.returncode == 0
    assert b"usage:" in result.stdout
    assert b"--burst-bytes" in result.stdout
