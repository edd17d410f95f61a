#!/usr/bin/env python3
"""Relay-hop latency: what each ``trio-msink serve tcp://...`` relay adds.

    python benchmarks/relay_latency.py            # 4 and 40 Mbit/s, 0/1/3 relays (~4 min)
    python benchmarks/relay_latency.py --quick    # 4 Mbit/s, a few seconds

An origin ``trio-msink serve - --format raw --chunk-size SIZE --tcp
127.0.0.1:0 --no-sync`` is fed through its stdin by the benchmark source
(stamped fixed-size buffers at a steady rate); 0, 1 or 3 relays ``trio-msink
serve tcp://HOST:PORT --format raw --chunk-size SIZE --tcp 127.0.0.1:0
--no-sync`` are chained behind it, and N clients on the last hop measure
receive time - the source's write time of every buffer (CLOCK_MONOTONIC, the
same clock in every process). The table gives p50/p99 per number of relays
and rate, and the latency each relay adds: (value with k relays - value with
none) / k. Runs for different numbers of relays alternate; each run starts
fresh processes. See benchmarks/README.md.
"""

# The per-run machinery (start-up, URL line, process groups) is _servers.py's
# and _procs.py's; the clients are the fan-out benchmark's (_clients.py).

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import MIN_BUFFER_SIZE, hist_percentile, merge_hist
from _procs import LineReader, stop_process
from _report import cpu_model
from _run import progress
from _servers import BENCH_DIR, HOST, Server, ServerError

PY = sys.executable
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

#: The origin and relay command lines; {size} and {upstream} are filled in.
#: Every other setting keeps the command's default: what a user who starts a
#: relay gets. --no-sync: raw buffers carry no timestamps to pace by.
ORIGIN_CMD = [PY, "-m", "trio_msink", "serve", "-", "--format", "raw", "--chunk-size", "{size}",
              "--tcp", f"{HOST}:0", "--no-sync"]
RELAY_CMD = [PY, "-m", "trio_msink", "serve", "tcp://{upstream}", "--format", "raw",
             "--chunk-size", "{size}", "--tcp", f"{HOST}:0", "--no-sync"]


