#!/usr/bin/env python3
"""WebSocket benchmark: trio-msink's WebSocket front against its TCP front,
Python ``websockets`` (asyncio ``broadcast``) and Node.js ``ws``, side by side.

    python benchmarks/websocket.py             # 100 and 1,000 clients (~6 min)
    python benchmarks/websocket.py --quick     # 100 clients, short windows (~1 min)
    python benchmarks/websocket.py --clients 100,1000 --duration 5 --repeat 3

Every server gets the same source (4096-byte stamped buffers paced at
500 kB/s per client, see ``_source.py``) on its stdin and N real clients
from separate processes (``_clients.py``; ``--ws`` for the WebSocket
servers: one binary message per buffer). The table shows medians; the lines
after it the ratios and the targets: at 100 clients the WebSocket front's
CPU within 1.3x of the TCP front's; at 1,000 clients full delivery (no loss,
>= 95 % of the offered rate) with p99 < 100 ms, ahead of both peers.

Setup: the peers are installed on first use into ``--cache`` (default
``~/.cache/trio_msink_bench``) with ``pip install --target`` and
``npm install --prefix``; nothing is installed elsewhere or committed.
A peer that cannot be installed (no ``node``, no registry) is left out with
a note. Only 127.0.0.1 is ever a target.
"""

# The harness is fanout.py's (_run.run_once, _results, _report); this file
# adds the servers, the setup step and the WebSocket report.

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _plan import SCENARIOS, Case, Scenario
from _report import format_table, machine_lines, write_json
from _results import Result
from _run import Options, progress, run_case
from _servers import ServerSpec

SCENARIO = "ws-paced"
#: The issue's case: 4096-byte buffers at 500 kB/s per client; the limits
#: are the fan-out benchmark's defaults (32 MiB of lag, no soft limit), which
#: a client that keeps up never meets. Registered here only, so that
#: fanout.py's plan does not grow.
SCENARIOS.setdefault(SCENARIO, Scenario(
    SCENARIO, rate=500e3, sizes=(4096,), clients=(100, 1000),
    about="500 kB/s per client, every server (WebSocket comparison)"))

#: label -> (how it is started, whether its clients speak WebSocket)
SERVERS: dict[str, ServerSpec] = {
    "trio-tcp": ServerSpec("trio-tcp", "trio", trio_cmd="cli"),
    "trio-ws": ServerSpec("trio-ws", "trio", trio_cmd="cli-ws", client_args=("--ws",)),
    "websockets": ServerSpec("websockets", "peer", trio_cmd="websockets",
                             client_args=("--ws",)),
    "node-ws": ServerSpec("node-ws", "peer", trio_cmd="node-ws", client_args=("--ws",)),
}
CPU_RATIO_NEED = 1.3
P99_NEED_MS = 100.0


