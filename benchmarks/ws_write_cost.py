#!/usr/bin/env python3
"""What one buffer costs the server per viewer: TCP clients against WebSocket
clients on the fast path, measured in one process.

    python benchmarks/ws_write_cost.py                      # 100 and 1,000 viewers
    python benchmarks/ws_write_cost.py --viewers 100 --buffers 6000 --repeat 3

A :class:`~trio_msink.Sink` in this process serves N viewers (TCP: the sink
itself as the ``trio.serve_tcp`` handler; WebSocket: ``WebSocketFront``'s
``serve_stream``) that a separate ``_clients.py`` process reads; the
producer sends 4096-byte buffers one at a time with a short sleep after
each, so that every buffer is written to every viewer on its own (no
batching of several buffers into one ``writev``). The figure is this
process's CPU time (``time.process_time``) while the buffers are sent,
divided by buffers x viewers: it depends much less on how much CPU the other
processes of a shared machine take than the CPU share of websocket.py's
servers does. The table shows the lowest of the repeats of each (the run
least disturbed). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

import trio

from trio_msink import Sink
from trio_msink.fronts import WebSocketFront

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
SIZE = 4096


async def measure(kind: str, viewers: int, buffers: int) -> float:
    """Microseconds of this process's CPU per buffer per viewer."""
    async with Sink(sync=False) as sink, trio.open_nursery() as nursery:
        handler: Callable[[trio.SocketStream], Awaitable[object]]
        handler = WebSocketFront(sink).serve_stream if kind == "ws" else sink.serve
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        cmd = [sys.executable, str(BENCH_DIR / "_clients.py"), "--port", str(port),
               "--size", str(SIZE), "--sockets", str(viewers), "--max-seconds", "300",
               *(["--ws"] if kind == "ws" else [])]
        clients = await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE,
                                                   stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
        try:
            data = bytes(SIZE)
            deadline = trio.current_time() + 60
            # The clients count a connection as joined at its first byte.
            while sink.num_handles < viewers and trio.current_time() < deadline:
                await sink.send(data)
                await trio.sleep(0.02)
            if sink.num_handles < viewers:
                raise SystemExit(f"only {sink.num_handles}/{viewers} viewers connected")
            for _ in range(50):  # settle
                await sink.send(data)
                await trio.sleep(0.01)
            cpu = time.process_time()
            for _ in range(buffers):
                await sink.send(data)
                await trio.sleep(0.0005)
            cpu = time.process_time() - cpu
        finally:
            clients.kill()
            with trio.CancelScope(shield=True):
                await clients.wait()
        nursery.cancel_scope.cancel()
    return cpu / buffers / viewers * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ws_write_cost.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", default="100,1000", help="comma list (default: 100,1000)")
    parser.add_argument("--buffers", type=int, default=0,
                        help="buffers sent (default: 600000 / viewers, at least 1500)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, alternating")
    args = parser.parse_args(argv)
    print("| viewers | TCP us/buffer/viewer | WebSocket us/buffer/viewer | WebSocket/TCP |")
    print("|--------:|---------------------:|---------------------------:|--------------:|")
    for viewers in (int(v) for v in args.viewers.split(",")):
        buffers = args.buffers or max(1500, 600_000 // viewers)
        runs: dict[str, list[float]] = {"tcp": [], "ws": []}
        for rep in range(args.repeat):
            for kind in ("tcp", "ws") if rep % 2 == 0 else ("ws", "tcp"):
                runs[kind].append(trio.run(measure, kind, viewers, buffers))
                print(f"  {kind} N={viewers}: {runs[kind][-1]:.2f} us", file=sys.stderr)
        tcp, ws = min(runs["tcp"]), min(runs["ws"])
        print(f"| {viewers} | {tcp:.2f} | {ws:.2f} | {ws / tcp:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
