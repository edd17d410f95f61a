"""The Sink's properties, each declared once.

Every property is one :func:`~trio_msink._settings.setting` line below: its
type and validation (the check), default, unit and one-line doc. The Sink's
keyword-only constructor, its attributes, the property table of
docs/api.rst, the ``trio-msink`` command's flags and the validation tests
are all derived from these lines; adding a property here is the whole job
(plus a test of what it does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._enums import Format, RecoverPolicy, SyncMethod
from ._placement import Burst
from ._settings import (
    AMOUNT,
    BOOL,
    CALLBACK,
    COUNT,
    DSCP,
    SECONDS,
    Properties,
    PropertyValueError,
    SinkProperty,
    check_amount,
    enum_check,
    setting,
)

__all__ = ["SinkProperties", "check_burst", "check_sync"]

_SYNC_METHOD = enum_check(SyncMethod)
_FORMAT = enum_check(Format)
_RECOVER_POLICY = enum_check(RecoverPolicy)

if TYPE_CHECKING:
    # The callbacks' types: what each is called with (its return value is
    # ignored). For mypy only, so that the core imports no trio.
    import trio

    from ._buffer import Buffer
    from ._enums import ClientStatus

    OnClient = Callable[[trio.abc.SendStream], object] | None
    OnClientRemoved = Callable[[trio.abc.SendStream, ClientStatus], object] | None
    OnMessage = Callable[[trio.abc.SendStream, bytes], object] | None
    OnDispatched = Callable[[trio.abc.SendStream, Buffer], object] | None


class SinkProperties(Properties):
    """The validated properties of a :class:`~trio_msink.Sink`."""

    # One declaration per property, alike by design: the lines below are the
    # single source of truth, so their repeated shape is not duplicated logic.

    buffers_max: int = setting(
        COUNT, default=-1, unit="buffers",
        doc="hard limit on a client's lag in buffers; over it → removed ``SLOW``")
    buffers_soft_max: int = setting(
        COUNT, default=-1, unit="buffers",
        doc="soft limit in buffers; over it → ``recover_policy``")
    unit_format: Format = setting(
        _FORMAT, default=Format.BUFFERS, unit=None,
        doc="unit of ``units_max`` / ``units_soft_max``: ``BUFFERS``, ``BYTES`` or ``TIME``")
    units_max: float = setting(
        AMOUNT, default=-1, unit="unit_format",
        doc="hard limit in ``unit_format`` units (an extra, independent limit)")
    units_soft_max: float = setting(
        AMOUNT, default=-1, unit="unit_format",
        doc="soft limit in ``unit_format`` units")
    recover_policy: RecoverPolicy = setting(
        _RECOVER_POLICY, default=RecoverPolicy.NONE, unit=None,
        doc="what a client over a soft limit gets")
    sync_method: SyncMethod = setting(
        _SYNC_METHOD, default=SyncMethod.LATEST, unit=None,
        doc="placement used by ``add()``")
    burst_format: Format = setting(
        _FORMAT, default=Format.UNDEFINED, unit=None,
        doc="unit of ``burst_value`` for ``add()``")
    burst_value: float = setting(
        AMOUNT, default=0, unit="burst_format",
        doc="minimum burst for ``add()``")
    bytes_min: int = setting(
        COUNT, default=-1, unit="bytes",
        doc="keep at least this many bytes of history")
    time_min: float = setting(
        SECONDS, default=-1.0, unit="seconds",
        doc="keep at least this many seconds of history (PTS span)")
    buffers_min: int = setting(
        COUNT, default=-1, unit="buffers",
        doc="keep at least this many buffers of history")
    timeout: float = setting(
        SECONDS, default=0.0, unit="seconds",
        doc="seconds a client may make no write progress while it has data waiting "
            "or being written; 0 = off; over it → removed ``SLOW``")
    sync: bool = setting(
        BOOL, default=True, unit=None,
        doc="pace delivery by buffer PTS against the Trio clock")
    resend_streamheader: bool = setting(
        BOOL, default=True, unit=None,
        doc="send changed streamheaders to existing clients")
    qos_dscp: int = setting(
        DSCP, default=-1, unit=None,
        doc="DSCP (0..63) stamped on client sockets (``IP_TOS`` / ``IPV6_TCLASS``); "
            "-1 leaves them alone")
    handle_read: bool = setting(
        BOOL, default=True, unit=None,
        doc="read from clients that are readable: detect EOF, discard or report data")
    send_messages: bool = setting(
        BOOL, default=False, unit=None,
        doc="report bytes read from a client through ``on_message``")
    send_dispatched: bool = setting(
        BOOL, default=False, unit=None,
        doc="report every buffer completely written to a client through ``on_dispatched``")
    linger: float = setting(
        SECONDS, default=5.0, unit="seconds",
        doc="seconds clients get to receive what is queued when the block is left "
            "normally (-1 = no limit)")

    on_client_added: OnClient = setting(
        CALLBACK, default=None, unit=None,
        doc="``on_client_added(stream)``: a client was registered (always its first event)")
    on_client_removed: OnClientRemoved = setting(
        CALLBACK, default=None, unit=None,
        doc="``on_client_removed(stream, status)``: a client is being removed; it is "
            "still registered (``get_stats`` works, with the removal's status)")
    on_client_socket_removed: OnClient = setting(
        CALLBACK, default=None, unit=None,
        doc="``on_client_socket_removed(stream)``: the client is unregistered; the "
            "stream is the caller's again (the sink never closes it)")
    on_message: OnMessage = setting(
        CALLBACK, default=None, unit=None,
        doc="``on_message(stream, data)``: bytes read from a client (with ``send_messages``)")
    on_dispatched: OnDispatched = setting(
        CALLBACK, default=None, unit=None,
        doc="``on_dispatched(stream, buffer)``: a buffer (headers included) was completely "
            "written to a client (with ``send_dispatched``)")

    @classmethod
    def properties(cls) -> tuple[SinkProperty[Any], ...]:
        """Every property that is not a callback, in the documented order.

        Each entry has ``.name``, ``.type`` (a Python type, or the enum class),
        ``.default``, ``.unit`` ("buffers", "bytes", "seconds", the name of the
        property that chooses the unit, or ``None``), ``.doc`` (one line) and
        ``.check(value)``, which returns the value as it would be stored or
        raises :exc:`~trio_msink.PropertyTypeError` /
        :exc:`~trio_msink.PropertyValueError`.
        """
        return tuple(p for p in cls._declared if p.kind != "callback")

    @classmethod
    def callbacks(cls) -> tuple[SinkProperty[Any], ...]:
        """The callback properties (``on_*``), in the documented order."""
        return tuple(p for p in cls._declared if p.kind == "callback")

    def _check_together(self, values: dict[str, Any], changed: str | None) -> None:
        """A soft limit may not be above its hard limit (both set, > 0)."""
        for soft, hard in (("buffers_soft_max", "buffers_max"), ("units_soft_max", "units_max")):
            if values[soft] > 0 and values[hard] > 0 and values[soft] > values[hard]:
                raise PropertyValueError(
                    hard if changed == hard else soft,
                    f"{soft} ({values[soft]}) must not be above {hard} ({values[hard]})",
                )


def check_sync(name: str, value: object) -> SyncMethod:
    """A :class:`SyncMethod` argument (``add_full``, ``serve``)."""
    return _SYNC_METHOD.check(name, value)


def check_burst(min_format: object, min_value: object, max_format: object,
                max_value: object) -> Burst:
    """The burst arguments of ``add_full`` / ``serve``, checked as one."""
    burst = Burst(
        _FORMAT.check("min_format", min_format), check_amount("min_value", min_value),
        _FORMAT.check("max_format", max_format), check_amount("max_value", max_value),
    )
    if (burst.min_format == burst.max_format and burst.min_value >= 0
            and burst.max_value >= 0 and burst.max_value < burst.min_value):
        raise PropertyValueError(
            "max_value",
            f"max_value ({max_value}) must not be below min_value ({min_value}) "
            f"in the same format",
        )
    return burst
