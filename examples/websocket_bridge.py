"""Bridge a TCP stream to WebSocket clients: the bytes read from the source are
framed (MPEG-TS, H.264 or raw, detected) and every buffer is one binary
message to every client; a client starts with the stream's headers and a
keyframe. Stop when the source ends::

    trio-msink demo &       # a source: the test stream on 127.0.0.1:9000
    python examples/websocket_bridge.py --source 127.0.0.1:9000 --port 8081
"""

from __future__ import annotations

import argparse
from contextlib import suppress
from functools import partial

import trio
from trio_websocket import Endpoint, serve_websocket

from trio_msink import Format, Sink, SyncMethod
from trio_msink.framing import open_framer
from trio_msink.fronts import WebSocketFront


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def bridge(source: tuple[str, int], host: str, port: int, *, burst_bytes: int = 0,
                 task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Bridge until the source ends; ``task_status`` gets the listening port.
    New clients start on the newest keyframe (with ``burst_bytes``: on the
    keyframe before the last ``burst_bytes`` bytes)."""
    method = SyncMethod.BURST_KEYFRAME if burst_bytes else SyncMethod.LATEST_KEYFRAME
    framer = open_framer("auto")
    upstream = await trio.open_tcp_stream(*source)
    async with upstream, trio.open_nursery() as nursery:
        # sync=False: the source already paces the stream.
        async with Sink(sync_method=method, burst_format=Format.BYTES,
                        burst_value=burst_bytes, sync=False) as sink:
            front = WebSocketFront(sink)
            server = await nursery.start(partial(serve_websocket, front.handle, host, port, None))
            # A host name may listen on several addresses (127.0.0.1 and ::1),
            # where server.port would raise: print each.
            endpoints = [e for e in server.listeners if isinstance(e, Endpoint)]
            for endpoint in endpoints:
                print(f"{endpoint.url}/", flush=True)
            task_status.started(endpoints[0].port)
            async for chunk in upstream:
                buffers = framer.feed(chunk)
                if framer.header_changed:  # PAT/PMT or SPS/PPS: every client gets them first
                    sink.set_streamheader(framer.streamheader)
                for buffer in buffers:
                    await sink.send(buffer)
            for buffer in framer.flush():
                await sink.send(buffer)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bridge a TCP stream to WebSocket clients.")
    parser.add_argument("--source", type=host_port, required=True, help="source HOST:PORT")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; 0.0.0.0: every one)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on")
    parser.add_argument("--burst-bytes", type=int, default=0,
                        help="bytes a new client starts with, from a keyframe (default: 0)")
    args = parser.parse_args(argv)
    with suppress(KeyboardInterrupt):
        trio.run(partial(bridge, args.source, args.host, args.port,
                         burst_bytes=args.burst_bytes))


if __name__ == "__main__":
    main()
