"""What the source, the clients and the harness agree on.

Every buffer of the benchmark stream starts with a 24-byte header::

    <Q seq> <Q t_ns> <8s MAGIC>

``seq`` counts buffers from 0, ``t_ns`` is ``time.monotonic_ns()`` (Linux
CLOCK_MONOTONIC, the same clock in every process) when the source wrote the
buffer, and ``MAGIC`` lets a client check that it really sits on a buffer
boundary. The rest of the buffer is padding.

Latencies are kept as histograms (bin -> count) so that client processes can
report millions of samples in a few hundred numbers; a bin is ~3 % wide.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

HEADER = struct.Struct("<QQ8s")
HEADER_SIZE = HEADER.size  # 24
MAGIC = b"MSINKBEN"
MIN_BUFFER_SIZE = HEADER_SIZE

_SUB_BITS = 5  # 32 sub-bins per power of two: bins are <= 1/32 wide
_SUB = 1 << _SUB_BITS


def latency_bin(us: int) -> int:
    """The histogram bin of a latency in microseconds (monotonic in ``us``)."""
    if us < _SUB:
        return max(us, 0)
    shift = us.bit_length() - _SUB_BITS - 1
    return _SUB + shift * _SUB + ((us >> shift) - _SUB)


def bin_value(b: int) -> float:
    """The representative latency (µs) of bin ``b``: the middle of its range."""
    if b < _SUB:
        return float(b)
    shift, mant = divmod(b - _SUB, _SUB)
    return float((mant + _SUB) << shift) + ((1 << shift) - 1) / 2.0


def merge_hist(into: dict[int, int], other: Mapping[int, int] | Mapping[str, int]) -> None:
    """Add the counts of ``other`` (bins as ints, or as strings from JSON) to ``into``."""
    for k, v in other.items():
        key = int(k)
        into[key] = into.get(key, 0) + int(v)


def hist_percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, in microseconds."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bin_value(b)
    return bin_value(max(hist))


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank ``q`` quantile (0..1) of ``values``, ``None`` if empty."""
    data = sorted(values)
    if not data:
        return None
    idx = min(len(data) - 1, max(0, round(q * len(data) + 0.5) - 1))
    return data[idx]
