"""The ``/stats`` document: a sink's counters and clients as JSON-ready data.

Pure: built from the public API of :class:`~trio_msink.Sink` and a
:class:`ClientRegistry`, no I/O. Its full form lists every client; its
summary form (counts, totals, the lag distribution) and its pages
(``offset``/``limit``) keep a response's size independent of the audience,
which is what the live page asks for once there are many clients.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import Format, Sink
from . import ClientRegistry

if TYPE_CHECKING:
    from .browser import BrowserVideo

__all__ = ["LAG_BUCKETS", "StatsQuery", "stats_document"]

# Upper bounds (buffers, inclusive) of the lag histogram's buckets; the last
# bucket holds everything above. Powers of four: a caught-up client is at 0-1,
# a client a few frames behind at 2-16, one in trouble far above.
LAG_BUCKETS = (0, 1, 4, 16, 64, 256, 1024)


@dataclasses.dataclass(frozen=True, slots=True)
class StatsQuery:
    """Which form of the document: ``summary`` adds the ``"summary"`` object
    and leaves the rows out unless a page is asked for; ``offset``/``limit``
    (clients, ``limit`` None = all) select a page of rows."""

    summary: bool = False
    offset: int = 0
    limit: int | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> StatsQuery:
        """From URL query parameters (``summary=1``, ``offset=N``,
        ``limit=M``). Raises :exc:`ValueError` naming a bad parameter."""
        summary = query.get("summary", "0").lower() in ("1", "true", "yes")
        offset = _natural(query, "offset")
        return cls(summary, 0 if offset is None else offset, _natural(query, "limit"))


def _natural(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise ValueError(f"{name}: expected a whole number >= 0, got {text!r}")
    return int(text)


def stats_document(sink: Sink, registry: ClientRegistry,
                   source: dict[str, Any] | None = None, *,
                   video: BrowserVideo | None = None,
                   fronts: Mapping[str, str] | None = None,
                   query: StatsQuery | None = None) -> dict[str, Any]:
    """The ``/stats`` JSON document.

    Always: ``sink`` (the four fields of :meth:`Sink.statistics`:
    ``num_handles``, ``bytes_to_serve``, ``bytes_served``,
    ``buffers_queued``), ``total_clients`` (every registered client of
    ``sink`` and of the browser viewers' sink) and ``limits``: for
    ``"stream"`` (the sink's clients) and ``"video"`` (browser viewers), the
    ``soft`` and ``hard`` lag limits in buffers, or None where the limit is
    unset or not counted in buffers. Unless ``query`` asks for the summary
    without a page: ``clients``, one :meth:`ClientRegistry.snapshot` row per
    client (browser viewers' ``front`` is theirs, ``"video"``), the page of
    ``query``, with ``offset`` and ``limit`` echoed when paged. With
    ``query.summary``: ``summary`` with ``clients``, ``by_front``,
    ``by_status``, ``bytes_sent``, ``buffers_dropped`` and ``lag_buffers``
    (``p50``, ``p90``, ``p99``, ``max``, ``histogram``: ``[{"upto": n,
    "count": c}, ...]``, upper bounds of :data:`LAG_BUCKETS`, the last
    ``upto`` null). ``source`` (where the stream comes from, as the server
    reports it: ``spec``, ``state``, ``uptime`` in seconds, ``bytes_in``,
    ``bitrate_in`` in bits per second, ``reconnects``, ``last_error``),
    ``video`` (:meth:`BrowserVideo.status`) and ``fronts`` (name → URL) are
    there when given.
    """
    query = query or StatsQuery()
    rows = registry.snapshot(sink)
    if video is not None:
        rows += registry.snapshot(video.sink)
    doc: dict[str, Any] = {
        "sink": dataclasses.asdict(sink.statistics()),
        "total_clients": len(rows),
        "limits": {"stream": buffer_limits(sink),
                   "video": video.limits() if video is not None else None},
    }
    if source is not None:
        doc["source"] = source
    if video is not None:
        status = video.status()
        status["bytes_served"] = video.sink.bytes_served
        doc["video"] = status
    if fronts is not None:
        doc["fronts"] = dict(fronts)
    paged = query.offset > 0 or query.limit is not None
    if not query.summary or paged:
        end = None if query.limit is None else query.offset + query.limit
        doc["clients"] = rows[query.offset : end]
        if paged:
            doc["offset"], doc["limit"] = query.offset, query.limit
    if query.summary:
        doc["summary"] = summarize(rows)
    return doc


def buffer_limits(sink: Sink) -> dict[str, float | None]:
    """The sink's soft and hard lag limits in buffers (the tighter of
    ``buffers_*`` and ``units_*`` in BUFFERS), None where there is none."""

    def tighter(*limits: float) -> float | None:
        set_ = [limit for limit in limits if limit > 0]
        return min(set_) if set_ else None

    in_buffers = sink.unit_format == Format.BUFFERS
    return {
        "soft": tighter(sink.buffers_soft_max, sink.units_soft_max if in_buffers else -1),
        "hard": tighter(sink.buffers_max, sink.units_max if in_buffers else -1),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, totals and the lag distribution of snapshot ``rows``."""
    lags = sorted(row["lag_buffers"] for row in rows)
    histogram = [0] * (len(LAG_BUCKETS) + 1)
    bucket = 0
    for lag in lags:  # sorted: the bucket only moves forward
        while bucket < len(LAG_BUCKETS) and lag > LAG_BUCKETS[bucket]:
            bucket += 1
        histogram[bucket] += 1

    def percentile(p: float) -> int:
        return lags[min(len(lags) - 1, int(p * len(lags)))] if lags else 0

    return {
        "clients": len(rows),
        "by_front": dict(Counter(row["front"] for row in rows)),
        "by_status": dict(Counter(row["status"] for row in rows)),
        "bytes_sent": sum(row["bytes_sent"] for row in rows),
        "buffers_dropped": sum(row["buffers_dropped"] for row in rows),
        "lag_buffers": {
            "p50": percentile(0.5), "p90": percentile(0.9), "p99": percentile(0.99),
            "max": lags[-1] if lags else 0,
            "histogram": [{"upto": upto, "count": count}
                          for upto, count in zip((*LAG_BUCKETS, None), histogram, strict=True)],
        },
    }
