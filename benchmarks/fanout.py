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

# The entry point only: the plan (scenarios, cases, targets) is in _plan.py,
# running it in _run.py (results in _results.py), the output in _report.py.

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _plan import SCENARIOS, build_plan
from _report import format_table, machine_lines, note_lines, target_lines, write_json
from _results import Result
from _run import Options, progress, run_case, sweep_case
from _servers import COMMANDS, DEFAULT_TRIO_CMD, ServerSpec, gst_available


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
    for line in note_lines(results):
        print(line)
    print(f"\n(total {elapsed:.0f} s)")
    if args.json:
        write_json(args.json, args, servers, results, targets)
    errors = any(r.error for r in results)
    if args.keep_logs or errors:
        progress(f"logs kept in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 1 if errors and all(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
