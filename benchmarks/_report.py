"""The report: the progress line of a run, the table, the ratio rows, the
targets (from :data:`_plan.TARGETS`), the machine lines, notes and JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _plan import SCENARIOS, TARGETS, Target
from _results import Result
from _servers import ServerSpec, gst_available


def describe(r: Result) -> str:
    """One run on one line, for the progress output on stderr."""
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


def format_cell(value: Any, fmt: str) -> str:
    """One cell of the table: ``value`` in ``fmt`` (a format spec, "rate" or "x")."""
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
                row[header] = format_cell(a / b, "x") if ok else ""
            if scenario != "paced-sweep":
                row["src MB/s"] = ""
            rows.append(row)
    return rows


def format_table(results: list[Result]) -> str:
    rows: list[dict[str, str]] = []
    for r in results:
        row = {h: format_cell(getattr(r, a), f) for h, a, f in COLUMNS}
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



def _workers(label: str) -> int:
    """The process count of a trio server variant: ``trio`` 1, ``trio-wK`` K."""
    return 1 if label == "trio" else int(label.rsplit("w", 1)[1])


def _target_line(target: Target, label: str, r: Result, gst: Result | None) -> str | None:
    """The target's line for one server variant on one case (``None``: the run
    has not the numbers it needs)."""
    value = getattr(r, target.attr)
    case = f"{target.title} {r.size} B N={r.clients}: "
    if target.kind == "ratio":
        if gst is None or r.error or gst.error:
            return None
        base = getattr(gst, target.attr)
        if value is None or not base:
            return None
        x, need = value / base, target.need_for(_workers(label))
        return (f"{case}{label}/gst = {x:.2f}x (target >= {need}x) "
                f"{'MET' if x >= need else 'MISSED'}")
    if target.kind == "below-gst":
        base = getattr(gst, target.attr) if gst is not None else None
        if value is None or base is None:
            return None
        return (f"{case}{label} {value:.2f} {target.unit} vs gst {base:.2f} {target.unit} "
                f"(target: below) {'MET' if value < base else 'MISSED'}")
    if value is None:
        return None
    need = target.need_for(_workers(label))
    return (f"{case}{label} {value:.1f} {target.unit} (target < {need:g}) "
            f"{'MET' if value < need else 'MISSED'}")


def target_lines(results: list[Result]) -> list[str]:
    """The lines of the :data:`_plan.TARGETS` this run has rows for, per trio
    server variant, each with the measured value and MET or MISSED."""
    idx = {(r.server, r.scenario, r.size, r.clients): r for r in results}
    lines = []
    for label in sorted({r.server for r in results if r.server != "gst"}):
        for target in TARGETS:
            if target.cases:
                rows = [idx.get((label, target.scenario, size, n)) for size, n in target.cases]
            else:
                rows = [r for r in results if r.server == label
                        and r.scenario == target.scenario]
            for r in rows:
                if r is None:
                    continue
                gst = idx.get(("gst", r.scenario, r.size, r.clients))
                line = _target_line(target, label, r, gst)
                if line is not None:
                    lines.append(line)
    return lines


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``?`` if unknown)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def machine_lines(args: argparse.Namespace, servers: Sequence[ServerSpec]) -> list[str]:
    """The machine, the servers and the run's settings, printed above the table."""
    gst = "-"
    if gst_available():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            gst = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True,
                                 text=True, timeout=10).stdout.splitlines()[0]
    trio_cmds = sorted({s.trio_cmd for s in servers if s.kind == "trio"})
    return [
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {gst}",
        f"servers: {', '.join(s.label for s in servers)}; trio command: "
        f"{', '.join(trio_cmds) or '-'}; window {args.duration:g} s after "
        f"{args.warmup:g} s warm-up; median of {args.repeat} run(s), paced sweeps "
        f"{args.sweep_repeat}; load average at start {args.loadavg}",
    ]


def note_lines(results: list[Result]) -> list[str]:
    """Notes after the targets: never-reading clients dropped, errors, misalignment."""
    lines = []
    for r in results:
        if SCENARIOS[r.scenario].stalled != "none" and not r.error:
            stalled = r.clients - r.readers
            lines.append(f"note: {r.server} {r.scenario} {r.size} N={r.clients}: "
                         f"{r.stalled_dropped}/{stalled} never-reading client(s) dropped "
                         "by the server")
        if r.error or r.why or r.bad:
            lines.append(f"note: {r.server} {r.scenario} {r.size} N={r.clients}: "
                         f"{r.error or r.why}"
                         f"{f' ({r.bad} misaligned headers)' if r.bad else ''}")
    return lines


def write_json(path: Path, args: argparse.Namespace, servers: Sequence[ServerSpec],
               results: list[Result], targets: list[str]) -> None:
    """Every number of the run, including per-run details, as JSON."""
    path.write_text(json.dumps({
        "machine": machine_lines(args, servers),
        "columns": [h for h, _, _ in COLUMNS],
        "results": [asdict(r) for r in results],
        "ratios": ratio_rows(results),
        "targets": targets,
    }, indent=1))