def _csv(kind: type[int] | type[str]) -> object:
    def parse(text: str) -> list[object]:
        return [kind(x) for x in text.split(",") if x.strip()]
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="websocket.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", type=_csv(str), default=list(SERVERS),
                   help=f"comma list of {','.join(SERVERS)} (default: all)")
    p.add_argument("--clients", type=_csv(int), default=None,
                   help="numbers of clients (default: 100,1000; --quick: 100)")
    p.add_argument("--size", type=int, default=4096, help="buffer size (default: 4096)")
    p.add_argument("--rate", type=float, default=500e3,
                   help="bytes/s per client (default: 500000)")
    p.add_argument("--duration", type=float, default=None,
                   help="measured seconds per run (default: 5, --quick: 2)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds after the clients connected (default: 2, --quick: 1)")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per server and case, interleaved (default: 2, --quick: 1)")
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--cache", type=Path,
                   default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                   / "trio_msink_bench", help="where the peers are installed")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    for name in args.servers:
        if name not in SERVERS:
            p.error(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
    args.clients = args.clients or ([100] if args.quick else [100, 1000])
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.repeat = args.repeat or (1 if args.quick else 2)
    args.sweep_repeat = 0
    return args


def setup(cache: Path, names: Sequence[str]) -> list[str]:
    """Install the peers into ``cache`` when missing and put them on the
    children's paths; returns the names that are usable."""
    usable = []
    py, node = cache / "py", cache / "node"
    for name in names:
        try:
            if name == "websockets" and not (py / "websockets").is_dir():
                progress(f"setup: pip install --target {py} websockets")
                subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target",
                                str(py), "websockets"], check=True, timeout=300)
            if name == "node-ws":
                if shutil.which("node") is None or shutil.which("npm") is None:
                    progress("note: node/npm not found: node-ws left out")
                    continue
                if not (node / "node_modules" / "ws").is_dir():
                    node.mkdir(parents=True, exist_ok=True)
                    progress(f"setup: npm install --prefix {node} ws")
                    subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund",
                                    "--prefix", str(node), "ws"], check=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            progress(f"note: could not install {name} ({exc}): left out")
            continue
        usable.append(name)
    paths = [str(py), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ["NODE_PATH"] = str(node / "node_modules")
    return usable


def _by(results: list[Result]) -> dict[tuple[str, int], Result]:
    return {(r.server, r.clients): r for r in results}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ratio_lines(results: list[Result]) -> list[str]:
    """The ratios of the WebSocket front to the TCP front and to the peers."""
    by = _by(results)
    lines = []
    for n in sorted({r.clients for r in results}):
        ws = by.get(("trio-ws", n))
        if ws is None:
            continue
        for other in ("trio-tcp", "websockets", "node-ws"):
            r = by.get((other, n))
            if r is None:
                continue
            parts = []
            for name, attr in (("CPU", "cpu_pct"), ("MB/s", "mb_s"), ("p99", "p99_ms")):
                a, b = getattr(ws, attr), getattr(r, attr)
                parts.append(f"{name} {a / b:.2f}x" if a is not None and b else f"{name} -")
            lines.append(f"ratio trio-ws/{other} N={n}: " + ", ".join(parts))
    return lines


def _full(r: Result) -> tuple[bool, str]:
    """Full delivery: the fan-out benchmark's verdict with a 100 ms p99."""
    return r.verdict(P99_NEED_MS)


def target_lines(results: list[Result]) -> list[str]:
    by = _by(results)
    lines = []
    ws, tcp = by.get(("trio-ws", 100)), by.get(("trio-tcp", 100))
    if ws is not None and tcp is not None and ws.cpu_pct and tcp.cpu_pct:
        ratio = ws.cpu_pct / tcp.cpu_pct
        verdict = "MET" if ratio <= CPU_RATIO_NEED else "MISSED"
        lines.append(f"target CPU at 100 clients: trio-ws {ws.cpu_pct:.0f}% / trio-tcp "
                     f"{tcp.cpu_pct:.0f}% = {ratio:.2f}x (need <= {CPU_RATIO_NEED}x): {verdict}")
    ws = by.get(("trio-ws", 1000))
    if ws is not None:
        ok, why = _full(ws)
        peers = [by[(p, 1000)] for p in ("websockets", "node-ws") if (p, 1000) in by]
        ahead = all(_ahead(ws, p) for p in peers)
        verdict = "MET" if ok and ahead else "MISSED"
        peer_text = (f"ahead of {', '.join(p.server for p in peers)}: "
                     f"{'yes' if ahead else 'no'}" if peers else "no peer measured")
        lines.append(
            f"target 1,000 clients: trio-ws {_fmt(ws.mb_s, '.1f')} MB/s, p99 "
            f"{_fmt(ws.p99_ms, '.1f')} ms, loss {_fmt(ws.loss_pct, '.3f')}% "
            f"({'full delivery' if ok else 'not full: ' + why}); {peer_text}: {verdict}")
    return lines


def _ahead(ws: Result, peer: Result) -> bool:
    """At least the peer's delivery with a lower p99 (a failed peer is behind)."""
    if peer.error or peer.mb_s is None:
        return True
    return (ws.mb_s or 0) >= 0.99 * peer.mb_s and (ws.p99_ms or 1e9) < (peer.p99_ms or 1e9)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    names = setup(args.cache, args.servers)
    servers = [SERVERS[name] for name in names]
    logdir = Path(tempfile.mkdtemp(prefix="websocket-"))
    opts = Options(duration=args.duration, warmup=args.warmup, buffers_max=None,
                   buffers_soft_max=None, recover_policy=None, client_procs=args.client_procs,
                   connect_concurrency=8, prime=50.0, rcvbuf=2 << 20, samples=8,
                   p99_limit_ms=P99_NEED_MS, logdir=logdir, verbose=False)
    progress(f"websocket: {', '.join(names)} at {', '.join(map(str, args.clients))} "
             f"clients; logs in {logdir}")
    started = time.monotonic()
    results: list[Result] = []
    try:
        for n in args.clients:
            progress(f"N={n}")
            scenario = SCENARIOS[SCENARIO]
            if args.rate != scenario.rate:
                SCENARIOS[SCENARIO] = Scenario(SCENARIO, rate=args.rate, about=scenario.about)
            results += run_case(servers, Case(SCENARIO, args.size, n), opts, args.repeat)
    except KeyboardInterrupt:
        progress("interrupted: partial results")
    print("\n".join(machine_lines(args, servers)))
    print()
    print(format_table(results))
    print()
    ratios, targets = ratio_lines(results), target_lines(results)
    print("\n".join(ratios + targets))
    for r in results:
        if r.error or r.why or r.bad:
            print(f"note: {r.server} N={r.clients}: {r.error or r.why}"
                  f"{f' ({r.bad} misaligned headers)' if r.bad else ''}")
    if args.json is not None:
        write_json(args.json, args, servers, results, ratios + targets)
    if any(r.error for r in results):
        progress(f"done in {time.monotonic() - started:.0f} s; logs kept in {logdir}")
    else:
        progress(f"done in {time.monotonic() - started:.0f} s")
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
