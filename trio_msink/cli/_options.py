"""Command-line flags for every Sink property, derived from the Sink's own
declaration of its properties (``Sink.properties()``: name, type, default,
unit, validation, doc): a new property gets its flag, help and parsing here
without a line changed. A refused value names its flag and exits with status
2. The defaults are the command's (see :mod:`._defaults`) where it has one,
else the Sink's."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Mapping
from typing import Any

from .. import Sink, SinkProperty
from ._defaults import describe_default

__all__ = ["add_sink_flags", "explicit_properties", "flag_of", "sink_properties"]

# The metavar of a flag by what its value counts (SinkProperty.unit).
_METAVARS = {"seconds": "S", "bytes": "BYTES", "buffers": "N"}


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def flag_of(name: str) -> str:
    """The flag of a Sink property: ``buffers_max`` → ``--buffers-max``."""
    return "--" + _kebab(name)


def _shown(value: Any) -> str:
    """A library default as the command line writes it."""
    if isinstance(value, enum.IntEnum):
        return _kebab(value.name.lower())
    return str(value)


def _enum_type(cls: type[enum.IntEnum]) -> Callable[[str], enum.IntEnum]:
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


def _help(prop: SinkProperty[Any], shown: str) -> str:
    doc = prop.doc.replace("``", "")  # reST literals, plain on a terminal
    return f"{doc} (default: {shown})".replace("%", "%%")


def add_sink_flags(parser: argparse.ArgumentParser,
                   describe: Callable[[str], str | None] = describe_default) -> None:
    """One flag per Sink property. A flag not given leaves no attribute in
    the parsed namespace (see :func:`explicit_properties`); ``describe(name)``
    states the command's default in ``--help`` (``None``: the Sink's own)."""
    group = parser.add_argument_group("sink options (the Sink properties)")
    for prop in Sink.properties():
        shown = describe(prop.name)
        help_text = _help(prop, _shown(prop.default) if shown is None else shown)
        flag = flag_of(prop.name)
        if prop.kind == "bool":
            group.add_argument(flag, dest=prop.name, default=argparse.SUPPRESS,
                               action=argparse.BooleanOptionalAction, help=help_text)
        elif prop.kind == "enum":
            cls: type[enum.IntEnum] = prop.type
            group.add_argument(flag, dest=prop.name, type=_enum_type(cls),
                               default=argparse.SUPPRESS, help=help_text,
                               metavar="|".join(_kebab(m.name.lower()) for m in cls))
        else:
            group.add_argument(flag, dest=prop.name, default=argparse.SUPPRESS,
                               type=_integer if prop.type is int else _number,
                               metavar=_METAVARS.get(prop.unit or "", "N"), help=help_text)


def explicit_properties(args: argparse.Namespace) -> frozenset[str]:
    """The Sink properties whose flag was given on the command line."""
    return frozenset(p.name for p in Sink.properties() if hasattr(args, p.name))


def sink_properties(args: argparse.Namespace, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The Sink keyword arguments: the flags given, else ``defaults`` (the
    command's), else the Sink's own defaults."""
    return {p.name: getattr(args, p.name, defaults.get(p.name, p.default))
            for p in Sink.properties()}
