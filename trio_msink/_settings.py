"""Declared, validated properties: the machinery behind the Sink's properties.

A class that derives from :class:`Properties` declares each property once, as
an annotated attribute whose value is :func:`setting`::

    buffers_max: int = setting(COUNT, -1, unit="buffers", doc="...")

From that one declaration come the keyword-only ``__init__`` (typed for mypy
through :func:`typing.dataclass_transform`, with a real
:func:`inspect.signature` at run time), the attribute that validates every
assignment, and the :class:`SinkProperty` record that the docs, the command's
flags and the tests read. Nothing here knows which properties exist.

Every check names the property in its error (:exc:`PropertyValueError`,
:exc:`PropertyTypeError`, both carrying ``.name``) and raises before anything
is changed, so a refused value leaves the object exactly as it was.
"""

from __future__ import annotations

import builtins
import enum
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, dataclass_transform, overload

__all__ = [
    "AMOUNT",
    "BOOL",
    "CALLBACK",
    "COUNT",
    "DSCP",
    "SECONDS",
    "Check",
    "Properties",
    "PropertyTypeError",
    "PropertyValueError",
    "SinkProperty",
    "enum_check",
    "setting",
]

T = TypeVar("T")
E = TypeVar("E", bound=enum.IntEnum)


class PropertyValueError(ValueError):
    """A property (or argument) was given a value it refuses.

    ``name`` is the property's (or argument's) name, so that a caller such as
    the ``trio-msink`` command can say which of its options was wrong without
    reading the message.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        #: The name of the refused property or argument.
        self.name = name


class PropertyTypeError(TypeError):
    """A property (or argument) was given a value of the wrong type.

    ``name`` is the property's (or argument's) name.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        #: The name of the refused property or argument.
        self.name = name


# -- the checks, one per kind of value ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Check(Generic[T]):
    """One kind of value: its Python type, a name for it, and its validation.

    ``check(name, value)`` returns the value to store or raises
    :exc:`PropertyTypeError` / :exc:`PropertyValueError` naming ``name``.
    """

    #: Short name of the rule ("count", "amount", "seconds", ...).
    kind: str
    #: The Python type of a valid value (an enum class for enums).
    type: type
    check: Callable[[str, object], T]


