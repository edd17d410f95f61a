"""The examples run: each against a local origin made here, on 127.0.0.1, and
as their docstrings say, with a player that joins late and decodes cleanly."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
from _server import Running, need_tool, run_server
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


async def start_origin(nursery: trio.Nursery, go: trio.Event) -> int:
    """A TCP origin: once `go` is set, sends PAYLOAD to whoever connected, and closes."""

    async def origin(stream: trio.SocketStream) -> None:
        await go.wait()
        for chunk in CHUNKS:
            await stream.send_all(chunk)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, origin, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def start_example(
    nursery: trio.Nursery, run: Callable[..., Awaitable[None]], origin_port: int
) -> tuple[int, trio.Event]:
    """Start an example's main coroutine; returns its port and an event set when it ends."""
    done = trio.Event()

    async def main(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await run(("127.0.0.1", origin_port), "127.0.0.1", 0, task_status=task_status)
        done.set()

    port: int = await nursery.start(main)
    return port, done


async def test_relay_forwards_the_origin_to_every_client() -> None:
    relay = load("relay")
    go = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            origin_port = await start_origin(nursery, go)
            port, done = await start_example(nursery, relay.relay, origin_port)
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
            await trio.sleep(0.2)  # the relay has added them
            go.set()  # the origin sends everything and ends: so does the relay
            for client in clients:
                got = b""
                async for chunk in client:
                    got += chunk
                assert got == PAYLOAD
                await client.aclose()
            await done.wait()
            nursery.cancel_scope.cancel()


async def test_websocket_bridge_sends_the_source_as_messages() -> None:
    bridge = load("websocket_bridge")
    go = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            origin_port = await start_origin(nursery, go)
            port, done = await start_example(nursery, bridge.bridge, origin_port)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                await trio.sleep(0.2)  # the bridge has added us
                go.set()
                messages = []
                with pytest.raises(ConnectionClosed):
                    while True:
                        message = await ws.get_message()
                        assert isinstance(message, bytes)
                        messages.append(message)
            assert b"".join(messages) == PAYLOAD
            assert max(map(len, messages)) == 1316  # raw bytes: one buffer per message
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


# -- as the docstrings say, with players ----------------------------------------

async def run_example(nursery: trio.Nursery, origin: Running, name: str,
                      flag: str) -> tuple[trio.Process, str]:
    """Run ``examples/NAME.py FLAG HOST:PORT --port 0`` as the docstring does
    (default host); returns the process and the URL line it prints."""
    process: trio.Process = await nursery.start(partial(
        trio.run_process,
        [sys.executable, str(EXAMPLES / f"{name}.py"), flag,
         f"127.0.0.1:{origin.port('tcp')}", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
    ))
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some()
        assert chunk, "the example exited before it listened"
        line += chunk
    return process, line.decode().strip()


async def decode_errors(source: str) -> str:
    """What ffmpeg reports at level error decoding 2 s of ``source``."""
    ffmpeg = need_tool("ffmpeg")
    result = await trio.run_process(
        [ffmpeg, "-nostdin", "-v", "error", "-i", source, "-t", "2", "-f", "null", "-"],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return str(result.stderr.decode())


async def test_relay_as_documented_a_late_player_decodes_without_errors() -> None:
    with trio.fail_after(60):
        async with (run_server(["serve", "test", "--tcp", "127.0.0.1:0"], fronts=1) as origin,
                    trio.open_nursery() as nursery):
            process, url = await run_example(nursery, origin, "relay", "--upstream")
            assert url.startswith("tcp://127.0.0.1:")
            await trio.sleep(1.3)  # the relay is mid-GOP (a keyframe a second)
            assert await decode_errors(url) == ""
            process.terminate()


async def test_websocket_bridge_as_documented_a_late_player_decodes_without_errors(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with (run_server(["serve", "test", "--tcp", "127.0.0.1:0"], fronts=1) as origin,
                    trio.open_nursery() as nursery):
            process, url = await run_example(nursery, origin, "websocket_bridge", "--source")
            assert url.startswith("ws://127.0.0.1:")
            await trio.sleep(1.3)  # mid-GOP
            received = []
            async with open_websocket_url(url) as ws:
                with trio.move_on_after(2.5):
                    while True:
                        received.append(await ws.get_message())
            process.terminate()
        assert received[0][:1] == b"\x47" and received[0][1:3] == b"\x40\x00"  # PAT first
        recording = tmp_path / "joined.ts"
        recording.write_bytes(b"".join(received))
        assert await decode_errors(str(recording)) == ""
