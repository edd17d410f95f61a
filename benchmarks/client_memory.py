"""What one connected client costs the server in memory, and where the bytes go.

``python benchmarks/client_memory.py --clients 1000``

For each kind of client (``reading``: reads everything it is sent;
``stalled``: never reads) the command runs a fresh server, lets a paced
stream flow (``--size`` byte buffers at ``--rate`` buffers per second), then
connects ``--clients`` TCP clients from a separate process (``_clients.py``,
one ``selectors`` loop) and measures the server's memory before and after:

* ``rss``: the RSS delta of the server process per client (``/proc``), on a
  run without tracemalloc (whose own bookkeeping would inflate the RSS);
* ``tracemalloc``: the Python allocations per client (a second run with
  tracemalloc on, which knows only the in-process server), and the
  allocation sites that account for them (``--top`` lines, bytes per client).

``--server inproc`` (default) serves the clients from a Sink in this process
with the ``trio-msink serve`` TCP handler; ``--server serve`` measures a
``trio-msink serve`` subprocess (RSS only). Kernel socket buffers are not in
either figure. Only 127.0.0.1 is used. Prints one markdown table per kind,
and the whole result as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
KINDS = ("reading", "stalled")


def rss_bytes(pid: int | None = None) -> int:
    """The resident set size of ``pid`` (this process by default), in bytes."""
    path = f"/proc/{pid or 'self'}/statm"
    with open(path) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def raise_fd_limit(needed: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit to ``needed`` (at most the hard limit);
    child processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class ClientProcess:
    """``_clients.py`` with ``count`` connections, all reading or all stalled."""

    def __init__(self, port: int, size: int, count: int, stalled: bool,
                 timeout: float) -> None:
        cmd = [sys.executable, str(BENCH_DIR / "_clients.py"), "--port", str(port),
               "--size", str(size), "--sockets", str(count),
               "--stalled", str(count if stalled else 0), "--concurrency", "64",
               "--rcvbuf", "65536", "--max-seconds", str(timeout)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def ready_line(self) -> str:
        """Blocks until the process says every connection got its first byte."""
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _check_ready(line: str, count: int) -> None:
    words = line.split()
    if len(words) != 3 or words[0] != "ready" or int(words[1]) != count:
        raise SystemExit(f"client_memory: clients did not all connect: {line!r}")


# -- one measurement in this process (a child of the command) ----------------
def measure_inproc(args: argparse.Namespace, kind: str, traced: bool) -> dict[str, Any]:
    """Serve ``args.clients`` clients of ``kind`` from a Sink in this process."""
    import trio

    from trio_msink import Sink
    from trio_msink.cli._handlers import front_handlers
    from trio_msink.fronts import ClientRegistry

    result: dict[str, Any] = {}
    payload = bytes(args.size)

    async def feed(sink: Sink) -> None:
        interval = 1.0 / args.rate
        while True:
            await sink.send(payload)
            await trio.sleep(interval)

    async def main() -> None:
        async with Sink(sync=False, timeout=0) as sink:
            handler = front_handlers(sink, ClientRegistry(), "application/octet-stream",
                                     10.0)["tcp"]
            async with trio.open_nursery() as nursery:
                listeners = await trio.open_tcp_listeners(0, host=HOST)
                port = listeners[0].socket.getsockname()[1]
                nursery.start_soon(trio.serve_listeners, handler, listeners)
                nursery.start_soon(feed, sink)
                await trio.sleep(args.settle)
                before = _snapshot(traced)
                clients = ClientProcess(port, args.size, args.clients, kind == "stalled",
                                        args.timeout)
                line = await trio.to_thread.run_sync(clients.ready_line)
                _check_ready(line, args.clients)
                await trio.sleep(args.settle)
                if sink.num_handles != args.clients:
                    raise SystemExit(f"client_memory: {sink.num_handles} clients served, "
                                     f"{args.clients} expected")
                after = _snapshot(traced)
                result.update(_difference(before, after, args.clients, args.top))
                result["handles"] = sink.num_handles
                await trio.to_thread.run_sync(clients.stop)
                nursery.cancel_scope.cancel()

    if traced:
        tracemalloc.start(args.frames)
    trio.run(main)
    return result


def _snapshot(traced: bool) -> dict[str, Any]:
    gc.collect()
    snap: dict[str, Any] = {"rss": rss_bytes()}
    if traced:
        snap["trace"] = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
    return snap


def _site(stat: tracemalloc.StatisticDiff) -> str:
    frame = stat.traceback[0]
    parts = Path(frame.filename).parts
    short = "/".join(parts[-2:]) if "site-packages" in parts or "lib" in parts else frame.filename
    for marker in ("trio_msink", "trio", "socket.py", "selectors.py"):
        if marker in parts:
            short = "/".join(parts[parts.index(marker):])
            break
    return f"{short}:{frame.lineno}"


def _difference(before: dict[str, Any], after: dict[str, Any], n: int,
                top: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_per_client": (after["rss"] - before["rss"]) / n}
    if "trace" in before:
        stats = after["trace"].compare_to(before["trace"], "lineno")  # innermost line
        total = sum(s.size_diff for s in stats)
        blocks = sum(s.count_diff for s in stats)
        out["traced_per_client"] = total / n
        out["blocks_per_client"] = blocks / n
        out["sites"] = [
            {"site": _site(s), "bytes": s.size_diff / n, "blocks": s.count_diff / n}
            for s in sorted(stats, key=lambda s: -s.size_diff)[:top]
        ]
        owners: dict[str, list[float]] = {}
        for s in after["trace"].compare_to(before["trace"], "traceback"):
            entry = owners.setdefault(_owner(s.traceback), [0.0, 0.0])
            entry[0] += s.size_diff / n
            entry[1] += s.count_diff / n
        out["owners"] = [{"owner": k, "bytes": v[0], "blocks": v[1]}
                         for k, v in sorted(owners.items(), key=lambda kv: -kv[1][0])[:top]]
    return out


def _owner(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame of the library or of the benchmark that led to an
    allocation (the line of our code that made trio or the socket module
    allocate), with the innermost frame's file."""
    frames = list(traceback)  # oldest first
    inner = frames[-1]
    for frame in reversed(frames):
        if "trio_msink" in frame.filename or frame.filename == __file__:
            where = frame.filename.split("trio_msink/")[-1]
            what = Path(inner.filename).name
            return f"{where}:{frame.lineno} ({what})"
    return f"{Path(inner.filename).name}:{inner.lineno} (outside the library)"


