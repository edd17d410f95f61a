"""Prometheus metrics of a sink, its clients and its source.

:class:`SinkMetrics` keeps a private ``prometheus_client`` registry (needs
``prometheus-client``, extra ``metrics``) holding

* itself, a collector that reads, at scrape time, the sink (:meth:`Sink.statistics`,
  :meth:`Sink.get_stats` of every client), the fronts' :class:`ClientRegistry`
  and the source's status;
* with them, counts kept from the Sink callbacks (clients added, clients
  removed by status);
* the process's own metrics (``ProcessCollector``, ``PlatformCollector``,
  ``GCCollector``).

:meth:`SinkMetrics.render` is the body of ``GET /metrics`` (the HTTP front
serves it, see docs/fronts.md); the metric names are listed in
docs/cli.md. Only the public Sink API is used, so the numbers are what a
user of the library could compute: in particular the library does not
report soft-limit resyncs as events, so ``trio_msink_client_resyncs_total``
counts the times a client's ``buffers_dropped`` was seen to have grown (at a
scrape or at its removal). Two resyncs of one client between two scrapes
count once: it is a lower bound on resyncs, and
``trio_msink_buffers_dropped_total`` is exact.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .. import ClientStatus, Sink
from . import ClientRegistry

__all__ = ["LAG_BUFFERS_BUCKETS", "LAG_BYTES_BUCKETS", "MAIN_SINK", "PREFIX", "SinkMetrics"]

#: Every metric name starts with this.
PREFIX = "trio_msink"
# Upper bounds of the lag histograms. A client that keeps up has a lag of 0
# or a few buffers (one video frame per buffer: 25-50 a second); the top
# buckets reach the lag where a public server's defaults resync or drop a
# client (seconds of video, megabytes).
#: Bucket bounds of ``trio_msink_client_lag_buffers`` (buffers).
LAG_BUFFERS_BUCKETS: tuple[float, ...] = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
#: Bucket bounds of ``trio_msink_client_lag_bytes`` (bytes): 0, then 1 KiB
#: to 64 MiB by fours.
LAG_BYTES_BUCKETS: tuple[float, ...] = (0, *(1024 * 4**i for i in range(9)))
# Front label of a client that no front registered (added with sink.add).
_UNREGISTERED = "other"
#: The ``sink`` label of the Sink given as ``sink``.
MAIN_SINK = "stream"


@dataclass(slots=True)
class _TrackedClient:
    """What the metrics keep about one client between scrapes (not the
    sink's own client record)."""

    front: str
    #: The name of the Sink that serves it.
    sink: str
    #: ``buffers_dropped`` at the last look (scrape or removal).
    dropped_seen: int = 0


class SinkMetrics(Collector):
    """The metrics of a sink (or several), rendered in the Prometheus text format.

    ``registry`` names the front of each client; ``source_status``, if
    given, returns the source's status as :func:`stats_document` shows it
    (the keys ``state``, ``bytes_in``, ``reconnects``, ``uptime`` are used;
    ``None``: no source), and ``source_states`` lists every state word so
    that each has its 0/1 sample. ``sink`` may be given later (assign
    :attr:`sink` once the Sink exists: the Sink needs :meth:`callbacks` at
    construction). More Sinks whose clients are counted too (the browser
    viewers' video of ``trio-msink serve``) are added with :meth:`add_sink`;
    the Sink-wide metrics have a ``sink`` label (:data:`MAIN_SINK` for
    ``sink``). ``fronts`` are front names whose clients' samples are
    shown (at 0) before their first client; ``process_metrics`` adds the
    process's own.

    Plain synchronous bookkeeping, called from the Sink's callbacks and from
    the task that serves a scrape (the same Trio thread).
    """

    def __init__(
        self,
        sink: Sink | None = None,
        *,
        registry: ClientRegistry | None = None,
        source_status: Callable[[], dict[str, Any] | None] | None = None,
        source_states: Sequence[str] = (),
        fronts: Sequence[str] = (),
        process_metrics: bool = True,
    ) -> None:
        self._sinks: dict[str, Sink | None] = {MAIN_SINK: sink}
        self.registry = registry if registry is not None else ClientRegistry()
        self.source_status = source_status
        self.source_states = tuple(source_states)
        self._clients: dict[trio.abc.SendStream, _TrackedClient] = {}
        self._added: dict[str, int] = dict.fromkeys(fronts, 0)
        self._removed: dict[tuple[str, ClientStatus], int] = {}
        self._dropped = 0
        self._resyncs = 0
        # A private registry: the process-wide default one would mix in
        # whatever else the embedding program registers, and two Sinks in
        # one process would collide on it.
        self.prometheus_registry = CollectorRegistry()
        self.prometheus_registry.register(self)
        if process_metrics:
            ProcessCollector(registry=self.prometheus_registry)
            PlatformCollector(registry=self.prometheus_registry)
            GCCollector(registry=self.prometheus_registry)

    @property
    def sink(self) -> Sink | None:
        """The Sink whose clients the default callbacks count (``sink`` label
        :data:`MAIN_SINK`)."""
        return self._sinks[MAIN_SINK]

    @sink.setter
    def sink(self, sink: Sink | None) -> None:
        self._sinks[MAIN_SINK] = sink

    def add_sink(self, name: str, sink: Sink) -> None:
        """Count the clients of another ``sink`` too (give it
        ``callbacks(name)``); its Sink-wide metrics have ``sink="name"``.
        Raises :exc:`ValueError` for a name already in use."""
        if name in self._sinks and self._sinks[name] is not sink:
            raise ValueError(f"name: a sink is already called {name!r}")
        self._sinks[name] = sink

    # -- Sink callbacks --------------------------------------------------------
    def callbacks(self, sink: str = MAIN_SINK) -> dict[str, Callable[..., None]]:
        """``on_client_added`` and ``on_client_removed`` for the Sink named
        ``sink`` (by default :attr:`sink`)::

            metrics = SinkMetrics(registry=registry)
            async with Sink(**metrics.callbacks()) as sink:
                metrics.sink = sink

        A program with callbacks of its own calls :meth:`client_added` and
        :meth:`client_removed` from them instead.
        """
        return {"on_client_added": partial(self.client_added, sink=sink),
                "on_client_removed": partial(self.client_removed, sink=sink)}

    def client_added(self, stream: trio.abc.SendStream, *, sink: str = MAIN_SINK) -> None:
        """Count a new client of the Sink named ``sink`` (call it from
        ``on_client_added``)."""
        front = self._front(stream)
        self._clients[stream] = _TrackedClient(front, sink)
        self._added[front] = self._added.get(front, 0) + 1

    def client_removed(self, stream: trio.abc.SendStream, status: ClientStatus, *,
                       sink: str = MAIN_SINK) -> None:
        """Count a removal by status (call it from ``on_client_removed``)."""
        if status is ClientStatus.DUPLICATE:
            # a refused second add: the first registration is still served
            client: _TrackedClient | None = self._clients.get(stream)
            front = client.front if client is not None else self._front(stream)
        else:
            client = self._clients.pop(stream, None)
            front = client.front if client is not None else self._front(stream)
            served_by = self._sinks.get(sink)
            stats = served_by.get_stats(stream) if served_by is not None else None
            if client is not None and stats is not None:
                self._observe_dropped(client, stats.buffers_dropped)
        key = (front, status)
        self._removed[key] = self._removed.get(key, 0) + 1

    def _front(self, stream: trio.abc.SendStream) -> str:
        info = self.registry.get(stream)
        return info.front if info is not None else _UNREGISTERED

    def _observe_dropped(self, client: _TrackedClient, dropped: int) -> None:
        if dropped > client.dropped_seen:
            self._dropped += dropped - client.dropped_seen
            self._resyncs += 1
            client.dropped_seen = dropped

    # -- scrape ----------------------------------------------------------------
    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics now: ``(body, content type)``. ``accept`` is the
        scraper's ``Accept`` header: the OpenMetrics format when it asks
        for ``application/openmetrics-text``, else the Prometheus text
        format 0.0.4."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.prometheus_registry), content_type

    def collect(self) -> Iterator[Metric]:
        """The sink's, the clients' and the source's metric families, read
        now (what the private registry's collector yields)."""
        viewers = dict.fromkeys(self._added, 0)
        lag_buffers: list[int] = []
        lag_bytes: list[int] = []
        for stream, client in self._clients.items():
            sink = self._sinks.get(client.sink)
            stats = sink.get_stats(stream) if sink is not None else None
            if stats is None:
                continue
            viewers[client.front] = viewers.get(client.front, 0) + 1
            lag_buffers.append(stats.lag_buffers)
            lag_bytes.append(stats.lag_bytes)
            self._observe_dropped(client, stats.buffers_dropped)

        clients = GaugeMetricFamily(f"{PREFIX}_clients", "Clients served now, by front.",
                                    labels=["front"])
        for front, count in sorted(viewers.items()):
            clients.add_metric([front], count)
        yield clients
        added = CounterMetricFamily(f"{PREFIX}_clients_added", "Clients added, by front.",
                                    labels=["front"])
        for front, count in sorted(self._added.items()):
            added.add_metric([front], count)
        yield added
        removed = CounterMetricFamily(
            f"{PREFIX}_clients_removed",
            "Clients removed, by front and final status (CLOSED: the peer left, SLOW: over"
            " a hard limit or the timeout, REMOVED: by the server, ERROR, DUPLICATE: a"
            " refused second add).",
            labels=["front", "status"])
        for (front, status), count in sorted(self._removed.items()):
            removed.add_metric([front, status.name], count)
        yield removed

        sinks = {name: sink.statistics() for name, sink in self._sinks.items()
                 if sink is not None}
        input_ = CounterMetricFamily(
            f"{PREFIX}_input", "Bytes of data buffers given to each Sink (headers excluded).",
            labels=["sink"], unit="bytes")
        output = CounterMetricFamily(
            f"{PREFIX}_output", "Bytes written to all the clients of each Sink together"
            " (headers included).", labels=["sink"], unit="bytes")
        queued = GaugeMetricFamily(f"{PREFIX}_buffers_queued",
                                   "Buffers in each Sink's shared history.", labels=["sink"])
        for name, statistics in sinks.items():
            input_.add_metric([name], statistics.bytes_to_serve)
            output.add_metric([name], statistics.bytes_served)
            queued.add_metric([name], statistics.buffers_queued)
        yield from (input_, output, queued)
        yield CounterMetricFamily(
            f"{PREFIX}_buffers_dropped", "Buffers skipped by soft-limit recovery, all clients"
            " together.", value=self._dropped)
        yield CounterMetricFamily(
            f"{PREFIX}_client_resyncs", "Times a client was seen (at a scrape or at its"
            " removal) to have skipped buffers since the last look: a lower bound on"
            " soft-limit resyncs.", value=self._resyncs)
        yield _histogram(f"{PREFIX}_client_lag_buffers",
                         "Clients by lag in buffers (queued, not yet handed to the stream).",
                         lag_buffers, LAG_BUFFERS_BUCKETS)
        yield _histogram(f"{PREFIX}_client_lag_bytes",
                         "Clients by lag in bytes (queued, not yet handed to the stream).",
                         lag_bytes, LAG_BYTES_BUCKETS, unit="bytes")
        yield from self._source_metrics()

    def _source_metrics(self) -> Iterable[Metric]:
        if self.source_status is None:
            return
        source = self.source_status()
        if source is None:
            return
        state = GaugeMetricFamily(f"{PREFIX}_source_state",
                                  "1 for the source's current state, 0 for the others.",
                                  labels=["state"])
        current = str(source.get("state"))
        for word in sorted({*self.source_states, current}):
            state.add_metric([word], 1 if word == current else 0)
        yield state
        yield CounterMetricFamily(f"{PREFIX}_source_read",
                                  "Bytes read from the source.",
                                  value=source.get("bytes_in", 0), unit="bytes")
        yield CounterMetricFamily(f"{PREFIX}_source_reconnects",
                                  "Times the source was lost after being live.",
                                  value=source.get("reconnects", 0))
        yield GaugeMetricFamily(f"{PREFIX}_source_uptime_seconds",
                                "Seconds since the source became live (0: not live).",
                                value=source.get("uptime", 0.0))


def _histogram(name: str, documentation: str, values: Sequence[int],
               bounds: Sequence[float], unit: str = "") -> GaugeHistogramMetricFamily:
    """The distribution of ``values`` now: a gauge histogram (buckets that
    can go down as well as up), which the Prometheus text format shows as a
    histogram plus ``_gcount`` and ``_gsum`` gauges."""
    ordered = sorted(values)  # one sort, then a bisection per bucket
    buckets = [(str(float(bound)), float(bisect_right(ordered, bound))) for bound in bounds]
    buckets.append(("+Inf", float(len(values))))
    return GaugeHistogramMetricFamily(name, documentation, buckets=buckets,
                                      gsum_value=float(sum(values)), unit=unit)
