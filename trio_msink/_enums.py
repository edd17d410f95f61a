"""The four enumerations of trio_msink, with GStreamer's numeric values."""

from __future__ import annotations

import enum

__all__ = ["ClientStatus", "Format", "RecoverPolicy", "SyncMethod"]


class SyncMethod(enum.IntEnum):
    """Where a newly added client starts in the stream (placement happens at add time)."""

    #: Every buffer that arrives after the add, nothing before.
    LATEST = 0
    #: From the first keyframe that arrives after the add.
    NEXT_KEYFRAME = 1
    #: From the newest keyframe in history, else as NEXT_KEYFRAME.
    LATEST_KEYFRAME = 2
    #: From far enough back to satisfy the burst minimum, capped by the maximum.
    BURST = 3
    #: Like BURST, but the client must start on a keyframe.
    BURST_KEYFRAME = 4
    #: A keyframe within the burst limits if there is one, else plain BURST.
    BURST_WITH_KEYFRAME = 5


class RecoverPolicy(enum.IntEnum):
    """What a client over a soft limit gets."""

    #: Nothing: the client keeps its backlog (and may hit the hard limit).
    NONE = 0
    #: The client's next buffer is the newest one.
    RESYNC_LATEST = 1
    #: The oldest waiting buffers are skipped until the lag is back at the limit.
    RESYNC_SOFT_LIMIT = 2
    #: Jump to a keyframe that brings the lag within the limit, else wait for one.
    RESYNC_KEYFRAME = 3


class ClientStatus(enum.IntEnum):
    """Why a client was removed (``OK`` while it is served)."""

    #: Being served.
    OK = 0
    #: The peer closed the connection.
    CLOSED = 1
    #: ``remove``, ``remove_flush``, ``clear`` or the sink's shutdown.
    REMOVED = 2
    #: Over the hard limit, or no write progress for ``timeout`` seconds.
    SLOW = 3
    #: The stream raised an error.
    ERROR = 4
    #: ``add`` of a stream that is already served (the first one keeps going).
    DUPLICATE = 5
    #: A ``remove_flush`` is in progress.
    FLUSHING = 6


class Format(enum.IntEnum):
    """Units of limits and bursts. Only BYTES, TIME and BUFFERS measure anything."""

    #: No unit: a burst in this format has no minimum; limits count buffers.
    UNDEFINED = 0
    #: Same as UNDEFINED.
    DEFAULT = 1
    #: Bytes of payload.
    BYTES = 2
    #: Seconds of PTS span.
    TIME = 3
    #: Number of buffers.
    BUFFERS = 4
