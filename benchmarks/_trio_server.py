"""Stand-in for ``trio-msink serve - --format raw --tcp 127.0.0.1:0 --no-sync``.

Built only on the public API of :class:`trio_msink.Sink`: reads stdin in
``--chunk-size`` buffers (re-assembling short reads, so every buffer is whole),
``await sink.send(chunk)`` for each, serves every TCP connection with
``trio.serve_tcp(sink.serve, 0, host="127.0.0.1")`` and prints
``tcp://HOST:PORT`` once listening. Exits at end of input.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from enum import IntEnum
from functools import partial
from typing import TypeVar

import trio

from trio_msink import RecoverPolicy, Sink, SyncMethod

_E = TypeVar("_E", bound=IntEnum)


def _enum(cls: type[_E], text: str) -> _E:
    """The member of ``cls`` named by a flag value (``resync-latest``, ``latest``) or number."""
    key = text.strip().upper().replace("-", "_")
    for member in cls:
        if member.name == key or member.name == "RESYNC_" + key:
            return member
    return cls(int(text))


async def serve(args: argparse.Namespace) -> None:
    size: int = args.chunk_size
    sink = Sink(
        sync=False,
        buffers_max=args.buffers_max,
        buffers_soft_max=args.buffers_soft_max,
        recover_policy=_enum(RecoverPolicy, args.recover_policy),
        sync_method=_enum(SyncMethod, args.sync_method),
        linger=0,
    )
    async with sink, trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, sink.serve, args.port,
                                                host=args.host))
        host, port = listeners[0].socket.getsockname()[:2]
        print(f"tcp://{host}:{port}", flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with stdin:
            while True:
                data = await stdin.receive_some(size)
                if not data:
                    break
                if len(data) < size:  # a short read: complete the buffer
                    parts = [data]
                    have = len(data)
                    while have < size:
                        more = await stdin.receive_some(size - have)
                        if not more:
                            break
                        parts.append(more)
                        have += len(more)
                    data = b"".join(parts)
                await sink.send(data)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunk-size", type=int, default=1316)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--buffers-max", type=int, default=-1)
    parser.add_argument("--buffers-soft-max", type=int, default=-1)
    parser.add_argument("--recover-policy", default="none")
    parser.add_argument("--sync-method", default="latest")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args)


if __name__ == "__main__":
    main()
