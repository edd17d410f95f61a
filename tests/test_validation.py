"""Bad input: every refusal of docs/api.rst raises the documented error, with a
message naming the argument, and changes nothing."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RecordingStream, settle

from trio_msink import (
    Buffer,
    ClientStatus,
    Format,
    PropertyTypeError,
    PropertyValueError,
    Sink,
    SinkProperty,
    SyncMethod,
)

# -- the properties, from their declaration --------------------------------------------
#
# Every case below is derived from Sink.properties() / Sink.callbacks(): a new
# property is tested as soon as it is declared, and a new kind of value without
# bad and good values here fails test_every_kind_of_property_is_tested.

PROPERTIES = Sink.properties()
CALLBACKS = Sink.callbacks()
DECLARED = PROPERTIES + CALLBACKS

_NOT_NUMBERS = ("3", None, b"3", [3])
_BAD_AMOUNTS = (-2, -100, -0.5, -1.5, math.nan, math.inf, -math.inf)
BAD_TYPES: dict[str, tuple[object, ...]] = {
    "count": _NOT_NUMBERS,
    "amount": _NOT_NUMBERS,
    "seconds": _NOT_NUMBERS,
    "dscp": _NOT_NUMBERS,
    "bool": ("yes", None, [True]),
    "enum": ("LATEST", None, 1.5),
    "callback": (42, "print"),
}
BAD_VALUES: dict[str, tuple[object, ...]] = {
    "count": (-2, -100),
    "amount": _BAD_AMOUNTS,
    "seconds": _BAD_AMOUNTS,
    "dscp": (-2, -100, 64, 255),
    "bool": (),  # every non-bool is a wrong type
    "enum": (99, -5),
    "callback": (),  # every non-callable is a wrong type
}
_GOOD_AMOUNTS = (-1, 0, 5, 2.5, 0.0, -1.0)
GOOD_VALUES: dict[str, tuple[object, ...]] = {
    "count": (-1, 0, 5),
    "amount": _GOOD_AMOUNTS,
    "seconds": _GOOD_AMOUNTS,
    "dscp": (-1, 0, 5, 63),
    "bool": (True, False),
    "enum": (),  # every member of the property's enum, below
    "callback": (None, print),
}
#: Kinds whose value measures something, so the declaration must say in what.
MEASURED = ("count", "amount", "seconds")


def _good_values(prop: SinkProperty[Any]) -> tuple[object, ...]:
    if prop.kind == "enum":
        return tuple(prop.type)
    return GOOD_VALUES.get(prop.kind, ())


WRONG_TYPES: list[tuple[str, object]] = [
    (p.name, bad) for p in DECLARED for bad in BAD_TYPES.get(p.kind, ())
]
WRONG_VALUES: list[tuple[str, object]] = [
    (p.name, bad) for p in DECLARED for bad in BAD_VALUES.get(p.kind, ())
]
VALID_VALUES: list[tuple[str, object]] = [
    (p.name, good) for p in DECLARED for good in _good_values(p)
]


@pytest.mark.parametrize("prop", DECLARED, ids=lambda p: p.name)
def test_every_kind_of_property_is_tested(prop: SinkProperty[Any]) -> None:
    assert BAD_TYPES.get(prop.kind), f"no wrong types for {prop.kind} ({prop.name})"
    assert prop.kind in BAD_VALUES, f"no wrong values for {prop.kind} ({prop.name})"
    assert _good_values(prop), f"no valid values for {prop.kind} ({prop.name})"


@pytest.mark.parametrize("prop", DECLARED, ids=lambda p: p.name)
def test_every_property_is_declared_with_a_doc_a_unit_and_a_valid_default(
    prop: SinkProperty[Any],
) -> None:
    assert prop.doc.strip() and "\n" not in prop.doc, f"{prop.name} needs a one-line doc"
    names = {p.name for p in DECLARED}
    assert prop.unit in (None, "buffers", "bytes", "seconds") or prop.unit in names
    if prop.kind in MEASURED:
        assert prop.unit is not None, f"{prop.name} measures something: declare its unit"
    assert prop.check(prop.default) == prop.default
    assert getattr(Sink(), prop.name) == prop.default
    # an int is a valid float (the default of a limit is -1, as GStreamer's)
    expected = (int, float) if prop.type is float else prop.type
    assert isinstance(prop.default, expected) or prop.default is None


def test_the_constructor_signature_is_the_declaration() -> None:
    parameters = inspect.signature(Sink).parameters
    assert list(parameters) == [p.name for p in DECLARED]
    for prop in DECLARED:
        parameter = parameters[prop.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default == prop.default


def _ids(case: object) -> str:
    if isinstance(case, tuple):
        name, value = case
        return f"{name}={value!r}"
    return repr(case)


def snapshot(sink: Sink) -> dict[str, object]:
    return {p.name: getattr(sink, p.name) for p in DECLARED}


def named(name: str) -> str:
    """A ``match`` pattern: the message names the argument as a word."""
    return rf"\b{re.escape(name)}\b"


# -- properties: constructor and assignment -------------------------------------------


@pytest.mark.parametrize("case", WRONG_TYPES, ids=_ids)
def test_constructor_refuses_a_wrong_type(case: tuple[str, object]) -> None:
    name, value = case
    with pytest.raises(PropertyTypeError, match=named(name)) as caught:
        Sink(**{name: value})
    assert caught.value.name == name


@pytest.mark.parametrize("case", WRONG_TYPES, ids=_ids)
def test_assignment_refuses_a_wrong_type_and_changes_nothing(case: tuple[str, object]) -> None:
    name, value = case
    sink = Sink()
    before = snapshot(sink)
    with pytest.raises(PropertyTypeError, match=named(name)) as caught:
        setattr(sink, name, value)
    assert caught.value.name == name
    assert snapshot(sink) == before


@pytest.mark.parametrize("case", WRONG_VALUES, ids=_ids)
def test_constructor_refuses_a_wrong_value(case: tuple[str, object]) -> None:
    name, value = case
    with pytest.raises(PropertyValueError, match=named(name)) as caught:
        Sink(**{name: value})
    assert caught.value.name == name


@pytest.mark.parametrize("case", WRONG_VALUES, ids=_ids)
def test_assignment_refuses_a_wrong_value_and_changes_nothing(case: tuple[str, object]) -> None:
    name, value = case
    sink = Sink(buffers_max=10, units_max=10)  # non-defaults too, to see nothing changes
    before = snapshot(sink)
    with pytest.raises(PropertyValueError, match=named(name)) as caught:
        setattr(sink, name, value)
    assert caught.value.name == name
    assert snapshot(sink) == before


async def test_refused_assignment_on_a_running_sink_changes_nothing() -> None:
    stream = RecordingStream()
    async with Sink(buffers_max=3) as sink:
        sink.add(stream)
        before = snapshot(sink)
        with pytest.raises(ValueError, match=named("buffers_max")):
            sink.buffers_max = -7
        with pytest.raises(TypeError, match=named("buffers_max")):
            sink.buffers_max = "1"  # type: ignore[assignment]
        assert snapshot(sink) == before
        await sink.send(b"a")
        await settle()
        assert stream.data == b"a"
        assert sink.num_handles == 1


@pytest.mark.parametrize(
    ("soft", "hard"), [("buffers_soft_max", "buffers_max"), ("units_soft_max", "units_max")]
)
def test_soft_limit_above_its_hard_limit_is_refused(soft: str, hard: str) -> None:
    with pytest.raises(PropertyValueError, match=named(soft)) as caught:
        Sink(**{soft: 5, hard: 3})
    assert caught.value.name == soft

    sink = Sink(**{hard: 3})
    before = snapshot(sink)
    with pytest.raises(PropertyValueError, match=named(soft)) as caught:
        setattr(sink, soft, 4)
    assert caught.value.name == soft
    assert snapshot(sink) == before

    sink = Sink(**{soft: 3})
    before = snapshot(sink)
    with pytest.raises(PropertyValueError, match=named(hard)) as caught:
        setattr(sink, hard, 2)
    assert caught.value.name == hard
    assert snapshot(sink) == before


@pytest.mark.parametrize(
    "properties",
    [
        {"buffers_soft_max": 3, "buffers_max": 3},  # equal is fine
        {"units_soft_max": 2.5, "units_max": 2.5},
        {"buffers_soft_max": 10, "buffers_max": 0},  # 0 and -1: no hard limit
        {"buffers_soft_max": 10, "buffers_max": -1},
        {"units_soft_max": 10, "units_max": 0},
        {"buffers_soft_max": 10, "units_max": 3},  # different units
        {"units_soft_max": 10, "buffers_max": 3},
    ],
)
def test_soft_and_hard_limits_that_agree_are_accepted(properties: dict[str, object]) -> None:
    sink = Sink(**properties)
    for name, value in properties.items():
        assert getattr(sink, name) == value
    other = Sink()
    for name, value in properties.items():
        setattr(other, name, value)
    assert snapshot(other) == snapshot(sink)


@pytest.mark.parametrize(("name", "value"), VALID_VALUES, ids=_ids)
def test_valid_values_are_accepted_and_read_back(name: str, value: object) -> None:
    assert getattr(Sink(**{name: value}), name) == value
    sink = Sink()
    setattr(sink, name, value)
    assert getattr(sink, name) == value


@pytest.mark.parametrize("name", ["buffer_max", "on_client_add", "max_lateness", "port"])
def test_unknown_keyword_is_a_type_error(name: str) -> None:
    with pytest.raises(TypeError, match=named(name)):
        Sink(**{name: 1})


def test_properties_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Sink(5)  # type: ignore[call-arg]


# -- Buffer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"data": "text"}, "data"),
        ({"data": 42}, "data"),
        ({"data": None}, "data"),
        ({"data": 3.5}, "data"),
        ({"data": [b"a", "b"]}, "data"),
        ({"data": [b"a", 3]}, "data"),
        ({"data": [b"a", None]}, "data"),
        ({"data": b"x", "pts": "1"}, "pts"),
        ({"data": b"x", "pts": [1]}, "pts"),
        ({"data": b"x", "duration": "2"}, "duration"),
        ({"data": b"x", "delta_unit": "yes"}, "delta_unit"),
        ({"data": b"x", "delta_unit": None}, "delta_unit"),
        ({"data": b"x", "header": "no"}, "header"),
        ({"data": b"x", "header": None}, "header"),
    ],
)
def test_buffer_refuses_wrong_types(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(TypeError, match=named(name)):
        Buffer(**kwargs)


def test_buffer_options_are_keyword_only_and_the_buffer_is_frozen() -> None:
    with pytest.raises(TypeError):
        Buffer(b"x", 1.0)  # type: ignore[misc]
    buffer = Buffer(b"x", pts=1)
    with pytest.raises(AttributeError):
        buffer.pts = 2.0  # type: ignore[misc]
    assert buffer.pts == 1


def test_buffer_accepts_what_the_api_reference_allows() -> None:
    assert len(Buffer(b"")) == 0
    assert len(Buffer([b"ab", bytearray(b"cd"), memoryview(b"ef")])) == 6
    assert len(Buffer((b"ab", b""))) == 2
    assert Buffer(b"x", pts=1, duration=0.5).pts == 1
    assert Buffer(b"x", delta_unit=True).keyframe is False
    assert Buffer(b"x").keyframe is True


async def test_send_refuses_what_is_not_a_buffer() -> None:
    async with Sink() as sink:
        for bad in ("text", 42, None, [b"a"]):
            with pytest.raises(TypeError):
                await sink.send(bad)  # type: ignore[arg-type]
        assert sink.bytes_to_serve == 0
        assert sink.buffers_queued == 0


# -- add, add_full, serve ------------------------------------------------------------------


class Events:
    """Every client callback, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[object, ...]] = []

    def callbacks(self) -> dict[str, Callable[..., None]]:
        def record(kind: str) -> Callable[..., None]:
            return lambda *args: self.log.append((kind, *args))

        return {
            "on_client_added": record("added"),
            "on_client_removed": record("removed"),
            "on_client_socket_removed": record("socket_removed"),
        }


