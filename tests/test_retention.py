"""Retention: how much history the sink keeps (docs/semantics.rst, "Retention")."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from conftest import (
    b,
    pts_buffer,
)

from trio_msink import Sink

pytestmark = pytest.mark.usefixtures("no_spin")


async def test_bytes_min_keeps_the_newest_buffers_that_reach_it() -> None:
    with trio.fail_after(5):
        async with Sink(bytes_min=45) as sink:
            for n in range(8):
                await sink.send(b(n))
            assert sink.buffers_queued == 5  # b3..b7: 50 bytes >= 45, 40 would not do


async def test_without_retention_only_the_newest_buffer_is_kept() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            for n in range(8):
                await sink.send(b(n))
                assert sink.buffers_queued == 1


async def test_time_min_keeps_seconds_of_pts_span() -> None:
    """time_min is seconds of PTS span (GStreamer: 45 ns with PTS in ns)."""
    with trio.fail_after(5):
        async with Sink(time_min=45, sync=False) as sink:
            for pts in range(0, 100, 10):
                await sink.send(pts_buffer(pts))
            assert sink.buffers_queued == 6  # PTS 40..90: span 50 >= 45, 50..90 spans 40


async def test_buffers_min_keeps_exactly_n() -> None:
    """Quirk Q3 in docs/gstreamer.rst fixed: buffers_min 4 keeps exactly 4
    (GStreamer: 1, 2, 3, 1, 2, 3, ...)."""
    with trio.fail_after(5):
        async with Sink(buffers_min=4) as sink:
            queued = []
            for n in range(9):
                await sink.send(b(n))
                queued.append(sink.buffers_queued)
            assert queued == [1, 2, 3, 4, 4, 4, 4, 4, 4]
