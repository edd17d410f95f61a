"""Bridge a raw TCP stream to WebSocket clients: every chunk read from the
source is one binary message to every client; stop when the source ends.

    python examples/websocket_bridge.py --source 127.0.0.1:9000 --port 8081
"""

from __future__ import annotations

import argparse
from functools import partial

import trio
from trio_websocket import serve_websocket

from trio_msink import Format, Sink, SyncMethod
from trio_msink.fronts import WebSocketFront


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def bridge(source: tuple[str, int], host: str | None, port: int, *, burst_bytes: int = 0,
                 task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Bridge until the source ends; ``task_status`` gets the listening port.
    New clients start with the last ``burst_bytes`` bytes (0: from now on)."""
    method = SyncMethod.BURST if burst_bytes else SyncMethod.LATEST
    upstream = await trio.open_tcp_stream(*source)
    async with upstream, trio.open_nursery() as nursery:
        async with Sink(sync_method=method, burst_format=Format.BYTES,
                        burst_value=burst_bytes) as sink:
            front = WebSocketFront(sink)
            server = await nursery.start(partial(serve_websocket, front.handle, host, port, None))
            task_status.started(server.port)
            async for chunk in upstream:
                await sink.send(bytes(chunk))
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bridge a TCP stream to WebSocket clients.")
    parser.add_argument("--source", type=host_port, required=True, help="source HOST:PORT")
    parser.add_argument("--host", default=None, help="address to listen on (default: all)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on")
    parser.add_argument("--burst-bytes", type=int, default=0, help="bytes a new client starts with")
    args = parser.parse_args(argv)
    trio.run(partial(bridge, args.source, args.host, args.port, burst_bytes=args.burst_bytes))


if __name__ == "__main__":
    main()
