"""Bad input: every refusal API.md names raises the documented error, with a
message naming the argument, and changes nothing."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from conftest import RecordingStream, settle

from trio_msink import Buffer, ClientStatus, Format, RecoverPolicy, Sink, SyncMethod

# -- the properties, by kind ---------------------------------------------------------

COUNTS = ["buffers_max", "buffers_soft_max", "bytes_min", "buffers_min"]
AMOUNTS = ["units_max", "units_soft_max", "burst_value"]  # int or float
SECONDS = ["time_min", "timeout", "linger"]  # int or float
FLOATS = AMOUNTS + SECONDS
NUMBERS = COUNTS + FLOATS + ["qos_dscp"]
BOOLS = ["sync", "resend_streamheader", "handle_read", "send_messages", "send_dispatched"]
ENUMS: dict[str, type[Any]] = {
    "unit_format": Format,
    "recover_policy": RecoverPolicy,
    "sync_method": SyncMethod,
    "burst_format": Format,
}
CALLBACKS = [
    "on_client_added",
    "on_client_removed",
    "on_client_socket_removed",
    "on_message",
    "on_dispatched",
]
PROPERTIES = NUMBERS + BOOLS + list(ENUMS) + CALLBACKS

WRONG_TYPES: list[tuple[str, object]] = [
    *[(name, bad) for name in NUMBERS for bad in ("3", None, b"3", [3])],
    *[(name, bad) for name in BOOLS for bad in ("yes", None, [True])],
    *[(name, bad) for name in ENUMS for bad in ("LATEST", None, 1.5)],
    *[(name, bad) for name in CALLBACKS for bad in (42, "print")],
]

WRONG_VALUES: list[tuple[str, object]] = [
    *[(name, bad) for name in NUMBERS for bad in (-2, -100)],
    *[(name, bad) for name in FLOATS for bad in (-0.5, -1.5, math.nan, math.inf, -math.inf)],
    ("qos_dscp", 64),
    ("qos_dscp", 255),
    *[(name, bad) for name in ENUMS for bad in (99, -5)],
]


def _ids(case: tuple[str, object]) -> str:
    name, value = case
    return f"{name}={value!r}"


def snapshot(sink: Sink) -> dict[str, object]:
    return {name: getattr(sink, name) for name in PROPERTIES}


def named(name: str) -> str:
    """A ``match`` pattern: the message names the argument as a word."""
    return rf"\b{re.escape(name)}\b"


# -- properties: constructor and assignment -------------------------------------------


@pytest.mark.parametrize("case", WRONG_TYPES, ids=_ids)
def test_constructor_refuses_a_wrong_type(case: tuple[str, object]) -> None:
    name, value = case
    with pytest.raises(TypeError, match=named(name)):
        Sink(**{name: value})


@pytest.mark.parametrize("case", WRONG_TYPES, ids=_ids)
def test_assignment_refuses_a_wrong_type_and_changes_nothing(case: tuple[str, object]) -> None:
    name, value = case
    sink = Sink()
    before = snapshot(sink)
    with pytest.raises(TypeError, match=named(name)):
        setattr(sink, name, value)
    assert snapshot(sink) == before


@pytest.mark.parametrize("case", WRONG_VALUES, ids=_ids)
def test_constructor_refuses_a_wrong_value(case: tuple[str, object]) -> None:
    name, value = case
    with pytest.raises(ValueError, match=named(name)):
        Sink(**{name: value})


@pytest.mark.parametrize("case", WRONG_VALUES, ids=_ids)
def test_assignment_refuses_a_wrong_value_and_changes_nothing(case: tuple[str, object]) -> None:
    name, value = case
    sink = Sink(buffers_max=10, units_max=10)  # non-defaults too, to see nothing changes
    before = snapshot(sink)
    with pytest.raises(ValueError, match=named(name)):
        setattr(sink, name, value)
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
    with pytest.raises(ValueError, match=named(soft)):
        Sink(**{soft: 5, hard: 3})

    sink = Sink(**{hard: 3})
    before = snapshot(sink)
    with pytest.raises(ValueError, match=named(soft)):
        setattr(sink, soft, 4)
    assert snapshot(sink) == before

    sink = Sink(**{soft: 3})
    before = snapshot(sink)
    with pytest.raises(ValueError, match=named(hard)):
        setattr(sink, hard, 2)
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


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *[(name, value) for name in NUMBERS for value in (-1, 0, 5)],
        *[(name, value) for name in FLOATS for value in (2.5, 0.0, -1.0)],
        ("qos_dscp", 63),
        *[(name, value) for name in BOOLS for value in (True, False)],
        *[(name, member) for name, enum in ENUMS.items() for member in enum],
        *[(name, None) for name in CALLBACKS],
        *[(name, print) for name in CALLBACKS],
    ],
)
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


def test_buffer_accepts_what_api_md_allows() -> None:
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
        with pytest.raises(error, match=named(name)):
            sink.add_full(stream, *args)  # type: ignore[arg-type]
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