def _number(name: str, value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PropertyTypeError(name, f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise PropertyValueError(name, f"{name} must be finite, not {value!r}")
    return value


def check_count(name: str, value: object) -> int:
    """An int that is -1 (unset) or >= 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PropertyTypeError(name, f"{name} must be an int, not {type(value).__name__}")
    if value < -1:
        raise PropertyValueError(name, f"{name} must be -1 or >= 0, not {value}")
    return int(value)


def check_amount(name: str, value: object) -> float:
    """An int or float that is -1 (unset) or >= 0 (bytes, buffers or seconds)."""
    number = _number(name, value)
    if number < 0 and number != -1:
        raise PropertyValueError(name, f"{name} must be -1 or >= 0, not {value!r}")
    return number


def _check_seconds(name: str, value: object) -> float:
    return float(check_amount(name, value))


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise PropertyTypeError(name, f"{name} must be a bool, not {type(value).__name__}")
    return value


def _check_dscp(name: str, value: object) -> int:
    number = check_count(name, value)
    if number > 63:
        raise PropertyValueError(name, f"{name} must be -1 or 0..63, not {number}")
    return number


def _check_callback(name: str, value: object) -> Callable[..., object] | None:
    if value is not None and not callable(value):
        raise PropertyTypeError(
            name, f"{name} must be callable or None, not {type(value).__name__}"
        )
    return value


#: An int, -1 (unset) or >= 0.
COUNT = Check("count", int, check_count)
#: An int or a float, -1 (unset) or >= 0, finite; kept as given.
AMOUNT = Check("amount", float, check_amount)
#: Seconds as an int or a float, -1 (unset) or >= 0, finite; stored as a float.
SECONDS = Check("seconds", float, _check_seconds)
#: ``True`` or ``False`` (not 0 or 1).
BOOL = Check("bool", bool, _check_bool)
#: A DSCP code point, 0..63, or -1 (leave the socket alone).
DSCP = Check("dscp", int, _check_dscp)
#: A plain callable or ``None``.
CALLBACK: Check[Callable[..., object] | None] = Check("callback", object, _check_callback)


def enum_check(cls: type[E]) -> Check[E]:
    """A member of ``cls`` or its integer value (not another enum's member)."""

    def check(name: str, value: object) -> E:
        if (isinstance(value, bool) or not isinstance(value, int)
                or (isinstance(value, enum.IntEnum) and not isinstance(value, cls))):
            raise PropertyTypeError(
                name, f"{name} must be a {cls.__name__}, not {type(value).__name__}"
            )
        try:
            return cls(value)
        except ValueError:
            raise PropertyValueError(
                name, f"{name}: {value!r} is not a valid {cls.__name__}"
            ) from None

    return Check("enum", cls, check)


# -- the declaration -------------------------------------------------------------------


class SinkProperty(Generic[T]):
    """The declaration of one property: everything else is derived from it.

    As a class attribute it is also the descriptor: reading gives the value,
    assigning validates it (alone, then against the other properties) and
    only then applies it.
    """

    __slots__ = ("_check", "default", "doc", "name", "unit")

    def __init__(self, check: Check[T], default: T, unit: str | None, doc: str) -> None:
        self._check = check
        #: The value a new object starts with.
        self.default = default
        #: What the value counts: "buffers", "bytes", "seconds", or the name
        #: of the property that chooses its unit ("unit_format",
        #: "burst_format"); ``None`` for values that count nothing.
        self.unit = unit
        #: One line saying what the property does.
        self.doc = doc
        #: The property's name (the keyword argument and the attribute).
        self.name = ""

    @property
    def type(self) -> builtins.type:
        """The Python type of a valid value (an enum class for enums); an int
        is accepted wherever a float is, and an enum's integer value wherever
        the enum is."""
        return self._check.type

    @property
    def kind(self) -> str:
        """The name of the validation rule: "count", "amount", "seconds",
        "bool", "dscp", "enum" or "callback"."""
        return self._check.kind

    def check(self, value: object) -> T:
        """``value`` as it would be stored; raises :exc:`PropertyTypeError` or
        :exc:`PropertyValueError` (naming the property) if it is refused."""
        return self._check.check(self.name, value)

    def __set_name__(self, owner: builtins.type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<SinkProperty {self.name}={self.default!r}>"

    @overload
    def __get__(self, obj: None, objtype: builtins.type | None = None) -> SinkProperty[T]: ...
    @overload
    def __get__(self, obj: object, objtype: builtins.type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: builtins.type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__["_values"][self.name]

    def __set__(self, obj: Properties, value: object) -> None:
        obj._update_values({self.name: self.check(value)}, self.name)


def setting(check: Check[T], *, default: T, unit: str | None, doc: str) -> T:
    """Declare a property (the field specifier of :class:`Properties`).

    Typed as returning the value so that mypy sees ``name: int = setting(...)``
    as a plain ``int`` attribute with a default (``default`` must be passed by
    keyword for mypy to see it); at run time it returns the
    :class:`SinkProperty` descriptor. ``unit`` has no default so that every
    declaration states it, ``None`` included.
    """
    return cast(T, SinkProperty(check, default, unit, doc))


@dataclass_transform(kw_only_default=True, eq_default=False, field_specifiers=(setting,))
class Properties:
    """Base of a class whose constructor takes its declared properties.

    The generated ``__init__`` takes every property as a keyword argument,
    validates each one alone and then all together (:meth:`_check_together`),
    stores them, and calls ``__post_init__`` for the subclass's own state.
    """

    #: Every declared property of the class, in declaration order.
    _declared: tuple[SinkProperty[Any], ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = {p.name: p for p in cls._declared}
        for value in vars(cls).values():
            if isinstance(value, SinkProperty):
                declared[value.name] = value
        cls._declared = tuple(declared.values())
        if "__init__" in vars(cls):
            return  # a subclass's own __init__ (which calls super().__init__) stays

        # Each class gets its own __init__ so that inspect.signature (and so
        # Sphinx and help()) shows the real keyword-only parameters.
        def __init__(self: Properties, **values: object) -> None:
            Properties.__init__(self, **values)

        __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default)
               for p in cls._declared]
        )
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__doc__ = Properties.__init__.__doc__
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, **values: object) -> None:
        """Take every declared property as a keyword argument (see the class)."""
        declared = {p.name: p for p in self._declared}
        checked: dict[str, object] = {p.name: p.default for p in self._declared}
        for name, value in values.items():
            prop = declared.get(name)
            if prop is None:
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument {name!r}"
                )
            checked[name] = prop.check(value)
        self._check_together(checked, None)
        self._values: dict[str, Any] = checked
        self.__post_init__()

    def __post_init__(self) -> None:
        """Hook: set up the subclass's own state, once the properties are set."""

    def _update_values(self, changes: dict[str, object], name: str) -> None:
        self._check_together({**self._values, **changes}, name)
        self._values.update(changes)
        self._values_changed(changes)

    def _check_together(self, values: dict[str, Any], changed: str | None) -> None:
        """Hook: refuse a combination of values (``changed`` is the property
        being assigned, ``None`` in the constructor)."""

    def _values_changed(self, changes: dict[str, object]) -> None:
        """Hook: apply properties that were just changed."""
