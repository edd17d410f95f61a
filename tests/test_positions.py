"""The position index and cursor states: a push looks only at clients that may be over a limit."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from trio_msink import Buffer, SyncMethod
from trio_msink._history import CursorState, History
from trio_msink._limits import Limits
from trio_msink._placement import Burst
from trio_msink._positions import NOWHERE, UNPLACED, Positions


@dataclass(eq=False)
class Item:
    slot: int = NOWHERE


def test_positions_move_lowest_and_below() -> None:
    positions: Positions[Item] = Positions()
    a, b, c = Item(), Item(), Item()
    positions.move(a, 5)
    positions.move(b, 3)
    positions.move(c, UNPLACED)
    assert positions.lowest(10) == 3
    assert positions.below(5) == [b]
    assert positions.below(6) == [b, a]
    assert list(positions.unplaced) == [c]
    positions.move(b, 9)
    assert positions.lowest(10) == 5
    positions.move(a, NOWHERE)
    positions.move(b, NOWHERE)
    assert positions.lowest(10) == 10
    assert positions.below(10) == []
    positions.move(c, 1)  # placed: leaves the unplaced set
    assert not positions.unplaced and positions.lowest(10) == 1


def test_a_bucket_that_empties_to_a_few_cursors_gives_back_its_table() -> None:
    # 10,000 viewers at one position, all but three move on (three stalled
    # there): the bucket must not keep a table sized for 10,000.
    positions: Positions[Item] = Positions()
    items = [Item() for _ in range(10_000)]
    for item in items:
        positions.move(item, 4)
    full = sys.getsizeof(positions._at[4])
    for item in items[3:]:
        positions.move(item, 5)
    assert positions.below(5) == items[:3]  # membership and order kept
    assert positions.below(6) == items[:3] + items[3:]
    assert sys.getsizeof(positions._at[4]) < full / 100


def test_a_push_looks_only_at_clients_near_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    history = History()
    history.limits = Limits(buffers_max=10)
    keeping_up = [history.add(i, SyncMethod.LATEST, Burst()) for i in range(100)]
    stalled = history.add("stalled", SyncMethod.LATEST, Burst())
    looked_at: list[object] = []
    apply = history._apply_limits

    def spy(cursor, soft, hard, result):  # type: ignore[no-untyped-def]
        looked_at.append(cursor.handle)
        apply(cursor, soft, hard, result)

    monkeypatch.setattr(history, "_apply_limits", spy)
    for n in range(30):
        history.push(Buffer(b"%d" % n))
        for cursor in keeping_up:
            history.take(cursor, 1)
    # only the stalled client, and only once it was over the limit
    assert set(looked_at) == {"stalled"}
    assert not stalled.active
    assert all(c.active for c in keeping_up)
    assert history.buffers_queued == 1


def test_a_cursor_state_follows_placement_flush_and_removal() -> None:
    history = History()
    waiting = history.add("w", SyncMethod.NEXT_KEYFRAME, Burst())
    placed = history.add("p", SyncMethod.LATEST, Burst())
    assert waiting.state is CursorState.WAITING_FOR_KEYFRAME and waiting.slot == UNPLACED
    assert placed.state is CursorState.PLACED
    history.push(Buffer(b"d", delta_unit=True))
    assert waiting.state is CursorState.WAITING_FOR_KEYFRAME
    history.push(Buffer(b"k"))
    assert waiting.state is CursorState.PLACED and waiting.next == 1
    assert history.writable_directly(placed) and history.has_waiting(placed)
    history.start_flush(placed)
    assert placed.state is CursorState.FLUSHING and placed.flush_end == 2
    assert not history.writable_directly(placed)
    history.push(Buffer(b"later"))
    assert history.waiting(placed) == (0, 2)  # nothing that arrives later
    history.take(placed, 2)
    assert history.flushed(placed) and placed.slot == NOWHERE
    history.remove(placed)
    assert placed.state is CursorState.REMOVED and not placed.active


def test_a_flush_of_a_client_waiting_for_a_keyframe_has_nothing_to_hand_over() -> None:
    history = History()
    cursor = history.add("w", SyncMethod.NEXT_KEYFRAME, Burst())
    history.push(Buffer(b"d", delta_unit=True))
    history.start_flush(cursor)
    assert cursor.state is CursorState.FLUSHING and history.flushed(cursor)
    assert cursor.slot == NOWHERE


def test_headers_due_decide_whether_a_client_can_be_written_directly() -> None:
    history = History()
    history.set_streamheader([Buffer(b"H")])
    cursor = history.add("c", SyncMethod.LATEST, Burst())
    history.push(Buffer(b"a"))
    assert history.headers_due(cursor) == history.headers
    assert not history.writable_directly(cursor)
    assert [b.tobytes() for b in history.take(cursor, 1)] == [b"H", b"a"]
    history.push(Buffer(b"b"))
    assert history.headers_due(cursor) == () and history.writable_directly(cursor)
    history.set_streamheader([Buffer(b"H")])  # same bytes: nothing to resend
    assert history.headers_due(cursor) == () and history.writable_directly(cursor)
    history.set_streamheader([Buffer(b"H2")])
    assert not history.writable_directly(cursor)
