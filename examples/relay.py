"""A Trio relay (origin -> edge -> clients): read a stream from an upstream TCP
server and fan it out to every TCP client that connects; stop when it ends.

    python examples/relay.py --upstream 127.0.0.1:9000 --port 9001
"""

from __future__ import annotations

import argparse
from contextlib import suppress
from functools import partial

import trio

from trio_msink import Format, Sink, SyncMethod


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def relay(upstream: tuple[str, int], host: str | None, port: int, *, burst_bytes: int = 0,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Relay until the upstream ends; ``task_status`` gets the listening port.
    New clients start with the last ``burst_bytes`` bytes (0: from now on)."""
    method = SyncMethod.BURST if burst_bytes else SyncMethod.LATEST
    origin = await trio.open_tcp_stream(*upstream)
    async with origin, trio.open_nursery() as nursery:
        async with Sink(sync_method=method, burst_format=Format.BYTES,
                        burst_value=burst_bytes) as sink:
            async def client(stream: trio.SocketStream) -> None:
                with suppress(trio.ClosedResourceError):  # connected as the relay ends
                    await sink.serve(stream)

            listeners = await nursery.start(partial(trio.serve_tcp, client, port, host=host))
            task_status.started(listeners[0].socket.getsockname()[1])
            async for chunk in origin:
                await sink.send(bytes(chunk))
        # Leaving the block gave every client `linger` seconds to get what was queued.
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Relay a TCP stream to many TCP clients.")
    parser.add_argument("--upstream", type=host_port, required=True, help="origin HOST:PORT")
    parser.add_argument("--host", default=None, help="address to listen on (default: all)")
    parser.add_argument("--port", type=int, default=9001, help="port to listen on")
    parser.add_argument("--burst-bytes", type=int, default=0, help="bytes a new client starts with")
    args = parser.parse_args(argv)
    trio.run(partial(relay, args.upstream, args.host, args.port, burst_bytes=args.burst_bytes))


if __name__ == "__main__":
    main()
