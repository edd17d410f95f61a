"""The wire format from the main process to ``--workers`` processes (cli/_wire.py):
every message kind survives encoding and any cutting of the byte stream."""

from __future__ import annotations

import enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_msink import Buffer, SyncMethod
from trio_msink.cli._wire import (
    BUFFER,
    CONTENT_TYPE,
    HEADERS,
    PROPERTIES,
    STATUS,
    WireDecoder,
    encode_buffer,
    encode_headers,
    encode_json,
)
from trio_msink.cli._workers import _json_value


def _stream() -> tuple[bytes, list[tuple[int, object]]]:
    headers = [Buffer(b"PAT", header=True), Buffer(b"PMT" * 50, header=True)]
    buffers = [Buffer(b"key", pts=0.0, delta_unit=False),
               Buffer(b"delta" * 1000, pts=0.04, delta_unit=True),
               Buffer(b"nopts", pts=None), Buffer(b"", pts=1.5),
               Buffer(b"hdr-in-stream", header=True)]
    status = {"spec": "tcp://o:1", "state": "live", "bytes_in": 12, "last_error": None}
    props = {"sync_method": _json_value(SyncMethod.LATEST_KEYFRAME), "time_min": 2.0}
    parts: list[bytes] = [encode_headers(headers)]
    for buffer in buffers:
        parts.append(b"".join(bytes(p) for p in encode_buffer(buffer)))
    parts += [encode_json(STATUS, status), encode_json(PROPERTIES, props),
              encode_json(CONTENT_TYPE, "video/h264")]
    expected: list[tuple[int, object]] = [(HEADERS, [(h.tobytes(), h.header) for h in headers])]
    expected += [(BUFFER, (b.tobytes(), b.pts, b.delta_unit, b.header)) for b in buffers]
    expected += [(STATUS, status), (PROPERTIES, props), (CONTENT_TYPE, "video/h264")]
    return b"".join(parts), expected


def _summary(decoder: WireDecoder, data: bytes, cuts: list[int]) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        for m in decoder.feed(data[start:cut]):
            if m.kind == BUFFER:
                assert m.buffer is not None
                b = m.buffer
                out.append((m.kind, (b.tobytes(), b.pts, b.delta_unit, b.header)))
            elif m.kind == HEADERS:
                assert m.headers is not None
                out.append((m.kind, [(h.tobytes(), h.header) for h in m.headers]))
            else:
                out.append((m.kind, m.value))
        start = max(start, cut)
    return out


def test_every_message_kind_round_trips() -> None:
    data, expected = _stream()
    decoder = WireDecoder()
    assert _summary(decoder, data, []) == expected
    assert decoder.buffered == 0


@given(st.lists(st.integers(min_value=0, max_value=8000), max_size=12))
def test_messages_survive_any_cutting(cuts: list[int]) -> None:
    data, expected = _stream()
    assert _summary(WireDecoder(), data, cuts) == expected


def test_a_partial_message_is_held() -> None:
    data = b"".join(bytes(p) for p in encode_buffer(Buffer(b"abcdef", pts=2.0)))
    decoder = WireDecoder()
    assert decoder.feed(data[:-2]) == []
    assert decoder.buffered == len(data) - 2
    [message] = decoder.feed(data[-2:])
    assert message.buffer is not None and message.buffer.tobytes() == b"abcdef"


def test_enum_properties_travel_as_ints_and_bools_stay_bools() -> None:
    assert _json_value(SyncMethod.LATEST_KEYFRAME) == int(SyncMethod.LATEST_KEYFRAME)
    assert type(_json_value(SyncMethod.LATEST_KEYFRAME)) is int
    assert _json_value(True) is True
    assert not isinstance(_json_value(2.0), enum.Enum)


def test_an_unknown_kind_is_an_error() -> None:
    bogus = encode_json(STATUS, {})
    bogus = bytes([99]) + bogus[1:]
    with pytest.raises(ValueError, match="unknown worker message kind 99"):
        WireDecoder().feed(bogus)
