"""Running the plan: one run of one server on one case (server, source and
client processes, one measured window), repeats, and paced sweeps."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from _plan import SCENARIOS, Case, Scenario
from _procs import LineReader, stop_process
from _report import describe
from _results import Result, fill_from_reports, median_result
from _servers import BENCH_DIR, HOST, Server, ServerError, ServerSpec, proc_cpu_seconds

PY = sys.executable
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@dataclass
class Options:
    """What every run of one invocation shares (from the flags)."""

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
    lines: LineReader | None = None
    rfd, wfd = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(wfd, _F_SETPIPE_SZ, 1 << 20)
    with open(log_path, "wb", buffering=0) as log:
        try:
            log.write(f"# {spec.label} {case} rate={rate}\n".encode())
            try:
                hard, soft, policy = opts.limits(scen, case.size, rate)
                server = Server.start(spec, size=case.size, buffers_max=hard,
                                      buffers_soft_max=soft, sync_method=scen.sync_method,
                                      recover_policy=policy, stdin_fd=rfd, log=log)
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
                       "--seed", str(number * 100 + i), *spec.client_args]
                if scen.churn:
                    cmd += ["--churn", f"{scen.churn[0]},{scen.churn[1]}"]
                clients.append(subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=log))
            lines = LineReader(clients)
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
            fill_from_reports(result, reports, t1 - t0, cpu1 - cpu0, rss0, rss1,
                              churn=scen.churn is not None)
            if connected < n:
                result.why = f"{connected}/{n} connected"
            return result
        finally:
            if lines is not None:
                lines.close()
            for c in clients:
                stop_process(c)
            if source is not None:
                stop_process(source)
            if wfd >= 0:
                os.close(wfd)
            if server is not None:
                server.stop()


def _sleep_until(t_ns: int) -> None:
    while (left := t_ns - time.monotonic_ns()) > 0:
        time.sleep(min(left / 1e9, 0.5))



def progress(msg: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)



def run_case(servers: Sequence[ServerSpec], case: Case, opts: Options,
             repeat: int) -> list[Result]:
    """Every server on one case, ``repeat`` times in alternating order; medians."""
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