def measure_serve(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Serve the clients from a ``trio-msink serve`` subprocess (RSS only)."""
    source = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "_source.py"), "--size", str(args.size),
         "--rate", str(args.size * args.rate), "--seconds", str(args.timeout)],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    server = subprocess.Popen(
        [sys.executable, "-m", "trio_msink", "serve", "-", "--format", "raw",
         "--chunk-size", str(args.size), "--tcp", f"{HOST}:0", "--no-sync",
         "--timeout", "0", "--linger", "0", "--units-max", "-1", "--units-soft-max", "-1",
         "--unit-format", "buffers"],
        stdin=source.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    clients: ClientProcess | None = None
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("tcp://"):
            raise SystemExit(f"client_memory: trio-msink serve printed {url!r}")
        port = int(url.rsplit(":", 1)[1])
        time.sleep(args.settle)
        before = rss_bytes(server.pid)
        clients = ClientProcess(port, args.size, args.clients, kind == "stalled", args.timeout)
        _check_ready(clients.ready_line(), args.clients)
        time.sleep(args.settle)
        after = rss_bytes(server.pid)
        return {"rss_per_client": (after - before) / args.clients}
    finally:
        if clients is not None:
            clients.stop()
        for proc in (server, source):
            proc.kill()
            proc.wait()


# -- the command -------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients per kind")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="comma-separated: reading, stalled")
    parser.add_argument("--server", choices=("inproc", "serve"), default="inproc")
    parser.add_argument("--size", type=int, default=1316, help="buffer size, bytes")
    parser.add_argument("--rate", type=float, default=20.0, help="buffers per second")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds the stream flows before each snapshot")
    parser.add_argument("--top", type=int, default=12, help="allocation sites shown")
    parser.add_argument("--frames", type=int, default=16, help="tracemalloc frames")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds any one run may take")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # kind:traced, internal
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if args.size < 24:
        parser.error("--size must be at least 24 (the benchmark header)")
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or any(k not in KINDS for k in kinds):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    args.kinds = kinds
    return args


def _run_child(args: argparse.Namespace, kind: str, traced: bool) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", f"{kind}:{int(traced)}",
            "--clients", str(args.clients), "--size", str(args.size), "--rate", str(args.rate),
            "--settle", str(args.settle), "--top", str(args.top), "--frames", str(args.frames),
            "--timeout", str(args.timeout)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout + 30)
    if proc.returncode != 0:
        raise SystemExit(f"client_memory: the {kind} run failed:\n{proc.stderr.strip()}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _report(kind: str, server: str, n: int, result: dict[str, Any]) -> str:
    lines = [f"## {kind} clients: {n}, server {server}", ""]
    lines.append(f"RSS per client: {result['rss_per_client']:.0f} B "
                 f"({result['rss_per_client'] / 1024:.2f} KiB)")
    if "traced_per_client" in result:
        lines.append(f"tracemalloc per client: {result['traced_per_client']:.0f} B "
                     f"({result['traced_per_client'] / 1024:.2f} KiB) in "
                     f"{result['blocks_per_client']:.1f} blocks")
        lines += ["", "| allocation site | B/client | blocks/client |",
                  "|---|---:|---:|"]
        for site in result["sites"]:
            lines.append(f"| {site['site']} | {site['bytes']:.0f} | {site['blocks']:.2f} |")
        lines += ["", "| library line that allocated (innermost file) | B/client | blocks/client |",
                  "|---|---:|---:|"]
        for owner in result["owners"]:
            lines.append(f"| {owner['owner']} | {owner['bytes']:.0f} | {owner['blocks']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_fd_limit(2 * args.clients + 256)
    if args.child:
        kind, traced = args.child.split(":")
        result = measure_inproc(args, kind, traced == "1")
        print(json.dumps(result))
        return
    results: dict[str, Any] = {"clients": args.clients, "server": args.server,
                               "size": args.size, "rate": args.rate, "kinds": {}}
    for kind in args.kinds:
        if args.server == "serve":
            result = measure_serve(args, kind)
        else:
            result = _run_child(args, kind, traced=False)
            traced_result = _run_child(args, kind, traced=True)
            result.update({k: v for k, v in traced_result.items() if k != "rss_per_client"})
        results["kinds"][kind] = result
        print(_report(kind, args.server, args.clients, result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
