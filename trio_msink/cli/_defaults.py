"""The command's defaults: Sink properties safe for a server anyone may reach.

The library keeps GStreamer's defaults (no limits, ``latest`` placement);
the command does not, because with them one client that stops reading pins
the shared history for ever. docs/cli.md ("Defaults made for a server")
gives each value with its reason and precedent; in short:

* Video (``mpegts``, ``h264``): players join on the newest keyframe, after
  the streamheader (``latest-keyframe``). A client that falls more than 5 s
  of stream or 512 buffers behind skips ahead to a keyframe
  (``resync-keyframe``), so what it needs of the history stays bounded
  whether or not the stream has timestamps (H.264 without ``--fps`` has
  none: the buffer count is the bound there). A client that makes no write
  progress for 10 s (it stopped reading) is removed ``SLOW``. The hard
  limits (10 s, 1024 buffers) are the backstop when recovery is turned off.
* Raw: any bytes, no keyframes, so skipping would corrupt what a client
  gets: it keeps ``latest`` and a client more than 4 MiB behind, or without
  write progress for 10 s, is removed ``SLOW``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .. import Format, RecoverPolicy, Sink, SyncMethod

__all__ = [
    "COMMAND_PROPERTIES",
    "DEFAULT_FORMAT_BEFORE_DETECTION",
    "apply_properties",
    "describe_default",
    "format_defaults",
]

_MiB = 1024 * 1024

# MediaMTX's writeTimeout is 10 s (nginx's send_timeout 60 s): a socket
# that takes nothing for that long belongs to a client that stopped reading.
_TIMEOUT = 10.0

_VIDEO: dict[str, Any] = {
    "sync_method": SyncMethod.LATEST_KEYFRAME,
    "recover_policy": RecoverPolicy.RESYNC_KEYFRAME,
    "unit_format": Format.TIME,
    # 5 s of stream is more than any player's jitter buffer, and (at up to
    # 100 pictures a second) comes before 512 buffers, MediaMTX's
    # writeQueueSize, which bounds streams without timestamps.
    "units_soft_max": 5.0,
    "units_max": 10.0,
    "buffers_soft_max": 512,
    "buffers_max": 1024,
    "timeout": _TIMEOUT,
}
_RAW: dict[str, Any] = {
    "sync_method": SyncMethod.LATEST,
    "recover_policy": RecoverPolicy.NONE,
    "unit_format": Format.BYTES,
    "units_soft_max": -1,
    # Icecast drops a listener whose queue passes queue-size (512 KiB of
    # audio); 4 MiB is the same few seconds at video bitrates (8 s at 4 Mbit/s).
    "units_max": 4 * _MiB,
    "buffers_soft_max": -1,
    "buffers_max": -1,
    "timeout": _TIMEOUT,
}
_BY_FORMAT: dict[str, dict[str, Any]] = {"mpegts": _VIDEO, "h264": _VIDEO, "raw": _RAW}

#: With ``--format auto`` nothing is sent before the format is detected; the
#: video defaults apply until then (a client that connects early waits for
#: the first keyframe), and the detected format's once it is known.
DEFAULT_FORMAT_BEFORE_DETECTION = "mpegts"

#: The Sink properties whose default the command sets (the others keep the
#: library's default). Every format gives a value to each of them, so that
#: switching formats leaves nothing of the previous one.
COMMAND_PROPERTIES: tuple[str, ...] = tuple(_VIDEO)

# Pairs whose values must agree (a soft limit not above its hard limit), and
# the limits measured in ``unit_format``.
_PAIRS = (("buffers_soft_max", "buffers_max"), ("units_soft_max", "units_max"))
_UNIT_LIMITS = ("units_soft_max", "units_max")


def format_defaults(fmt: str, explicit: Collection[str]) -> dict[str, Any]:
    """The command's Sink properties for a stream of format ``fmt``
    (``"mpegts"``, ``"h264"``, ``"raw"``; ``"auto"``: before detection),
    leaving out the properties in ``explicit`` (those the user set).

    A default that would contradict a user's setting is replaced by the
    library's ``-1`` (no limit): the partner of a soft or hard limit the user
    set (the user's limit decides), and the ``units_*`` limits when the user
    chose another ``unit_format`` (their values would be in the wrong unit).

    Raises :exc:`ValueError` for an unknown ``fmt``.
    """
    if fmt == "auto":
        fmt = DEFAULT_FORMAT_BEFORE_DETECTION
    try:
        values = dict(_BY_FORMAT[fmt])
    except KeyError:
        raise ValueError(f"fmt must be one of auto, {', '.join(_BY_FORMAT)}; "
                         f"not {fmt!r}") from None
    given = frozenset(explicit)
    for soft, hard in _PAIRS:
        if soft in given:
            values[hard] = -1
        if hard in given:
            values[soft] = -1
    if "unit_format" in given:
        for name in _UNIT_LIMITS:
            values[name] = -1
    return {name: value for name, value in values.items() if name not in given}


def apply_properties(sink: Sink, properties: Mapping[str, Any]) -> None:
    """Assign ``properties`` to a running ``sink`` (e.g. the defaults of a
    detected format) in an order that every step passes validation: soft
    limits are lowered first and raised last, so that a soft limit is never
    above its hard limit in between.

    Raises what the Sink raises for a refused value (:exc:`ValueError`,
    :exc:`TypeError`); the properties assigned before it stay assigned.
    """
    softs = [soft for soft, _ in _PAIRS if soft in properties]
    for soft in softs:
        setattr(sink, soft, -1)
    for name, value in properties.items():
        if name not in softs:
            setattr(sink, name, value)
    for soft in softs:
        setattr(sink, soft, properties[soft])


def _show(name: str, value: Any, unit_format: Format | None) -> str:
    """A default for ``--help``: ``5 s``, ``4 MiB``, ``latest-keyframe``."""
    if isinstance(value, (SyncMethod, RecoverPolicy, Format)):
        return value.name.lower().replace("_", "-")
    if isinstance(value, bool) or value == -1:
        return str(value)
    if name == "timeout" or (name in _UNIT_LIMITS and unit_format == Format.TIME):
        return f"{value:g} s"
    if name in _UNIT_LIMITS and unit_format == Format.BYTES and value % _MiB == 0:
        return f"{value // _MiB} MiB"
    return f"{value:g}"


def describe_default(name: str, fmt: str | None = None) -> str | None:
    """How ``--help`` states the command's default of property ``name``:
    for every format (``5 s for mpegts/h264/auto, -1
    for raw``), or for ``fmt`` alone; ``None`` if the command keeps the
    library's default for it."""
    if name not in COMMAND_PROPERTIES:
        return None
    if fmt is not None:
        values = format_defaults(fmt, ())
        return _show(name, values[name], values["unit_format"])
    video = _show(name, _VIDEO[name], _VIDEO["unit_format"])
    raw = _show(name, _RAW[name], _RAW["unit_format"])
    if video == raw:
        return video
    return f"{video} for mpegts/h264/auto, {raw} for raw"