@dataclass
class HopResult:
    """The clients' measurements with ``hops`` relays at one rate (every repeat pooled)."""

    mbit_s: float
    hops: int
    clients: int
    runs: int = 0
    seconds: float = 0.0  # measured window, summed over the runs
    bytes: int = 0
    buffers: int = 0
    lost: int = 0
    bad: int = 0
    drops: int = 0
    #: CPU seconds (user + system) in the windows: the origin's, all relays' together
    origin_cpu_s: float = 0.0
    relay_cpu_s: float = 0.0
    hist: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, other: HopResult) -> None:
        """Pool another run's measurements (same rate and relays) into this one."""
        self.errors += other.errors
        self.runs += other.runs
        self.seconds += other.seconds
        merge_hist(self.hist, other.hist)
        for name in ("bytes", "buffers", "lost", "bad", "drops", "origin_cpu_s",
                     "relay_cpu_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the latency samples, in ms."""
        us = hist_percentile(self.hist, q)
        return None if us is None else us / 1000

    @property
    def samples(self) -> int:
        """Latency samples pooled (weighted: a sample may stand for several buffers)."""
        return sum(self.hist.values())

    @property
    def loss_pct(self) -> float | None:
        """Buffers missed / (received + missed), in %."""
        total = self.lost + self.buffers
        return 100 * self.lost / total if total else None

    @property
    def origin_cpu_pct(self) -> float | None:
        """The origin's CPU time / window time, in % of one core."""
        return 100 * self.origin_cpu_s / self.seconds if self.seconds else None

    @property
    def relay_cpu_pct(self) -> float | None:
        """One relay's CPU time / window time (the mean over the relays), in % of one core."""
        if not self.seconds or not self.hops:
            return None
        return 100 * self.relay_cpu_s / self.seconds / self.hops

    @property
    def delivered_pct(self) -> float | None:
        """Bytes received / bytes the source offered to every client in the windows."""
        offered = self.mbit_s * 1e6 / 8 * self.seconds * self.clients
        return 100 * self.bytes / offered if offered else None


@dataclass
class Options:
    """What every run of one invocation shares (from the flags)."""

    size: int
    clients: int
    warmup: float
    duration: float
    samples: int
    logdir: Path


def _deadline(cmd: list[str], seconds: float) -> list[str]:
    """``cmd`` under coreutils ``timeout``: it ends even if the harness dies."""
    if shutil.which("timeout") is None:
        return cmd
    return ["timeout", "-k", "2", f"{seconds:.0f}", *cmd]


def _sleep_until(t_ns: int) -> None:
    while (left := t_ns - time.monotonic_ns()) > 0:
        time.sleep(min(left / 1e9, 0.5))


def _fill(cmd: list[str], **values: object) -> list[str]:
    return [arg.format(**values) for arg in cmd]


def run_chain(mbit_s: float, hops: int, opts: Options, number: int) -> HopResult:
    """One run: source -> origin -> ``hops`` relays -> clients; one measured window."""
    result = HopResult(mbit_s, hops, opts.clients)
    rate = mbit_s * 1e6 / 8  # bytes/s
    life = 30 + opts.warmup + opts.duration + 5 * hops  # every child's own deadline
    servers: list[Server] = []
    source: subprocess.Popen[bytes] | None = None
    clients: subprocess.Popen[bytes] | None = None
    lines: LineReader | None = None
    log_path = opts.logdir / f"{number:03d}-{mbit_s:g}mbit-{hops}hops.log"
    rfd, wfd = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(wfd, _F_SETPIPE_SZ, 1 << 20)
    with open(log_path, "wb", buffering=0) as log:
        try:
            try:
                servers.append(Server(_deadline(_fill(ORIGIN_CMD, size=opts.size), life),
                                      stdin_fd=rfd, log=log))
            finally:
                os.close(rfd)
            log.write(f"# origin: {' '.join(servers[0].cmd)}\n".encode())
            source = subprocess.Popen(
                [PY, str(BENCH_DIR / "_source.py"), "--size", str(opts.size),
                 "--rate", str(rate), "--seconds", str(life)],
                stdin=subprocess.DEVNULL, stdout=wfd, stderr=log,
            )
            os.close(wfd)
            wfd = -1
            for i in range(hops):
                cmd = _fill(RELAY_CMD, size=opts.size, upstream=f"{HOST}:{servers[-1].port}")
                servers.append(Server(_deadline(cmd, life), stdin_fd=subprocess.DEVNULL,
                                      log=log))
                log.write(f"# relay {i + 1}: {' '.join(servers[-1].cmd)}\n".encode())
            clients = subprocess.Popen(
                [PY, str(BENCH_DIR / "_clients.py"), "--host", HOST,
                 "--port", str(servers[-1].port), "--size", str(opts.size),
                 "--sockets", str(opts.clients), "--samples", str(opts.samples),
                 "--max-seconds", str(life), "--concurrency", str(opts.clients),
                 "--seed", str(number)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            )
            lines = LineReader([clients])
            [ready] = lines.wait_lines(b"ready", time.monotonic() + 20)
            words = (ready or b"").split()
            if len(words) != 3 or words[1] != str(opts.clients).encode():
                result.errors.append(f"clients not connected ({(ready or b'-').decode()})")
                return result
            t0 = time.monotonic_ns() + int(opts.warmup * 1e9)
            t1 = t0 + int(opts.duration * 1e9)
            assert clients.stdin is not None
            clients.stdin.write(f"go {t0} {t1}\n".encode())
            clients.stdin.flush()
            # CPU in the window: unlike latency, it hardly depends on what
            # else the machine runs, so it compares relay versions on a busy one.
            _sleep_until(t0)
            cpu0 = [s.cpu_seconds() for s in servers]
            _sleep_until(t1)
            cpu1 = [s.cpu_seconds() for s in servers]
            [report] = lines.wait_lines(b"{", time.monotonic() + opts.warmup
                                        + opts.duration + 15)
            dead = [i for i, s in enumerate(servers) if not s.alive()]
            if dead:
                result.errors.append("exited during the run: "
                                     + ", ".join("origin" if i == 0 else f"relay {i}"
                                                 for i in dead))
            try:
                data: dict[str, Any] = json.loads(report or b"")
            except ValueError:
                result.errors.append("the clients gave no report")
                return result
            result.runs, result.seconds = 1, (t1 - t0) / 1e9
            result.origin_cpu_s = cpu1[0] - cpu0[0]
            result.relay_cpu_s = sum(cpu1[1:]) - sum(cpu0[1:])
            merge_hist(result.hist, data["hist"])
            for name in ("bytes", "buffers", "lost", "bad", "drops"):
                setattr(result, name, int(data[name]))
            return result
        except ServerError as exc:
            what = "origin" if not servers else f"relay {len(servers)}"
            result.errors.append(f"{what}: {exc}")
            return result
        finally:
            if lines is not None:
                lines.close()
            if clients is not None:
                stop_process(clients)
            if source is not None:
                stop_process(source)
            if wfd >= 0:
                os.close(wfd)
            for server in reversed(servers):
                server.stop()


def run_plan(rates: Sequence[float], hops: Sequence[int], repeat: int,
             opts: Options) -> list[HopResult]:
    """Every (rate, relays) ``repeat`` times, relay counts in alternating order."""
    results = {(r, h): HopResult(r, h, opts.clients) for r in rates for h in hops}
    number = 0
    for mbit_s in rates:
        for rep in range(repeat):
            for h in (hops if rep % 2 == 0 else list(reversed(hops))):
                number += 1
                one = run_chain(mbit_s, h, opts, number)
                progress(f"  {mbit_s:g} Mbit/s, {h} relay(s), run {rep + 1}/{repeat}: "
                         + _describe(one))
                results[(mbit_s, h)].add(one)
    return list(results.values())


def _ms(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _describe(r: HopResult) -> str:
    if not r.runs:
        return "ERROR " + "; ".join(r.errors)
    text = (f"p50 {_ms(r.percentile_ms(0.5))} ms, p99 {_ms(r.percentile_ms(0.99))} ms, "
            f"{r.samples} samples, loss {_ms(r.loss_pct, '.3f')} %, "
            f"delivered {_ms(r.delivered_pct, '.1f')} %; CPU origin "
            f"{_ms(r.origin_cpu_pct, '.0f')} %, per relay {_ms(r.relay_cpu_pct, '.0f')} %")
    if r.errors:
        text += "  ERROR " + "; ".join(r.errors)
    return text


COLUMNS = ("Mbit/s", "relays", "N", "samples", "p50 ms", "p99 ms", "+p50 ms/relay",
           "+p99 ms/relay", "loss %", "delivered %", "origin CPU %", "CPU %/relay")


def table_rows(results: Sequence[HopResult]) -> list[dict[str, str]]:
    """One row per (rate, relays): pooled p50/p99 and the latency one relay adds."""
    base = {r.mbit_s: r for r in results if r.hops == 0 and r.runs}
    rows = []
    for r in results:
        p50, p99 = r.percentile_ms(0.5), r.percentile_ms(0.99)
        add50 = add99 = None
        zero = base.get(r.mbit_s)
        if r.hops and zero is not None and r.runs:
            z50, z99 = zero.percentile_ms(0.5), zero.percentile_ms(0.99)
            if p50 is not None and z50 is not None:
                add50 = (p50 - z50) / r.hops
            if p99 is not None and z99 is not None:
                add99 = (p99 - z99) / r.hops
        rows.append({
            "Mbit/s": f"{r.mbit_s:g}", "relays": str(r.hops), "N": str(r.clients),
            "samples": str(r.samples) if r.runs else "ERROR",
            "p50 ms": _ms(p50), "p99 ms": _ms(p99),
            "+p50 ms/relay": _ms(add50, "+.2f"), "+p99 ms/relay": _ms(add99, "+.2f"),
            "loss %": _ms(r.loss_pct, ".3f"), "delivered %": _ms(r.delivered_pct, ".1f"),
            "origin CPU %": _ms(r.origin_cpu_pct, ".1f"),
            "CPU %/relay": _ms(r.relay_cpu_pct, ".1f"),
        })
    return rows


def format_table(rows: Sequence[dict[str, str]]) -> str:
    """The rows as a markdown table, numbers right-aligned."""
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in COLUMNS}
    out = ["| " + " | ".join(c.rjust(widths[c]) for c in COLUMNS) + " |",
           "|" + "|".join("-" * (widths[c] + 1) + ":" for c in COLUMNS) + "|"]
    out += ["| " + " | ".join(row[c].rjust(widths[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(out)


def note_lines(results: Sequence[HopResult]) -> list[str]:
    """Errors, misaligned buffers, loss, drops and under-delivery, per row."""
    lines = []
    for r in results:
        what = f"note: {r.mbit_s:g} Mbit/s, {r.hops} relay(s):"
        if r.errors:
            why = "; ".join(sorted(set(r.errors)))
            lines.append(f"{what} {len(r.errors)} run(s) failed: {why}")
        if r.bad:
            lines.append(f"{what} {r.bad} misaligned buffer headers")
        if r.lost or r.drops:
            lines.append(f"{what} {r.lost} buffers lost, {r.drops} clients dropped")
        delivered = r.delivered_pct
        if delivered is not None and delivered < 95:
            lines.append(f"{what} only {delivered:.1f} % of the offered bytes delivered")
    return lines


def _floats(text: str) -> list[float]:
    values = [float(x) for x in text.split(",") if x.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("a comma list of positive numbers")
    return values


def _ints(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("a comma list of numbers >= 0")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="relay_latency.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", type=_floats, default=None, metavar="MBIT/S,...",
                   help="stream rates in Mbit/s (default: 4,40; --quick: 4)")
    p.add_argument("--relays", type=_ints, default=[0, 1, 3], metavar="K,...",
                   help="numbers of chained relays; 0 is the origin alone, the base "
                        "of the added latency (default: 0,1,3)")
    p.add_argument("--clients", type=int, default=None,
                   help="clients on the last hop (default: 10; --quick: 2)")
    p.add_argument("--size", type=int, default=1316,
                   help="buffer size in bytes (default: 1316, 7 MPEG-TS packets)")
    p.add_argument("--duration", type=float, default=None,
                   help="measured seconds per run (default: 5; --quick: 1)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds between all clients connected and the window "
                        "(default: 1; --quick: 0.3)")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per (rate, relays), pooled (default: 3; --quick: 1)")
    p.add_argument("--samples", type=int, default=64,
                   help="buffer headers a client decodes per recv (default: 64)")
    p.add_argument("--quick", action="store_true", help="one rate, short runs")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--keep-logs", action="store_true", help="keep the per-run logs")
    args = p.parse_args(argv)
    args.rates = args.rates or ([4.0] if args.quick else [4.0, 40.0])
    args.clients = args.clients or (2 if args.quick else 10)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.size < MIN_BUFFER_SIZE or args.size > (512 << 10):
        p.error(f"--size must be between {MIN_BUFFER_SIZE} and 524288 bytes")
    if args.clients < 1 or args.repeat < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--clients and --repeat must be >= 1, --duration > 0, --warmup >= 0")
    return args


def _code_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(BENCH_DIR), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    return "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    logdir = Path(tempfile.mkdtemp(prefix="relay-latency-"))
    opts = Options(size=args.size, clients=args.clients, warmup=args.warmup,
                   duration=args.duration, samples=args.samples, logdir=logdir)
    progress(f"relay_latency: rates {','.join(f'{r:g}' for r in args.rates)} Mbit/s x "
             f"relays {','.join(map(str, args.relays))} x {args.repeat} run(s); "
             f"logs in {logdir}")
    started = time.monotonic()
    results: list[HopResult] = []
    try:
        results = run_plan(args.rates, args.relays, args.repeat, opts)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    elapsed = time.monotonic() - started
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}; code {_code_version()}")
    origin = _fill(ORIGIN_CMD, size=args.size)[1:]
    relay = _fill(RELAY_CMD, size=args.size, upstream="HOST:PORT")[1:]
    print(f"origin: python3 {' '.join(origin)}")
    print(f"relay:  python3 {' '.join(relay)}")
    print(f"{args.size}-byte buffers; {args.clients} client(s) on the last hop; window "
          f"{args.duration:g} s after {args.warmup:g} s warm-up; {args.repeat} run(s) "
          f"pooled; load average at start {loadavg}")
    print()
    rows = table_rows(results)
    print(format_table(rows))
    notes = note_lines(results)
    if notes:
        print()
        print("\n".join(notes))
    print(f"\n(total {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "columns": list(COLUMNS), "rows": rows,
            "results": [asdict(r) for r in results],
        }, indent=1))
    failed = any(r.errors for r in results)
    if args.keep_logs or failed:
        progress(f"logs kept in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 1 if any(not r.runs for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