NOT_STREAMS: list[object] = [b"bytes", "text", None, object(), 42]


@pytest.mark.parametrize(
    "bad", [*NOT_STREAMS, "receive-only"], ids=["bytes", "str", "None", "object", "int", "recv"]
)
async def test_add_of_a_non_stream_is_a_type_error(bad: object) -> None:
    if bad == "receive-only":
        bad = trio.testing.MemoryReceiveStream()
    events = Events()
    async with Sink(**events.callbacks()) as sink:
        with pytest.raises(TypeError, match=named("stream")):
            sink.add(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=named("stream")):
            sink.add_full(bad, SyncMethod.LATEST, Format.UNDEFINED, -1,  # type: ignore[arg-type]
                          Format.UNDEFINED, -1)
        with pytest.raises(TypeError, match=named("stream")):
            await sink.serve(bad)  # type: ignore[arg-type]
        assert sink.num_handles == 0
    assert events.log == []


@pytest.mark.parametrize(
    ("fmt", "min_value", "max_value"),
    [(Format.BUFFERS, 5, 3), (Format.BYTES, 1000, 999), (Format.TIME, 2.0, 1.5),
     (Format.BUFFERS, 1, 0)],
)
async def test_add_full_with_max_below_min_registers_nothing(
    fmt: Format, min_value: float, max_value: float
) -> None:
    events = Events()
    stream = RecordingStream()
    async with Sink(**events.callbacks()) as sink:
        with pytest.raises(ValueError, match=named("max_value")):
            sink.add_full(stream, SyncMethod.BURST, fmt, min_value, fmt, max_value)
        with pytest.raises(ValueError, match=named("max_value")):
            await sink.serve(stream, sync_method=SyncMethod.BURST, min_format=fmt,
                             min_value=min_value, max_format=fmt, max_value=max_value)
        assert sink.num_handles == 0
        assert sink.get_stats(stream) is None
        await sink.send(b"not for it")
        await settle()
        assert events.log == []
        assert stream.data == b""
        # nothing was registered: the same stream can be added now
        sink.add_full(stream, SyncMethod.BURST, fmt, min_value, fmt, min_value)
        assert events.log == [("added", stream)]
        # different formats are not compared
        other = RecordingStream()
        other_fmt = Format.BYTES if fmt != Format.BYTES else Format.BUFFERS
        sink.add_full(other, SyncMethod.BURST, fmt, min_value, other_fmt, max_value)
        assert sink.num_handles == 2


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((99, Format.BUFFERS, 1, Format.BUFFERS, 2), ValueError, "sync_method"),
        (("LATEST", Format.BUFFERS, 1, Format.BUFFERS, 2), TypeError, "sync_method"),
        ((SyncMethod.BURST, 77, 1, Format.BUFFERS, 2), ValueError, "min_format"),
        ((SyncMethod.BURST, "BYTES", 1, Format.BUFFERS, 2), TypeError, "min_format"),
        ((SyncMethod.BURST, Format.BUFFERS, 1, 77, 2), ValueError, "max_format"),
        ((SyncMethod.BURST, Format.BUFFERS, "1", Format.BUFFERS, 2), TypeError, "min_value"),
        ((SyncMethod.BURST, Format.BUFFERS, -3, Format.BUFFERS, 2), ValueError, "min_value"),
        ((SyncMethod.BURST, Format.BUFFERS, 1, Format.BUFFERS, None), TypeError, "max_value"),
        ((SyncMethod.BURST, Format.BUFFERS, 1, Format.BUFFERS, math.nan), ValueError,
         "max_value"),
    ],
)
async def test_add_full_refuses_bad_arguments_and_registers_nothing(
    args: tuple[object, ...], error: type[Exception], name: str
) -> None:
    events = Events()
    stream = RecordingStream()
    async with Sink(**events.callbacks()) as sink:
        with pytest.raises(error, match=named(name)) as caught:
            sink.add_full(stream, *args)  # type: ignore[arg-type]
        assert isinstance(caught.value, (PropertyTypeError, PropertyValueError))
        assert caught.value.name == name
        assert sink.num_handles == 0
        assert sink.get_stats(stream) is None
    assert events.log == []


