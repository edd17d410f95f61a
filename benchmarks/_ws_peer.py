"""The Python ``websockets`` peer of the WebSocket comparison (websocket.py).

``python _ws_peer.py --size S``: reads S-byte buffers from stdin and sends
each to every connected client with ``websockets.broadcast`` (asyncio), the
library's documented way to fan one message out; prints
``ws://127.0.0.1:PORT/`` once listening. No keepalive pings (they would be
frames among the buffers) and no compression. ``websockets`` comes from the
benchmark's cache (websocket.py's setup step puts it on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

HOST = "127.0.0.1"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    clients: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        clients.add(connection)
        try:
            await connection.wait_closed()
        finally:
            clients.discard(connection)

    async with serve(handler, HOST, 0, ping_interval=None, compression=None,
                     max_size=1 << 16) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"ws://{HOST}:{port}/", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     sys.stdin.buffer)
        while True:
            try:
                chunk = await reader.readexactly(args.size)
            except asyncio.IncompleteReadError:
                return
            broadcast(clients, chunk)


if __name__ == "__main__":
    asyncio.run(main())
