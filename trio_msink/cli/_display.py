"""What the server shows on stderr: a live table of clients on a terminal
(rich), otherwise one log line per client event."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .. import ClientStatus

if TYPE_CHECKING:
    from .. import Sink
    from ..fronts import ClientRegistry
    from ._source_state import SourceStatus

__all__ = ["Display"]

logger = logging.getLogger("trio_msink.cli")

_REFRESH = 0.5  # seconds between redraws of the live table


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Display:
    """Client events and live stats for the operator."""

    def __init__(self, registry: ClientRegistry, *, interactive: bool) -> None:
        self.registry = registry
        self.interactive = interactive
        self.sink: Sink | None = None
        self.source: SourceStatus | None = None

    def client_added(self, stream: trio.abc.SendStream) -> None:
        if not self.interactive:
            logger.info("client added: %s", self.registry.describe(stream))

    def client_removed(self, stream: trio.abc.SendStream, status: ClientStatus) -> None:
        if self.interactive:
            return
        stats = self.sink.get_stats(stream) if self.sink is not None else None
        sent = f", {_size(stats.bytes_sent)} sent" if stats is not None else ""
        logger.info("client removed (%s): %s%s", status.name, self.registry.describe(stream),
                    sent)

    def source_line(self, now: float) -> str:
        """The source in one line: spec, state, uptime, bytes and bitrate in,
        reconnects, last error (empty without a source)."""
        if self.source is None:
            return ""
        s = self.source.snapshot(now)
        line = (f"source {s['spec']}: {s['state']}, up {s['uptime']:.0f} s, "
                f"{_size(s['bytes_in'])} in, {s['bitrate_in'] / 1000:.0f} kbit/s, "
                f"{s['reconnects']} reconnects")
        if s["last_error"]:
            line += f", last error: {s['last_error']}"
        return line

    def _table(self) -> Any:
        from rich.table import Table

        sink = self.sink
        title = "trio-msink clients"
        if self.source is not None:
            title += "\n" + self.source_line(trio.current_time())
        table = Table(title=title, expand=False)
        for column in ("address", "front", "sent", "lag", "dropped", "status"):
            table.add_column(column, justify="right" if column in ("sent", "lag", "dropped")
                             else "left")
        if sink is not None:
            for stream, info in self.registry.items():
                stats = sink.get_stats(stream)
                if stats is None:
                    continue
                table.add_row(info.address, info.front, _size(stats.bytes_sent),
                              f"{stats.lag_buffers} ({_size(stats.lag_bytes)})",
                              str(stats.buffers_dropped), stats.status.name)
            totals = sink.statistics()
            table.caption = (f"{totals.num_handles} clients, {_size(totals.bytes_to_serve)} in, "
                             f"{_size(totals.bytes_served)} out, "
                             f"{totals.buffers_queued} buffers queued")
        return table

    async def run(self) -> None:
        """Redraw the live table until cancelled (terminal only)."""
        if not self.interactive:
            return
        from rich.console import Console
        from rich.live import Live

        with Live(self._table(), console=Console(stderr=True), auto_refresh=False) as live:
            while True:
                live.update(self._table(), refresh=True)
                await trio.sleep(_REFRESH)
