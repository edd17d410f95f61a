#!/usr/bin/env python3
"""Fan-out benchmark: trio_msink against GStreamer's tcpserversink, side by side.

    python benchmarks/fanout.py            # the default plan (~10-15 min)
    python benchmarks/fanout.py --quick    # a smaller plan (~2-3 min)

Each run starts one server on 127.0.0.1, feeds its stdin from a source process
(stamped fixed-size buffers, paced or unpaced), connects N real TCP clients
from a few client processes, measures during a fixed window and prints one
table (see benchmarks/README.md for the columns). Servers are interleaved and
every run is repeated; the table shows medians, then trio/gst ratio rows.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import platform
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from _common import hist_percentile, merge_hist, percentile
from _servers import (
    BENCH_DIR,
    COMMANDS,
    DEFAULT_TRIO_CMD,
    HOST,
    Server,
    ServerError,
    ServerSpec,
    gst_available,
    proc_cpu_seconds,
)

PY = sys.executable
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


# --------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Scenario:
    name: str
    #: per-client stream rate in bytes/s; 0: unpaced (as fast as the server reads)
    rate: float = 0.0
    #: "none", "one" (one never-reading client among N) or "all"
    stalled: str = "none"
    #: (min, max) seconds a client stays before it leaves and joins again
    churn: tuple[float, float] | None = None
    sync_method: str = "latest"
    #: limits, as bytes of lag (turned into buffers for each size; -1: none)
    max_lag: int = 32 << 20
    soft_lag: int = -1
    recover_policy: str = "none"
    #: buffers-max as seconds of stream instead (paced scenarios only)
    max_lag_s: float | None = None
    #: at least this warm-up (the stalled client must fill its socket buffers)
    min_warmup: float = 0.0
    sweep: bool = False
    sizes: tuple[int, ...] = (1316,)
    clients: tuple[int, ...] = (100,)
    quick_sizes: tuple[int, ...] = ()
    quick_clients: tuple[int, ...] = ()
    about: str = ""


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("unpaced", sizes=(1316, 4096, 65536), quick_sizes=(4096, 65536),
             max_lag=64 << 20, soft_lag=16 << 20, recover_policy="resync-latest",
             about="source as fast as the server reads; a client 16 MiB behind "
                   "resyncs to the latest buffer (loss)"),
    Scenario("paced-sweep", sweep=True, sizes=(1316, 4096), clients=(100, 1000),
             quick_sizes=(1316, 4096), quick_clients=(100,),
             about="highest paced rate with no loss, no drop, p99 < limit, >=95% delivered"),
    Scenario("stalled", rate=1e6, stalled="one", max_lag_s=1.0, min_warmup=4.0,
             sizes=(4096,), quick_sizes=(4096,),
             about="1 MB/s; one of the N clients never reads; buffers-max = 1 s of "
                   "stream: it is dropped once its socket buffers are full too"),
    Scenario("stalled-all", rate=50e3, stalled="all", sizes=(4096,), clients=(1000,),
             about="50 kB/s; no client reads: server memory per connected client"),
    Scenario("churn", rate=0.5e6, churn=(0.2, 1.0), sync_method="latest-keyframe",
             about="0.5 MB/s per client; clients leave after 0.2-1 s and join again"),
    Scenario("ttfb", rate=50e3, churn=(0.1, 0.3), sync_method="latest-keyframe",
             quick_sizes=(1316,),
             about="50 kB/s; clients leave after 0.1-0.3 s and join again: TTFB of joins"),
)}
QUICK_SCENARIOS = ("unpaced", "paced-sweep", "stalled", "ttfb")


@dataclass(frozen=True)
class Case:
    scenario: str
    size: int
    clients: int


def build_plan(args: argparse.Namespace) -> list[Case]:
    names = args.scenarios or (QUICK_SCENARIOS if args.quick else tuple(SCENARIOS))
    plan = []
    for name in names:
        scen = SCENARIOS[name]
        sizes = args.sizes or (scen.quick_sizes if args.quick and scen.quick_sizes
                               else scen.sizes)
        clients = args.clients or (scen.quick_clients if args.quick and scen.quick_clients
                                   else scen.clients)
        plan += [Case(name, size, n) for size in sizes for n in clients]
    return plan


# --------------------------------------------------------------------------- results

@dataclass
class Result:
    """One run (or the median of several) of one server on one case."""

    server: str
    scenario: str
    size: int
    clients: int
    rate: float | None = None  # per-client source rate, bytes/s; None: unpaced
    mb_s: float | None = None  # aggregate delivered, 1e6 bytes/s
    mb_per_cpu_s: float | None = None
    cpu_pct: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    loss_pct: float | None = None
    drops: float | None = None
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None
    rss_mib: float | None = None
    kib_per_client: float | None = None
    # details (JSON only)
    readers: int = 0  # clients that read (N minus the stalled ones)
    lost: int = 0
    buffers: int = 0
    bad: int = 0
    joins: int = 0
    connect_fail: int = 0
    stalled_dropped: int = 0
    ttfb_initial_p50_ms: float | None = None
    connect_s: float | None = None  # until every client had its first byte
    source_cpu_pct: float | None = None
    client_cpu_pct: float | None = None  # the busiest client process
    passed: bool | None = None
    why: str = ""
    error: str = ""
    runs: int = 1

    def verdict(self, p99_limit_ms: float) -> tuple[bool, str]:
        """Does this paced run count as sustained (sweep criterion)?"""
        if self.error:
            return False, "error"
        reasons = []
        offered = (self.rate or 0) * self.readers / 1e6
        if self.lost or (self.loss_pct or 0) > 0:
            reasons.append("loss")
        if self.drops:
            reasons.append("drops")
        if self.bad:
            reasons.append("misaligned")
        if self.p99_ms is None or self.p99_ms >= p99_limit_ms:
            reasons.append("p99")
        if (self.mb_s or 0) < 0.95 * offered:
            reasons.append("short")
        return not reasons, ",".join(reasons)


NUMERIC = ("rate", "mb_s", "mb_per_cpu_s", "cpu_pct", "p50_ms", "p99_ms", "loss_pct", "drops",
           "ttfb_p50_ms", "ttfb_p99_ms", "rss_mib", "kib_per_client", "source_cpu_pct",
           "client_cpu_pct", "ttfb_initial_p50_ms", "connect_s")


def median_result(results: Sequence[Result]) -> Result:
    ok = [r for r in results if not r.error] or list(results)
    out = replace(ok[0], runs=len(ok))
    for name in NUMERIC:
        values = [getattr(r, name) for r in ok if getattr(r, name) is not None]
        setattr(out, name, statistics.median(values) if values else None)
    for name in ("lost", "bad", "connect_fail", "stalled_dropped"):
        setattr(out, name, max(getattr(r, name) for r in ok))
    if any(r.error for r in results):
        out.why = "; ".join(sorted({r.error for r in results if r.error}))
    return out


# --------------------------------------------------------------------------- one run

@dataclass
class Options:
    duration: float
    warmup: float
    buffers_max: int | None
    buffers_soft_max: int | None
    recover_policy: str | None
    client_procs: int
    connect_concurrency: int
    prime: float
    rcvbuf: int
    samples: int
    p99_limit_ms: float
    logdir: Path
    verbose: bool
    seq: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    def limits(self, scen: Scenario, size: int, rate: float) -> tuple[int, int, str]:
        """(buffers-max, buffers-soft-max, recover-policy), the same on every
        server: a flag if given, else the scenario's (in bytes or seconds of lag)."""
        if scen.max_lag_s is not None and rate > 0:
            hard = max(16, int(scen.max_lag_s * rate / size))
        else:
            hard = max(64, scen.max_lag // size) if scen.max_lag > 0 else -1
        soft = max(16, scen.soft_lag // size) if scen.soft_lag > 0 else -1
        if self.buffers_max is not None:
            hard = self.buffers_max
        if self.buffers_soft_max is not None:
            soft = self.buffers_soft_max
        if hard > 0 and soft > hard:
            soft = hard
        return hard, soft, self.recover_policy or scen.recover_policy


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class _Lines:
    """Line reader over several child stdouts, with deadlines."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self.procs = procs
        self.bufs = [b""] * len(procs)
        self.sel = selectors.DefaultSelector()
        for i, p in enumerate(procs):
            assert p.stdout is not None
            os.set_blocking(p.stdout.fileno(), False)
            self.sel.register(p.stdout, selectors.EVENT_READ, i)

    def wait_lines(self, prefix: bytes, deadline: float) -> list[bytes | None]:
        """Until every child has written a line starting with ``prefix`` (or the
        deadline); returns each child's first such line (``None``: none)."""
        def find(buf: bytes) -> bytes | None:
            for line in buf.split(b"\n")[:-1]:
                if line.startswith(prefix):
                    return line
            return None

        while time.monotonic() < deadline:
            if all(find(b) is not None for b in self.bufs):
                break
            for key, _ in self.sel.select(min(0.2, max(0.0, deadline - time.monotonic()))):
                i = key.data
                try:
                    chunk = os.read(key.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.sel.unregister(key.fileobj)
                    self.bufs[i] += b"\n" + prefix + b" EOF\n"  # stop waiting for it
                self.bufs[i] += chunk
        return [find(b) for b in self.bufs]

    def close(self) -> None:
        self.sel.close()


def _stop(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def run_once(spec: ServerSpec, case: Case, rate: float, opts: Options) -> Result:
    """Start server, source and clients; measure one window; stop everything."""
    scen = SCENARIOS[case.scenario]
    n = case.clients
    stalled = {"none": 0, "one": 1, "all": n}[scen.stalled]
    result = Result(spec.label, case.scenario, case.size, n, rate=rate or None,
                    readers=n - stalled)
    number = next(opts.seq)
    log_path = opts.logdir / f"{number:03d}-{spec.label}-{case.scenario}-{case.size}-{n}.log"
    life = 30 + opts.warmup + opts.duration + n * 0.05  # every child's own deadline
    server: Server | None = None
    source: subprocess.Popen[bytes] | None = None
    clients: list[subprocess.Popen[bytes]] = []
    lines: _Lines | None = None
    rfd, wfd = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(wfd, _F_SETPIPE_SZ, 1 << 20)
    with open(log_path, "wb", buffering=0) as log:
        try:
            log.write(f"# {spec.label} {case} rate={rate}\n".encode())
            try:
                hard, soft, policy = opts.limits(scen, case.size, rate)
                server = Server(spec, size=case.size, buffers_max=hard, buffers_soft_max=soft,
                                sync_method=scen.sync_method, recover_policy=policy,
                                stdin_fd=rfd, log=log)
            except ServerError as exc:
                result.error = f"server: {exc}"
                return result
            finally:
                os.close(rfd)
            log.write(f"# server: {' '.join(server.cmd)}\n".encode())
            source = subprocess.Popen(
                [PY, str(BENCH_DIR / "_source.py"), "--size", str(case.size),
                 "--rate", str(rate), "--seconds", str(life), "--prime", str(opts.prime)],
                stdin=subprocess.PIPE, stdout=wfd, stderr=log,
            )
            os.close(wfd)
            wfd = -1
            time.sleep(0.2)
            rss0 = server.rss_kib()
            procs = max(1, min(opts.client_procs, n))
            counts = _split(n, procs)
            stalled_counts = _split(stalled, procs) if scen.stalled == "all" else \
                [stalled] + [0] * (procs - 1)
            for i, (k, s) in enumerate(zip(counts, stalled_counts, strict=True)):
                cmd = [PY, str(BENCH_DIR / "_clients.py"), "--host", HOST,
                       "--port", str(server.port), "--size", str(case.size),
                       "--sockets", str(k), "--stalled", str(s), "--rcvbuf", str(opts.rcvbuf),
                       "--samples", str(opts.samples), "--max-seconds", str(life),
                       "--concurrency", str(opts.connect_concurrency),
                       "--seed", str(number * 100 + i)]
                if scen.churn:
                    cmd += ["--churn", f"{scen.churn[0]},{scen.churn[1]}"]
                clients.append(subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=log))
            lines = _Lines(clients)
            t_connect = time.monotonic()
            ready = lines.wait_lines(b"ready", t_connect + 20 + n * 0.03)
            result.connect_s = time.monotonic() - t_connect
            connected = 0
            for line in ready:
                words = (line or b"").split()
                if len(words) == 3 and words[1].isdigit():
                    connected += int(words[1])
            if connected < n:
                log.write(f"# only {connected}/{n} clients connected\n".encode())
            if not server.alive():
                result.error = "server died while clients connected"
                return result
            t0 = time.monotonic_ns() + int(max(opts.warmup, scen.min_warmup) * 1e9)
            t1 = t0 + int(opts.duration * 1e9)
            for c in [source, *clients]:
                assert c.stdin is not None
                c.stdin.write(f"go {t0} {t1}\n".encode())
                c.stdin.flush()
            helpers = [source.pid] + [c.pid for c in clients]
            _sleep_until(t0)
            cpu0 = server.cpu_seconds()
            helper0 = [proc_cpu_seconds(pid) for pid in helpers]
            _sleep_until(t1)
            cpu1 = server.cpu_seconds()
            helper1 = [proc_cpu_seconds(pid) for pid in helpers]
            window = (t1 - t0) / 1e9
            result.source_cpu_pct = 100 * (helper1[0] - helper0[0]) / window
            result.client_cpu_pct = max(100 * (b - a) / window
                                        for a, b in zip(helper0[1:], helper1[1:], strict=True))
            rss1 = server.rss_kib()
            alive = server.alive()
            outs = lines.wait_lines(b"{", time.monotonic() + 15)
            reports: list[dict[str, Any]] = []
            for line in outs:
                with contextlib.suppress(TypeError, ValueError):
                    reports.append(json.loads(line or b""))
            if len(reports) < len(clients):
                result.error = f"{len(clients) - len(reports)} client process(es) gave no report"
            if not alive:
                result.error = "server exited during the run"
            _fill(result, reports, t1 - t0, cpu1 - cpu0, rss0, rss1,
                  churn=scen.churn is not None)
            if connected < n:
                result.why = f"{connected}/{n} connected"
            return result
        finally:
            if lines is not None:
                lines.close()
            for c in clients:
                _stop(c)
            if source is not None:
                _stop(source)
            if wfd >= 0:
                os.close(wfd)
            if server is not None:
                server.stop()


def _sleep_until(t_ns: int) -> None:
    while (left := t_ns - time.monotonic_ns()) > 0:
        time.sleep(min(left / 1e9, 0.5))


def _fill(result: Result, reports: list[dict[str, Any]], window_ns: int, cpu: float,
          rss0: int, rss1: int, *, churn: bool) -> None:
    hist: dict[int, int] = {}
    ttfb: list[int] = []
    ttfb_initial: list[int] = []
    total = lost = buffers = 0
    for rep in reports:
        merge_hist(hist, rep["hist"])
        total += rep["bytes"]
        lost += rep["lost"]
        buffers += rep["buffers"]
        result.bad += rep["bad"]
        result.connect_fail += rep["connect_fail"]
        result.stalled_dropped += rep["stalled_dropped"]
        result.joins += rep["sessions"] if churn else 0
        result.drops = (result.drops or 0) + rep["drops"]
        ttfb += rep["ttfb_window"]
        ttfb_initial += rep["ttfb_initial"]
    seconds = window_ns / 1e9
    mb = total / 1e6
    result.lost, result.buffers = lost, buffers
    if result.readers:
        result.mb_s = mb / seconds
        result.mb_per_cpu_s = mb / cpu if cpu > 0 else None
    result.cpu_pct = 100 * cpu / seconds
    p50, p99 = hist_percentile(hist, 0.50), hist_percentile(hist, 0.99)
    result.p50_ms = p50 / 1000 if p50 is not None else None
    result.p99_ms = p99 / 1000 if p99 is not None else None
    result.loss_pct = 100 * lost / (lost + buffers) if lost + buffers else None
    # TTFB of joins inside the window (churn); the initial connections join a
    # server that is primed at a low rate, their TTFB goes to the JSON only.
    t50, t99 = percentile(ttfb, 0.50), percentile(ttfb, 0.99)
    ti = percentile(ttfb_initial, 0.50)
    result.ttfb_initial_p50_ms = ti / 1000 if ti is not None else None
    result.ttfb_p50_ms = t50 / 1000 if t50 is not None else None
    result.ttfb_p99_ms = t99 / 1000 if t99 is not None else None
    result.rss_mib = rss1 / 1024
    result.kib_per_client = (rss1 - rss0) / result.clients if result.clients else None


# --------------------------------------------------------------------------- drivers

def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def describe(r: Result) -> str:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)
    rate = "max" if not r.rate else f"{r.rate / 1e6:.3g}MB/s"
    text = (f"{r.server} {r.scenario} {r.size}B N={r.clients} src={rate}: "
            f"{f(r.mb_s, '.1f')} MB/s, {f(r.mb_per_cpu_s, '.0f')} MB/CPU-s, "
            f"p99 {f(r.p99_ms, '.1f')} ms, loss {f(r.loss_pct, '.3f')}%, "
            f"drops {f(r.drops, '.0f')}, TTFB {f(r.ttfb_p50_ms, '.2f')} ms; "
            f"CPU server {f(r.cpu_pct, '.0f')}% source {f(r.source_cpu_pct, '.0f')}% "
            f"busiest client {f(r.client_cpu_pct, '.0f')}%; connect {f(r.connect_s, '.1f')} s")
    if r.error:
        text += f"  ERROR {r.error}"
    if r.why:
        text += f"  [{r.why}]"
    return text


def run_case(servers: Sequence[ServerSpec], case: Case, opts: Options,
             repeat: int) -> list[Result]:
    scen = SCENARIOS[case.scenario]
    per_server: dict[str, list[Result]] = {s.label: [] for s in servers}
    for rep in range(repeat):
        order = list(servers) if rep % 2 == 0 else list(reversed(servers))
        for spec in order:
            r = run_once(spec, case, scen.rate, opts)
            progress(f"  rep {rep + 1}/{repeat} " + describe(r))
            per_server[spec.label].append(r)
    return [median_result(per_server[s.label]) for s in servers]


@dataclass
class _Sweep:
    spec: ServerSpec
    rate: float
    best: Result | None = None
    worst: Result | None = None
    lo: float | None = None
    hi: float | None = None
    bisections: int = 0
    probes: int = 0
    done: bool = False


def sweep_case(servers: Sequence[ServerSpec], case: Case, opts: Options, repeat: int,
               *, start_mb_s: float, steps: int, max_probes: int) -> list[Result]:
    """Per server, the highest paced rate that passes :meth:`Result.verdict`.

    Doubling (or halving) from ``start_mb_s`` aggregate until the verdict
    flips, then ``steps`` geometric bisections. Servers probe in lockstep.
    """
    readers = case.clients
    per_server: dict[str, list[Result]] = {s.label: [] for s in servers}
    max_rate = 8000e6 / readers  # 8 GB/s aggregate: beyond any loopback
    min_rate = 0.25e6 / readers
    for rep in range(repeat):
        states = [_Sweep(s, start_mb_s * 1e6 / readers) for s in servers]
        if rep % 2:
            states.reverse()
        while not all(st.done for st in states):
            for st in states:
                if st.done:
                    continue
                r = run_once(st.spec, case, st.rate, opts)
                ok, why = r.verdict(opts.p99_limit_ms)
                r.passed, r.why = ok, why
                st.probes += 1
                progress(f"  sweep {rep + 1}/{repeat} probe {st.probes} "
                         f"{'PASS' if ok else 'FAIL'} " + describe(r))
                if ok:
                    st.lo, st.best = st.rate, r
                else:
                    st.hi, st.worst = st.rate, r
                if st.lo is None:
                    assert st.hi is not None
                    st.rate = st.hi / 2
                    st.done = st.rate < min_rate
                elif st.hi is None:
                    st.rate = st.lo * 2
                    st.done = st.rate > max_rate
                else:
                    st.done = st.bisections >= steps
                    st.bisections += 1
                    st.rate = math.sqrt(st.lo * st.hi)
                st.done = st.done or st.probes >= max_probes
        for st in states:
            if st.best is not None:
                res = st.best
            else:  # nothing passed: report the lowest probe with rate 0
                assert st.worst is not None
                res = replace(st.worst, rate=0.0, mb_s=0.0)
                res.why = f"nothing passed ({st.worst.why})"
            per_server[st.spec.label].append(res)
    return [median_result(per_server[s.label]) for s in servers]


# --------------------------------------------------------------------------- output

COLUMNS: list[tuple[str, str, str]] = [
    # header, Result attribute, format
    ("server", "server", "s"),
    ("scenario", "scenario", "s"),
    ("size", "size", "d"),
    ("N", "clients", "d"),
    ("src MB/s", "rate", "rate"),
    ("MB/s", "mb_s", ".1f"),
    ("MB/CPU-s", "mb_per_cpu_s", ".0f"),
    ("CPU %", "cpu_pct", ".0f"),
    ("p50 ms", "p50_ms", ".2f"),
    ("p99 ms", "p99_ms", ".2f"),
    ("loss %", "loss_pct", ".3f"),
    ("drops", "drops", ".0f"),
    ("TTFB p50 ms", "ttfb_p50_ms", ".2f"),
    ("TTFB p99 ms", "ttfb_p99_ms", ".2f"),
    ("RSS MiB", "rss_mib", ".1f"),
    ("KiB/client", "kib_per_client", ".1f"),
]
RATIO_ATTRS = ("rate", "mb_s", "mb_per_cpu_s", "p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms",
               "rss_mib", "kib_per_client")


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "rate":
        return "max" if not value else f"{value / 1e6:.3g}"
    if fmt == "x":
        return f"{value:.2f}x"
    return format(value, fmt)


def ratio_rows(results: list[Result]) -> list[dict[str, str]]:
    rows = []
    by_case: dict[tuple[str, int, int], dict[str, Result]] = {}
    for r in results:
        by_case.setdefault((r.scenario, r.size, r.clients), {})[r.server] = r
    for (scenario, size, n), group in by_case.items():
        gst = group.get("gst")
        if gst is None or gst.error:
            continue
        for label, r in group.items():
            if label == "gst" or r.error:
                continue
            row = {"server": f"{label}/gst", "scenario": scenario, "size": str(size),
                   "N": str(n)}
            for header, attr, _ in COLUMNS[4:]:
                a, b = getattr(r, attr), getattr(gst, attr)
                ok = attr in RATIO_ATTRS and a is not None and b
                row[header] = _cell(a / b, "x") if ok else ""
            if scenario != "paced-sweep":
                row["src MB/s"] = ""
            rows.append(row)
    return rows


def format_table(results: list[Result]) -> str:
    rows: list[dict[str, str]] = []
    for r in results:
        row = {h: _cell(getattr(r, a), f) for h, a, f in COLUMNS}
        if r.error and r.mb_s is None:
            row["MB/s"] = "ERROR"
        rows.append(row)
    rows += ratio_rows(results)
    headers = [h for h, _, _ in COLUMNS]
    widths = {h: max(len(h), *(len(row.get(h, "")) for row in rows)) for h in headers}
    right = {h for h, _, f in COLUMNS if f != "s"}

    def line(cells: dict[str, str]) -> str:
        parts = [cells.get(h, "").rjust(widths[h]) if h in right else
                 cells.get(h, "").ljust(widths[h]) for h in headers]
        return "| " + " | ".join(parts) + " |"

    out = [line({h: h for h in headers}),
           "|" + "|".join(("-" * (widths[h] + 1)).rjust(widths[h] + 2, "-")
                          if h not in right else "-" * (widths[h] + 1) + ":"
                          for h in headers) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


def target_lines(results: list[Result]) -> list[str]:
    """The issue's targets that this run has rows for, with the measured ratio."""
    idx = {(r.server, r.scenario, r.size, r.clients): r for r in results}
    lines = []

    def ratio(label: str, scen: str, size: int, n: int, attr: str) -> float | None:
        a, b = idx.get((label, scen, size, n)), idx.get(("gst", scen, size, n))
        if a is None or b is None or a.error or b.error:
            return None
        x, y = getattr(a, attr), getattr(b, attr)
        return x / y if x is not None and y else None

    trio_labels = sorted({r.server for r in results if r.server != "gst"})
    for label in trio_labels:
        workers = 1 if label == "trio" else int(label.rsplit("w", 1)[1])
        need = 0.5 if workers == 1 else 1.0
        for size in (1316, 4096):
            for n in (100, 1000):
                x = ratio(label, "paced-sweep", size, n, "mb_s")
                if x is not None:
                    lines.append(f"paced sweep {size} B N={n}: {label}/gst = {x:.2f}x "
                                 f"(target >= {need}x) {'MET' if x >= need else 'MISSED'}")
        x = ratio(label, "unpaced", 65536, 100, "mb_s")
        if x is not None:
            lines.append(f"unpaced 65536 B N=100: {label}/gst = {x:.2f}x (target >= 1.0x) "
                         f"{'MET' if x >= 1.0 else 'MISSED'}")
        for r in results:
            if r.server == label and r.scenario == "ttfb":
                g = idx.get(("gst", "ttfb", r.size, r.clients))
                if g and r.ttfb_p50_ms is not None and g.ttfb_p50_ms is not None:
                    met = r.ttfb_p50_ms < g.ttfb_p50_ms
                    lines.append(f"TTFB at 50 kB/s {r.size} B N={r.clients}: {label} "
                                 f"{r.ttfb_p50_ms:.2f} ms vs gst {g.ttfb_p50_ms:.2f} ms "
                                 f"(target: below) {'MET' if met else 'MISSED'}")
            if r.server == label and r.scenario == "stalled-all" \
                    and r.kib_per_client is not None:
                met = r.kib_per_client < 20
                lines.append(f"memory {r.scenario} {r.size} B N={r.clients}: {label} "
                             f"{r.kib_per_client:.1f} KiB/client (target < 20) "
                             f"{'MET' if met else 'MISSED'}")
    return lines


def machine_lines(args: argparse.Namespace, servers: Sequence[ServerSpec]) -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gst = "-"
    if gst_available():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            gst = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True,
                                 text=True, timeout=10).stdout.splitlines()[0]
    trio_cmds = sorted({s.trio_cmd for s in servers if s.kind == "trio"})
    return [
        f"machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {gst}",
        f"servers: {', '.join(s.label for s in servers)}; trio command: "
        f"{', '.join(trio_cmds) or '-'}; window {args.duration:g} s after "
        f"{args.warmup:g} s warm-up; median of {args.repeat} run(s), paced sweeps "
        f"{args.sweep_repeat}; load average at start {args.loadavg}",
    ]


# --------------------------------------------------------------------------- main

def _csv(kind: type[int] | type[str]) -> Any:
    def parse(text: str) -> list[Any]:
        return [kind(x) for x in text.split(",") if x.strip()]
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fanout.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n" + "\n".join(f"  {s.name:12} {s.about}"
                                          for s in SCENARIOS.values()),
    )
    p.add_argument("--servers", type=_csv(str), default=None,
                   help="comma list of trio,gst (default: both; gst when installed)")
    p.add_argument("--sizes", type=_csv(int), default=None,
                   help="buffer sizes in bytes (default: per scenario)")
    p.add_argument("--clients", type=_csv(int), default=None,
                   help="numbers of clients N (default: per scenario)")
    p.add_argument("--scenarios", type=_csv(str), default=None,
                   help=f"comma list of {','.join(SCENARIOS)} (default: all)")
    p.add_argument("--duration", type=float, default=None,
                   help="measured seconds per run (default: 3, --quick: 1.5)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds between all clients connected and the window "
                        "(default: 1, --quick: 0.5)")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per server and case, interleaved; medians are shown "
                        "(default: 3, --quick: 1)")
    p.add_argument("--sweep-repeat", type=int, default=1,
                   help="repeats of each paced sweep (default: 1)")
    p.add_argument("--sweep-start", type=float, default=100.0, metavar="MB/S",
                   help="aggregate rate of the first sweep probe (default: 100)")
    p.add_argument("--sweep-steps", type=int, default=None,
                   help="bisections after the bracket is found (default: 3, --quick: 2)")
    p.add_argument("--p99-limit-ms", type=float, default=100.0)
    p.add_argument("--workers", type=_csv(int), default=[1],
                   help="trio-msink serve --workers K; a comma list runs each (default: 1)")
    p.add_argument("--trio-cmd", choices=["cli", "library"], default=DEFAULT_TRIO_CMD,
                   help="trio server: the trio-msink CLI or the stand-in on the "
                        f"library API (default: {DEFAULT_TRIO_CMD})")
    p.add_argument("--buffers-max", type=int, default=None,
                   help="buffers-max on every server (default: per scenario, see README)")
    p.add_argument("--buffers-soft-max", type=int, default=None,
                   help="buffers-soft-max on every server (default: per scenario)")
    p.add_argument("--recover-policy", default=None,
                   choices=["none", "resync-latest", "resync-soft-limit", "resync-keyframe"],
                   help="recover-policy on every server (default: per scenario)")
    p.add_argument("--client-procs", type=int, default=2,
                   help="client processes per run (default: 2)")
    p.add_argument("--connect-concurrency", type=int, default=3,
                   help="per client process, initial connections waiting for their first "
                        "byte at once (tcpserversink listens with a backlog of 5; default: 3)")
    p.add_argument("--prime", type=float, default=50.0, metavar="BUFFERS/S",
                   help="source rate while clients connect, before the scenario's rate "
                        "(default: 50)")
    p.add_argument("--rcvbuf", type=int, default=2 << 20, help="SO_RCVBUF of reading clients")
    p.add_argument("--samples", type=int, default=8,
                   help="buffer headers a client decodes per recv (default: 8)")
    p.add_argument("--quick", action="store_true", help="a smaller, shorter plan")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--keep-logs", action="store_true", help="keep the per-run logs")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    args.duration = args.duration or (1.5 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.sweep_steps = args.sweep_steps if args.sweep_steps is not None else \
        (2 if args.quick else 3)
    for name in args.scenarios or ():
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    for name in args.servers or ():
        if name not in ("trio", "gst"):
            p.error(f"unknown server {name!r}; choose from trio, gst")
    if any(s < 24 or s > (512 << 10) for s in args.sizes or ()):
        p.error("--sizes must be between 24 and 524288 bytes")
    return args


