"""The Sink's properties: declarations, defaults, validation.

Each property is a :class:`~trio_msink._settings.Setting` descriptor: reading
gives the value, assigning validates it (alone, then against the other
settings) and only then applies it, so a refused value changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._enums import Format, RecoverPolicy, SyncMethod
from ._placement import Burst
from ._settings import (
    Setting,
    check_amount,
    check_bool,
    check_callback,
    check_count,
    check_dscp,
    check_enum,
    check_seconds,
)

__all__ = ["SETTINGS", "SinkProperties", "check_burst", "check_consistent", "check_sync"]

check_sync = check_enum(SyncMethod)
_check_format = check_enum(Format)
_check_policy = check_enum(RecoverPolicy)

Callback = Callable[..., object] | None


class SinkProperties:
    """The validated properties of a :class:`~trio_msink.Sink`."""

    #: Hard limit on a client's lag in buffers; over it the client is removed ``SLOW``.
    buffers_max = Setting[int](-1, check_count)
    #: Soft limit in buffers; over it the client gets ``recover_policy``.
    buffers_soft_max = Setting[int](-1, check_count)
    #: Unit of ``units_max`` / ``units_soft_max``: BUFFERS, BYTES or TIME.
    unit_format = Setting[Format](Format.BUFFERS, _check_format)
    #: Hard limit in ``unit_format`` units (an extra, independent limit).
    units_max = Setting[float](-1, check_amount)
    #: Soft limit in ``unit_format`` units.
    units_soft_max = Setting[float](-1, check_amount)
    #: What a client over a soft limit gets.
    recover_policy = Setting[RecoverPolicy](RecoverPolicy.NONE, _check_policy)
    #: Placement used by :meth:`add`.
    sync_method = Setting[SyncMethod](SyncMethod.LATEST, check_sync)
    #: Unit of ``burst_value``.
    burst_format = Setting[Format](Format.UNDEFINED, _check_format)
    #: Minimum burst for :meth:`add` (in ``burst_format``).
    burst_value = Setting[float](0, check_amount)
    #: Keep at least this many bytes of history.
    bytes_min = Setting[int](-1, check_count)
    #: Keep at least this many seconds of history (PTS span).
    time_min = Setting[float](-1.0, check_seconds)
    #: Keep at least this many buffers of history.
    buffers_min = Setting[int](-1, check_count)
    #: Seconds a client may make no write progress while it has data waiting
    #: or being written (0 = off); over it the client is removed ``SLOW``.
    timeout = Setting[float](0.0, check_seconds)
    #: Pace delivery by buffer PTS against the Trio clock.
    sync = Setting[bool](True, check_bool)
    #: Send changed streamheaders to existing clients.
    resend_streamheader = Setting[bool](True, check_bool)
    #: DSCP (0..63) stamped on client sockets; -1 leaves them alone.
    qos_dscp = Setting[int](-1, check_dscp)
    #: Read from readable clients (detect EOF, discard or report data).
    handle_read = Setting[bool](True, check_bool)
    #: Report bytes read from a client through ``on_message``.
    send_messages = Setting[bool](False, check_bool)
    #: Report every buffer completely written to a client through ``on_dispatched``.
    send_dispatched = Setting[bool](False, check_bool)
    #: Seconds clients get to receive what is queued when the block is left
    #: normally (-1 = no limit).
    linger = Setting[float](5.0, check_seconds)

    #: ``on_client_added(stream)``: a client was registered (always its first event).
    on_client_added = Setting[Callback](None, check_callback)
    #: ``on_client_removed(stream, status)``: a client is being removed; it is
    #: still registered (``get_stats`` works, with the removal's status).
    on_client_removed = Setting[Callback](None, check_callback)
    #: ``on_client_socket_removed(stream)``: the client is unregistered; the
    #: stream is the caller's again (the sink never closes it).
    on_client_socket_removed = Setting[Callback](None, check_callback)
    #: ``on_message(stream, data)``: bytes read from a client (with ``send_messages``).
    on_message = Setting[Callback](None, check_callback)
    #: ``on_dispatched(stream, buffer)``: a buffer (headers included) was completely
    #: written to a client (with ``send_dispatched``).
    on_dispatched = Setting[Callback](None, check_callback)


    def __init__(self, **properties: Any) -> None:
        settings = {name: spec.default for name, spec in SETTINGS.items()}
        for name, value in properties.items():
            spec = SETTINGS.get(name)
            if spec is None:
                raise TypeError(f"Sink() got an unexpected keyword argument {name!r}")
            settings[name] = spec.check(name, value)
        check_consistent(settings)
        self._settings: dict[str, Any] = settings

    def _update_settings(self, changes: dict[str, object]) -> None:
        check_consistent({**self._settings, **changes})
        self._settings.update(changes)
        self._settings_changed(changes)

    def _settings_changed(self, changes: dict[str, object]) -> None:
        """Hook: apply settings that were just changed."""


SETTINGS: dict[str, Setting[Any]] = {
    name: value for name, value in vars(SinkProperties).items() if isinstance(value, Setting)
}


def check_consistent(settings: dict[str, Any]) -> None:
    """A soft limit may not be above its hard limit (both set, > 0)."""
    for soft, hard in (("buffers_soft_max", "buffers_max"), ("units_soft_max", "units_max")):
        if settings[soft] > 0 and settings[hard] > 0 and settings[soft] > settings[hard]:
            raise ValueError(
                f"{soft} ({settings[soft]}) must not be above {hard} ({settings[hard]})"
            )


def check_burst(min_format: object, min_value: object, max_format: object,
                 max_value: object) -> Burst:
    burst = Burst(
        _check_format("min_format", min_format), check_amount("min_value", min_value),
        _check_format("max_format", max_format), check_amount("max_value", max_value),
    )
    if (burst.min_format == burst.max_format and burst.min_value >= 0
            and burst.max_value >= 0 and burst.max_value < burst.min_value):
        raise ValueError(
            f"max_value ({max_value}) must not be below min_value ({min_value}) "
            f"in the same format"
        )
    return burst
