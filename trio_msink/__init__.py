"""trio_msink: fan a live stream of buffers out to many clients, on Trio.

A Python take on GStreamer's ``multisocketsink``: every client has its own
bounded queue over one shared history, joins on a keyframe burst, is resynced
or dropped when it falls behind, and never slows the others.
"""

from __future__ import annotations

from ._buffer import Buffer
from ._enums import ClientStatus, Format, RecoverPolicy, SyncMethod
from ._framed import FramedSocketStream, Framing
from ._settings import PropertyTypeError, PropertyValueError, SinkProperty
from ._sink import Sink
from ._stats import ClientStats, SinkStatistics

__all__ = [
    "Buffer",
    "ClientStats",
    "ClientStatus",
    "Format",
    "FramedSocketStream",
    "Framing",
    "PropertyTypeError",
    "PropertyValueError",
    "RecoverPolicy",
    "Sink",
    "SinkProperty",
    "SinkStatistics",
    "SyncMethod",
]

__version__ = "0.1.0"
