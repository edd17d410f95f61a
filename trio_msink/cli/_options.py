"""Command-line flags for every Sink property, with the Sink's validation (a
refused value names its flag and exits with status 2); the defaults are the
command's (see :mod:`._defaults`) where it has one, else the Sink's."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Mapping
from typing import Any

from .. import Format, RecoverPolicy, Sink, SyncMethod
from ._defaults import describe_default

__all__ = [
    "PROPERTIES", "add_sink_flags", "explicit_properties", "flag_of", "sink_properties",
]

_ENUMS: dict[str, type[enum.IntEnum]] = {
    "unit_format": Format,
    "burst_format": Format,
    "recover_policy": RecoverPolicy,
    "sync_method": SyncMethod,
}
#: Every Sink property, in the order of API.md §3.
PROPERTIES = (
    "buffers_max", "buffers_soft_max", "unit_format", "units_max", "units_soft_max",
    "recover_policy", "sync_method", "burst_format", "burst_value", "bytes_min",
    "time_min", "buffers_min", "timeout", "sync", "resend_streamheader", "qos_dscp",
    "handle_read", "send_messages", "send_dispatched", "linger",
)
_INTS = {"buffers_max", "buffers_soft_max", "bytes_min", "buffers_min", "qos_dscp"}
_HELP = {
    "buffers_max": "hard limit on a client's lag in buffers (-1: none)",
    "buffers_soft_max": "soft limit on a client's lag in buffers (-1: none)",
    "unit_format": "unit of --units-max/--units-soft-max",
    "units_max": "hard limit in --unit-format units",
    "units_soft_max": "soft limit in --unit-format units",
    "recover_policy": "what a client over a soft limit gets",
    "sync_method": "where a new client starts",
    "burst_format": "unit of --burst-value",
    "burst_value": "minimum burst for a new client",
    "bytes_min": "keep at least this many bytes of history",
    "time_min": "keep at least this many seconds of history",
    "buffers_min": "keep at least this many buffers of history",
    "timeout": "seconds without write progress before a client is dropped (0: off)",
    "sync": "pace delivery by the stream's timestamps",
    "resend_streamheader": "send changed stream headers to existing clients",
    "qos_dscp": "DSCP (0..63) for client sockets (-1: leave alone)",
    "handle_read": "read from clients to notice when they close",
    "send_messages": "report bytes clients send (logged)",
    "send_dispatched": "report every buffer written (logged)",
    "linger": "seconds clients get to drain at exit (-1: no limit)",
}


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def flag_of(name: str) -> str:
    """The flag of a Sink property: ``buffers_max`` → ``--buffers-max``."""
    return "--" + _kebab(name)


def _enum_type(cls: type[enum.IntEnum]) -> Any:
    names = {_kebab(m.name.lower()): m for m in cls}

    def parse(text: str) -> enum.IntEnum:
        key = text.strip().lower().replace("_", "-")
        if key in names:
            return names[key]
        try:
            return cls(int(key))
        except ValueError:
            choices = ", ".join(names)
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {choices}") from None

    parse.__name__ = cls.__name__
    return parse


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def add_sink_flags(parser: argparse.ArgumentParser,
                   describe: Callable[[str], str | None] = describe_default) -> None:
    """One flag per Sink property. A flag not given leaves no attribute in
    the parsed namespace (see :func:`explicit_properties`); ``describe(name)``
    states the command's default in ``--help`` (``None``: the Sink's own)."""
    group = parser.add_argument_group("sink options (the Sink properties)")
    sink = Sink()  # the library's own defaults
    for name in PROPERTIES:
        library: Any = getattr(sink, name)
        shown = describe(name)
        if shown is None:
            shown = _kebab(library.name.lower()) if name in _ENUMS else str(library)
        help_text = f"{_HELP[name]} (default: {shown})"
        if isinstance(library, bool):
            group.add_argument(flag_of(name), dest=name, default=argparse.SUPPRESS,
                               action=argparse.BooleanOptionalAction, help=help_text)
        elif name in _ENUMS:
            cls = _ENUMS[name]
            choices = "|".join(_kebab(m.name.lower()) for m in cls)
            group.add_argument(flag_of(name), dest=name, type=_enum_type(cls),
                               default=argparse.SUPPRESS, metavar=choices, help=help_text)
        else:
            group.add_argument(flag_of(name), dest=name,
                               type=_integer if name in _INTS else _number,
                               default=argparse.SUPPRESS, metavar="N", help=help_text)


def explicit_properties(args: argparse.Namespace) -> frozenset[str]:
    """The Sink properties whose flag was given on the command line."""
    return frozenset(name for name in PROPERTIES if hasattr(args, name))


def sink_properties(args: argparse.Namespace, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The Sink keyword arguments: the flags given, else ``defaults`` (the
    command's), else the Sink's own defaults."""
    sink = Sink()
    return {name: getattr(args, name, defaults.get(name, getattr(sink, name)))
            for name in PROPERTIES}
