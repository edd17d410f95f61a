"""Validation of the Sink's properties: one checker per kind of value.

Every check names the argument in its message and raises before anything is
changed, so a refused value leaves the sink exactly as it was.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

__all__ = [
    "Setting",
    "check_bool",
    "check_callback",
    "check_count",
    "check_dscp",
    "check_enum",
    "check_seconds",
    "check_amount",
]

T = TypeVar("T")
E = TypeVar("E", bound=enum.IntEnum)


def _check_number(name: str, value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    return value


def check_count(name: str, value: object) -> int:
    """An int that is -1 (unset) or >= 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < -1:
        raise ValueError(f"{name} must be -1 or >= 0, not {value}")
    return int(value)


def check_amount(name: str, value: object) -> float | int:
    """An int or float that is -1 (unset) or >= 0 (bytes, buffers or seconds)."""
    number = _check_number(name, value)
    if number < 0 and number != -1:
        raise ValueError(f"{name} must be -1 or >= 0, not {value!r}")
    return number


def check_seconds(name: str, value: object) -> float:
    """Seconds as an int or float: -1 (unset) or >= 0."""
    return float(check_amount(name, value))


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_dscp(name: str, value: object) -> int:
    number = check_count(name, value)
    if number > 63:
        raise ValueError(f"{name} must be -1 or 0..63, not {number}")
    return number


def check_enum(cls: type[E]) -> Callable[[str, object], E]:
    """A checker that accepts a member of ``cls`` or its integer value."""

    def check(name: str, value: object) -> E:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a {cls.__name__}, not {type(value).__name__}")
        if isinstance(value, enum.IntEnum) and not isinstance(value, cls):
            raise TypeError(f"{name} must be a {cls.__name__}, not {type(value).__name__}")
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a valid {cls.__name__}") from None

    return check


def check_callback(name: str, value: object) -> Callable[..., object] | None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value


class Setting(Generic[T]):
    """A validated property: reading gives the value, assigning checks it,
    lets the owner check it against the other settings, then applies it."""

    def __init__(self, default: T, check: Callable[[str, object], T]) -> None:
        self.default = default
        self.check = check
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Setting[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__["_settings"][self.name]

    def __set__(self, obj: Any, value: object) -> None:
        checked = self.check(self.name, value)
        obj._update_settings({self.name: checked})
