"""One server's measurements on one case: the record, its median over
repeats, and how the client processes' reports fill it in."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from _common import hist_percentile, merge_hist, percentile


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
    """The median of every number over the runs that did not fail (all runs
    when every one failed); counts of faults are the worst run's."""
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


def fill_from_reports(result: Result, reports: list[dict[str, Any]], window_ns: int,
                      cpu: float, rss0: int, rss1: int, *, churn: bool) -> None:
    """Fill ``result`` from the client processes' JSON reports of one window
    (``window_ns`` long), the server's CPU seconds in it and its RSS (KiB)
    before the clients connected and at the end."""
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
