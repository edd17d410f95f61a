"""A Trio relay (origin -> edge -> clients): read a stream from an upstream TCP
server and fan it out to every TCP client that connects; stop when it ends.

The bytes are framed (MPEG-TS, H.264 or raw, detected), so a player that
joins gets the stream's headers and then starts on a keyframe::

    trio-msink demo &       # an origin: the test stream on 127.0.0.1:9000
    python examples/relay.py --upstream 127.0.0.1:9000 --port 9001
    ffplay tcp://127.0.0.1:9001
"""

from __future__ import annotations

import argparse
from contextlib import suppress
from functools import partial

import trio

from trio_msink import Format, Sink, SyncMethod
from trio_msink.framing import open_framer


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def relay(upstream: tuple[str, int], host: str, port: int, *, burst_bytes: int = 0,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Relay until the upstream ends; ``task_status`` gets the listening port.
    New clients start on the newest keyframe (with ``burst_bytes``: on the
    keyframe before the last ``burst_bytes`` bytes)."""
    method = SyncMethod.BURST_KEYFRAME if burst_bytes else SyncMethod.LATEST_KEYFRAME
    framer = open_framer("auto")
    origin = await trio.open_tcp_stream(*upstream)
    async with origin, trio.open_nursery() as nursery:
        # sync=False: the origin already paces the stream; pacing it again
        # would hold back the burst the origin sends when we connect.
        async with Sink(sync_method=method, burst_format=Format.BYTES,
                        burst_value=burst_bytes, sync=False) as sink:
            async def client(stream: trio.SocketStream) -> None:
                with suppress(trio.ClosedResourceError):  # connected as the relay ends
                    await sink.serve(stream)

            listeners = await nursery.start(partial(trio.serve_tcp, client, port, host=host))
            for listener in listeners:  # a host name may have several addresses
                address, bound = listener.socket.getsockname()[:2]
                print(f"tcp://{f'[{address}]' if ':' in address else address}:{bound}",
                      flush=True)
            task_status.started(listeners[0].socket.getsockname()[1])
            async for chunk in origin:
                buffers = framer.feed(chunk)
                if framer.header_changed:  # PAT/PMT or SPS/PPS: every client gets them first
                    sink.set_streamheader(framer.streamheader)
                for buffer in buffers:
                    await sink.send(buffer)
            for buffer in framer.flush():
                await sink.send(buffer)
        # Leaving the block gave every client `linger` seconds to get what was queued.
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Relay a TCP stream to many TCP clients.")
    parser.add_argument("--upstream", type=host_port, required=True, help="origin HOST:PORT")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; 0.0.0.0: every one)")
    parser.add_argument("--port", type=int, default=9001, help="port to listen on")
    parser.add_argument("--burst-bytes", type=int, default=0,
                        help="bytes a new client starts with, from a keyframe (default: 0)")
    args = parser.parse_args(argv)
    with suppress(KeyboardInterrupt):
        trio.run(partial(relay, args.upstream, args.host, args.port,
                         burst_bytes=args.burst_bytes))


if __name__ == "__main__":
    main()
