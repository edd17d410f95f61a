"""The wire format from the ``--workers`` main process to a worker: the
framed stream, its streamheader, the source's status and the Sink
properties, as length-prefixed messages. Pure: bytes in, messages out, no
I/O (the workers module does that)."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from .. import Buffer

__all__ = [
    "BUFFER",
    "CONTENT_TYPE",
    "HEADERS",
    "PROPERTIES",
    "STATUS",
    "WireDecoder",
    "WireMessage",
    "encode_buffer",
    "encode_headers",
    "encode_json",
]

# The wire format from the main process to a worker: messages of a 14-byte
# head (kind, flags (1: delta unit, 2: header), pts (NaN: none), payload
# length) and the payload.
_HEAD = struct.Struct("!BBdI")
#: Message kinds: a buffer; the streamheader (each header as a 4-byte length
#: and its bytes); the source's status for /stats (JSON); Sink properties to
#: set, once the input format is known (JSON, enums as their int values); the
#: label of HTTP ``/stream``, once the input format is known (a JSON string).
BUFFER, HEADERS, STATUS, PROPERTIES, CONTENT_TYPE = 1, 2, 3, 4, 5
_LENGTH = struct.Struct("!I")


def encode_buffer(buffer: Buffer) -> list[bytes | memoryview]:
    """One BUFFER message (the payload by reference: no copy)."""
    flags = (1 if buffer.delta_unit else 0) | (2 if buffer.header else 0)
    pts = math.nan if buffer.pts is None else buffer.pts
    return [_HEAD.pack(BUFFER, flags, pts, buffer.size), *buffer.segments]


def encode_headers(buffers: list[Buffer]) -> bytes:
    """One HEADERS message: the whole streamheader."""
    payload = b"".join(_LENGTH.pack(b.size) + b.tobytes() for b in buffers)
    return _HEAD.pack(HEADERS, 0, math.nan, len(payload)) + payload


def encode_json(kind: int, value: Any) -> bytes:
    """A STATUS, PROPERTIES or CONTENT_TYPE message."""
    payload = json.dumps(value).encode()
    return _HEAD.pack(kind, 0, math.nan, len(payload)) + payload


@dataclass(frozen=True, slots=True)
class WireMessage:
    """One decoded message: ``buffer`` for BUFFER, ``headers`` for
    HEADERS, ``value`` (decoded JSON) for STATUS, PROPERTIES and
    CONTENT_TYPE."""

    kind: int
    buffer: Buffer | None = None
    headers: list[Buffer] | None = None
    value: Any = None


class WireDecoder:
    """Bytes from the main process in any cuts → whole messages, in order.
    Raises ValueError for an unknown kind (the two processes disagree)."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[WireMessage]:
        pending = self._pending
        pending += data
        messages: list[WireMessage] = []
        offset = 0
        while len(pending) - offset >= _HEAD.size:
            kind, flags, pts, length = _HEAD.unpack_from(pending, offset)
            start = offset + _HEAD.size
            if len(pending) - start < length:
                break
            payload = bytes(pending[start : start + length])
            offset = start + length
            if kind == BUFFER:
                messages.append(WireMessage(kind, buffer=Buffer(
                    payload, pts=None if math.isnan(pts) else pts,
                    delta_unit=bool(flags & 1), header=bool(flags & 2))))
            elif kind == HEADERS:
                messages.append(WireMessage(kind, headers=_decode_headers(payload)))
            elif kind in (STATUS, PROPERTIES, CONTENT_TYPE):
                messages.append(WireMessage(kind, value=json.loads(payload)))
            else:
                raise ValueError(f"unknown worker message kind {kind}")
        del pending[:offset]
        return messages

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._pending)


def _decode_headers(payload: bytes) -> list[Buffer]:
    headers, offset = [], 0
    while offset < len(payload):
        (size,) = _LENGTH.unpack_from(payload, offset)
        offset += _LENGTH.size
        headers.append(Buffer(payload[offset : offset + size], header=True))
        offset += size
    return headers