async def test_add_and_send_before_entering_the_block_are_refused() -> None:
    events = Events()
    sink = Sink(**events.callbacks())
    stream = RecordingStream()
    with pytest.raises(trio.ClosedResourceError):
        sink.add(stream)
    with pytest.raises(trio.ClosedResourceError):
        sink.add_full(stream, SyncMethod.LATEST, Format.UNDEFINED, -1, Format.UNDEFINED, -1)
    with pytest.raises(trio.ClosedResourceError):
        await sink.serve(stream)
    with pytest.raises(trio.ClosedResourceError):
        await sink.send(b"x")
    assert sink.num_handles == 0
    assert sink.bytes_to_serve == 0
    assert events.log == []


async def test_add_and_send_after_the_block_are_refused() -> None:
    events = Events()
    async with Sink(**events.callbacks()) as sink:
        await sink.send(b"during")
    stream = RecordingStream()
    with pytest.raises(trio.ClosedResourceError):
        sink.add(stream)
    with pytest.raises(trio.ClosedResourceError):
        sink.add_full(stream, SyncMethod.LATEST, Format.UNDEFINED, -1, Format.UNDEFINED, -1)
    with pytest.raises(trio.ClosedResourceError):
        await sink.serve(stream)
    with pytest.raises(trio.ClosedResourceError):
        await sink.send(b"x")
    assert sink.num_handles == 0
    assert sink.bytes_to_serve == len(b"during")
    assert events.log == []


