"""The position index: a push looks only at clients that may be over a limit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from trio_msink import Buffer, SyncMethod
from trio_msink._history import History
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
