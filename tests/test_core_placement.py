"""place(), the core's placement of a new client for each sync method and
burst (docs/semantics.rst, "Placement: where a new client starts"; quirk
numbers are those of docs/gstreamer.rst)."""

from __future__ import annotations

import pytest
from conftest import make_log

from trio_msink._enums import Format, SyncMethod
from trio_msink._log import BufferLog
from trio_msink._placement import Burst, place


def keyframe_log() -> BufferLog:
    """k0 d1 d2 k3 d4 d5 d6, 10 bytes each, PTS 0..6."""
    return make_log([(10, i in (0, 3), float(i)) for i in range(7)])


B = Format.BUFFERS


@pytest.mark.parametrize(
    ("method", "burst", "start"),
    [
        (SyncMethod.LATEST, Burst(), 7),
        (SyncMethod.NEXT_KEYFRAME, Burst(), None),
        (SyncMethod.LATEST_KEYFRAME, Burst(), 3),
        (SyncMethod.BURST, Burst(), 6),  # no minimum: the newest buffer
        (SyncMethod.BURST, Burst(B, 2), 5),
        (SyncMethod.BURST, Burst(Format.BYTES, 25), 4),
        (SyncMethod.BURST, Burst(Format.TIME, 2.5), 3),
        (SyncMethod.BURST, Burst(B, 100), 0),  # too little history: everything
        (SyncMethod.BURST, Burst(B, 5, Format.BYTES, 30), 4),  # the max wins
        (SyncMethod.BURST, Burst(B, 100, B, 3), 4),
        (SyncMethod.BURST, Burst(max_format=Format.BYTES, max_value=5), 7),  # newest alone over
        (SyncMethod.BURST_KEYFRAME, Burst(B, 2), 3),
        (SyncMethod.BURST_KEYFRAME, Burst(B, 7), 0),  # may start at the oldest buffer (quirk Q6)
        (SyncMethod.BURST_KEYFRAME, Burst(B, 6, B, 6), 3),  # k0 over the max: next keyframe
        (SyncMethod.BURST_KEYFRAME, Burst(B, 2, B, 3), None),  # no keyframe fits: wait
        (SyncMethod.BURST_WITH_KEYFRAME, Burst(B, 2), 3),
        (SyncMethod.BURST_WITH_KEYFRAME, Burst(B, 2, B, 3), 5),  # plain burst
        (SyncMethod.BURST_WITH_KEYFRAME, Burst(B, 6, B, 6), 1),
    ],
)
def test_place_for_each_sync_method_and_burst(
    method: SyncMethod, burst: Burst, start: int | None
) -> None:
    assert place(keyframe_log(), method, burst) == start


def test_place_empty_and_keyframeless_history() -> None:
    empty = BufferLog()
    assert place(empty, SyncMethod.LATEST, Burst()) == 0
    assert place(empty, SyncMethod.LATEST_KEYFRAME, Burst()) is None
    assert place(empty, SyncMethod.BURST, Burst(B, 3)) == 0
    assert place(empty, SyncMethod.BURST_KEYFRAME, Burst(B, 3)) is None
    assert place(empty, SyncMethod.BURST_WITH_KEYFRAME, Burst(B, 3)) == 0
    deltas = make_log([(10, False, None)] * 4)
    assert place(deltas, SyncMethod.LATEST_KEYFRAME, Burst()) is None
    assert place(deltas, SyncMethod.BURST_KEYFRAME, Burst(B, 2)) is None
    assert place(deltas, SyncMethod.BURST_WITH_KEYFRAME, Burst(B, 2)) == 2


def test_burst_in_buffers_reaches_a_fractional_minimum() -> None:
    # docs/semantics.rst, "Placement: where a new client starts": BURST starts
    # at "the newest start point whose data, up to the newest buffer, reaches
    # the minimum", and a count of buffers may be fractional. burst_value / add_full's
    # min_value accept floats (check_amount), so 2.5 buffers needs 3 and 0.5
    # needs 1 (BufferLog.newest_start_reaching once truncated with int()).
    log = keyframe_log()
    assert place(log, SyncMethod.BURST, Burst(B, 2.5)) == 4
    assert place(log, SyncMethod.BURST, Burst(B, 0.5)) == 6


def test_place_after_trim_uses_only_retained_history() -> None:
    log = keyframe_log()
    log.trim(4)  # d4 d5 d6 left
    assert place(log, SyncMethod.LATEST_KEYFRAME, Burst()) is None
    assert place(log, SyncMethod.BURST, Burst(B, 100)) == 4
    assert place(log, SyncMethod.BURST_WITH_KEYFRAME, Burst(B, 100)) == 4