async def test_add_and_send_after_aclose_are_refused() -> None:
    async with Sink() as sink:
        await sink.aclose()
        with pytest.raises(trio.ClosedResourceError):
            sink.add(RecordingStream())
        with pytest.raises(trio.ClosedResourceError):
            await sink.send(b"x")


async def test_duplicate_add_reports_duplicate_only_and_the_first_keeps_streaming() -> None:
    events = Events()
    stream = RecordingStream()
    async with Sink(**events.callbacks()) as sink:
        sink.add(stream)
        await sink.send(b"one")
        await settle()
        sink.add(stream)
        sink.add_full(stream, SyncMethod.BURST, Format.BUFFERS, 10, Format.UNDEFINED, -1)
        assert await sink.serve(stream) == ClientStatus.DUPLICATE
        assert events.log == [("added", stream)] + [
            ("removed", stream, ClientStatus.DUPLICATE)
        ] * 3
        assert sink.num_handles == 1
        stats = sink.get_stats(stream)
        assert stats is not None
        assert stats.status == ClientStatus.OK
        await sink.send(b"two")
        await settle()
        assert stream.data == b"onetwo"  # once each: no second registration, no burst
        del events.log[:]
    # the first registration ends once, as usual
    assert events.log == [
        ("removed", stream, ClientStatus.REMOVED),
        ("socket_removed", stream),
    ]