def make_servers(args: argparse.Namespace) -> list[ServerSpec]:
    names = args.servers or ["trio", "gst"]
    servers = []
    if "gst" in names:
        if gst_available():
            servers.append(ServerSpec("gst", "gst"))
        elif args.servers:
            raise SystemExit("fanout.py: gst-launch-1.0 not found (install gstreamer1.0-tools "
                             "and gstreamer1.0-plugins-base)")
        else:
            progress("note: gst-launch-1.0 not found; running trio only")
    if "trio" in names:
        for k in args.workers:
            label = "trio" if k == 1 else f"trio-w{k}"
            servers.append(ServerSpec(label, "trio", trio_cmd=args.trio_cmd, workers=k))
    return servers


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    servers = make_servers(args)
    plan = build_plan(args)
    logdir = Path(tempfile.mkdtemp(prefix="fanout-"))
    opts = Options(duration=args.duration, warmup=args.warmup, buffers_max=args.buffers_max,
                   buffers_soft_max=args.buffers_soft_max, recover_policy=args.recover_policy,
                   client_procs=args.client_procs,
                   connect_concurrency=args.connect_concurrency, prime=args.prime,
                   rcvbuf=args.rcvbuf, samples=args.samples, p99_limit_ms=args.p99_limit_ms,
                   logdir=logdir, verbose=args.verbose)
    progress(f"fanout: {len(plan)} case(s) x {len(servers)} server(s); "
             f"trio command: {' '.join(COMMANDS[args.trio_cmd][:4])} ...; logs in {logdir}")
    results: list[Result] = []
    started = time.monotonic()
    try:
        for i, case in enumerate(plan, 1):
            progress(f"[{i}/{len(plan)}] {case.scenario} size={case.size} N={case.clients}")
            if SCENARIOS[case.scenario].sweep:
                results += sweep_case(servers, case, opts, args.sweep_repeat,
                                      start_mb_s=args.sweep_start, steps=args.sweep_steps,
                                      max_probes=12)
            else:
                results += run_case(servers, case, opts, args.repeat)
    except KeyboardInterrupt:
        progress("interrupted: partial results")
    elapsed = time.monotonic() - started
    print("\n".join(machine_lines(args, servers)))
    print()
    print(format_table(results))
    targets = target_lines(results)
    if targets:
        print()
        print("\n".join(targets))
    for r in results:
        if SCENARIOS[r.scenario].stalled != "none" and not r.error:
            stalled = r.clients - r.readers
            print(f"note: {r.server} {r.scenario} {r.size} N={r.clients}: "
                  f"{r.stalled_dropped}/{stalled} never-reading client(s) dropped by the server")
        if r.error or r.why or r.bad:
            print(f"note: {r.server} {r.scenario} {r.size} N={r.clients}: "
                  f"{r.error or r.why}{f' ({r.bad} misaligned headers)' if r.bad else ''}")
    print(f"\n(total {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine_lines(args, servers),
            "columns": [h for h, _, _ in COLUMNS],
            "results": [asdict(r) for r in results],
            "ratios": ratio_rows(results),
            "targets": targets,
        }, indent=1))
    errors = any(r.error for r in results)
    if args.keep_logs or errors:
        progress(f"logs kept in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 1 if errors and all(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

