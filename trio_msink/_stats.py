"""Frozen statistics records returned by :meth:`Sink.get_stats` and
:meth:`Sink.statistics`."""

from __future__ import annotations

from dataclasses import dataclass

from ._enums import ClientStatus

__all__ = ["ClientStats", "SinkStatistics"]


@dataclass(frozen=True, slots=True)
class ClientStats:
    """One client's statistics. Times are seconds; ``*_time`` are epoch seconds."""

    #: Bytes written to the client, streamheaders included.
    bytes_sent: int
    #: Wall-clock time of the add (epoch seconds).
    connect_time: float
    #: Wall-clock time of the removal; 0 while connected.
    disconnect_time: float
    #: Seconds connected so far (or until the removal).
    connect_duration: float
    #: Wall-clock time of the last write progress (the add time before any).
    last_activity_time: float
    #: Buffers skipped by soft-limit recovery.
    buffers_dropped: int
    #: PTS of the first buffer handed to the client that had one.
    first_buffer_ts: float | None
    #: PTS of the latest buffer handed to the client that had one.
    last_buffer_ts: float | None
    #: ``OK`` while served, ``FLUSHING`` during a remove-flush, the removal's
    #: status inside ``on_client_removed``.
    status: ClientStatus
    #: Buffers queued for the client and not yet handed to its stream.
    lag_buffers: int
    #: Their total size in bytes.
    lag_bytes: int


@dataclass(frozen=True, slots=True)
class SinkStatistics:
    """A snapshot of the sink's counters (see :meth:`Sink.statistics`)."""

    #: Clients registered now.
    num_handles: int
    #: Bytes of data buffers accepted into the history (headers excluded).
    bytes_to_serve: int
    #: Bytes written to all clients together, headers included.
    bytes_served: int
    #: History length after the last send.
    buffers_queued: int