async def test_remove_and_get_stats_of_an_unknown_stream_do_nothing() -> None:
    events = Events()
    known = RecordingStream()
    unknown = RecordingStream()
    async with Sink(**events.callbacks()) as sink:
        sink.add(known)
        sink.remove(unknown)
        sink.remove_flush(unknown)
        assert sink.get_stats(unknown) is None
        assert sink.num_handles == 1
        assert events.log == [("added", known)]


# -- set_streamheader -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [["text"], [b"ok", "bad"], [b"ok", 42], [None], "abc", [Buffer(b"h"), object()]],
    ids=["str-item", "str-second", "int-second", "None-item", "str", "object-second"],
)
async def test_set_streamheader_refuses_wrong_types_and_keeps_the_old_headers(
    bad: object,
) -> None:
    async with Sink() as sink:
        sink.set_streamheader([b"H1", Buffer(b"H2", header=True)])
        with pytest.raises(TypeError, match=named("buffers")):
            sink.set_streamheader(bad)  # type: ignore[arg-type]
        stream = RecordingStream()
        sink.add(stream)
        await sink.send(b"data")
        await settle()
        assert stream.data == b"H1H2data"


@pytest.mark.parametrize("bad", [42, 3.5, object()], ids=["int", "float", "object"])
async def test_set_streamheader_refuses_a_non_iterable(bad: object) -> None:
    async with Sink() as sink:
        with pytest.raises(TypeError, match=named("buffers")):
            sink.set_streamheader(bad)  # type: ignore[arg-type]


def test_a_subclass_keeps_its_own_constructor() -> None:
    class Named(Sink):
        def __init__(self, label: str, **properties: Any) -> None:
            super().__init__(**properties)
            self.label = label

    sink = Named("x", buffers_max=7)
    assert (sink.label, sink.buffers_max, sink.linger) == ("x", 7, 5.0)
    with pytest.raises(PropertyValueError, match=named("buffers_max")):
        Named("y", buffers_max=-3)
