"""The benchmark plan: scenarios, the cases they expand to, and the targets.

A *scenario* says how the source is paced, which limits both servers get and
which clients stall or churn; a *case* is one scenario at one buffer size and
one number of clients. :data:`TARGETS` is the one table of the performance
targets the report checks (see ``_report.target_lines``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Scenario:
    """How one kind of run is set up; the README's scenario table explains each."""

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
    """One scenario at one buffer size (bytes) and one number of clients."""

    scenario: str
    size: int
    clients: int


def build_plan(args: argparse.Namespace) -> list[Case]:
    """The cases of a run: the selected scenarios (``--quick``'s by default)
    times their sizes and client counts, or ``--sizes``/``--clients``."""
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


@dataclass(frozen=True)
class Target:
    """One performance target, checked for every server variant of a run that
    has rows for it (and for GStreamer when the target compares with it).

    ``kind`` says how ``attr`` of the variant's row is judged:

    * ``"ratio"``: variant / gst of ``attr`` is at least the need;
    * ``"below-gst"``: the variant's ``attr`` is below gst's (``need`` unused);
    * ``"below"``: the variant's ``attr`` is below the need.
    """

    title: str  # how the target's lines begin
    scenario: str
    kind: Literal["ratio", "below-gst", "below"]
    attr: str  # a Result attribute
    #: the need of one process, and of ``--workers K`` with K > 1
    need: float = 0.0
    need_workers: float | None = None
    #: (size, N) cases in this order; empty: every case of the scenario the run has
    cases: tuple[tuple[int, int], ...] = ()
    unit: str = ""

    def need_for(self, workers: int) -> float:
        """The need for a server variant with ``workers`` processes."""
        if workers > 1 and self.need_workers is not None:
            return self.need_workers
        return self.need


#: The targets of the fan-out work, in the order the report prints them.
TARGETS: tuple[Target, ...] = (
    Target("paced sweep", "paced-sweep", "ratio", "mb_s", need=0.5, need_workers=1.0,
           cases=((1316, 100), (1316, 1000), (4096, 100), (4096, 1000))),
    Target("unpaced", "unpaced", "ratio", "mb_s", need=1.0, cases=((65536, 100),)),
    Target("memory stalled-all", "stalled-all", "below", "kib_per_client", need=20,
           unit="KiB/client"),
    Target("TTFB at 50 kB/s", "ttfb", "below-gst", "ttfb_p50_ms", unit="ms"),
)
