"""History, the core, on the worked examples of docs/semantics.rst ("Limits",
"Soft-limit recovery", "Streamheaders", "Retention")."""

from __future__ import annotations

import pytest

from trio_msink._buffer import Buffer
from trio_msink._enums import RecoverPolicy, SyncMethod
from trio_msink._history import History
from trio_msink._limits import Limits
from trio_msink._placement import Burst


@pytest.mark.parametrize(
    ("policy", "reads", "dropped"),
    [
        (RecoverPolicy.NONE, "k0 d1 d2 d3 k4 d5 d6 d7", 0),
        (RecoverPolicy.RESYNC_LATEST, "k0 d7", 6),
        (RecoverPolicy.RESYNC_SOFT_LIMIT, "k0 d5 d6 d7", 4),
        (RecoverPolicy.RESYNC_KEYFRAME, "k0", 7),
    ],
)
def test_soft_limit_recovery_policies_on_the_worked_example(
    policy: RecoverPolicy, reads: str, dropped: int
) -> None:
    history = History()
    history.limits = Limits(buffers_soft_max=3)
    history.recover_policy = policy
    cursor = history.add("S", SyncMethod.LATEST, Burst())
    names = ["k0", "d1", "d2", "d3", "k4", "d5", "d6", "d7"]
    buffers = {n: Buffer(n.encode() * 5, delta_unit=n[0] == "d") for n in names}
    history.push(buffers["k0"])
    assert history.take(cursor, 1) == [buffers["k0"]]  # being written: not waiting
    for name in names[1:]:
        assert not history.push(buffers[name]).over_hard
    got = [b.tobytes()[:2].decode() for b in history.take(cursor, 100)]
    assert ["k0", *got] == reads.split()
    assert cursor.buffers_dropped == dropped


def test_recover_keyframe_jumps_to_the_newest_keyframe() -> None:
    history = History()
    history.limits = Limits(buffers_soft_max=4)
    history.recover_policy = RecoverPolicy.RESYNC_KEYFRAME
    cursor = history.add("S", SyncMethod.LATEST, Burst())
    names = ["k0", "k1", "d2", "k3", "d4", "d5"]
    buffers = [Buffer(n.encode(), delta_unit=n[0] == "d") for n in names]
    history.push(buffers[0])
    history.take(cursor, 1)
    for b in buffers[1:5]:
        assert history.push(b).resynced == []
    assert history.push(buffers[5]).resynced == [cursor]  # lag 5: k3 brings it to 3
    assert history.take(cursor, 100) == buffers[3:]
    assert cursor.buffers_dropped == 2


def test_streamheaders_go_first_and_are_resent_when_they_change() -> None:
    # The worked example of docs/semantics.rst, "Streamheaders", on the core.
    history = History()
    hd1, head2 = Buffer(b"hd1", header=True), Buffer(b"head2", header=True)
    history.set_streamheader([hd1, head2])
    a = history.add("A", SyncMethod.LATEST, Burst())
    assert not history.push(Buffer(b"hd1", header=True)).queued
    assert not history.push(Buffer(b"head2", header=True)).queued
    b0, b1, b2, b3 = (Buffer(b"b%d" % i) for i in range(4))
    history.push(b0)
    assert history.take(a, 1) == [hd1, head2, b0]
    b = history.add("B", SyncMethod.LATEST, Burst())
    history.push(b1)
    assert history.take(a, 1) == [b1]
    assert history.take(b, 1) == [hd1, head2, b1]
    new1, hd = Buffer(b"new1", header=True), Buffer(b"hd", header=True)
    history.set_streamheader([new1, hd])
    history.push(b2)
    assert history.take(a, 1) == [new1, hd, b2]
    assert history.take(b, 1) == [new1, hd, b2]
    # resend_streamheader false: existing clients get data only, new ones headers
    history.resend_streamheader = False
    history.set_streamheader([hd1])
    c = history.add("C", SyncMethod.LATEST, Burst())
    history.push(b3)
    assert history.take(a, 1) == [b3]
    assert history.take(c, 1) == [hd1, b3]
    # a header buffer that is not in the streamheader is queued as data
    other = Buffer(b"head2", header=True)
    assert history.push(other).queued
    assert history.take(a, 1) == [other]


def test_hard_limit_on_the_worked_example_removes_the_cursor() -> None:
    history = History()
    history.limits = Limits(buffers_max=5)
    cursor = history.add("S", SyncMethod.LATEST, Burst())
    history.push(Buffer(b"k0" * 5))
    history.take(cursor, 1)
    for i in range(1, 6):
        assert history.push(Buffer(b"d%d" % i * 5, delta_unit=True)).over_hard == []
    result = history.push(Buffer(b"d6" * 5, delta_unit=True))
    assert result.over_hard == [cursor]
    assert cursor not in history.cursors and not cursor.active


def test_a_client_with_a_pending_remove_flush_does_not_pin_history() -> None:
    # docs/semantics.rst, "Retention": history keeps what any client still
    # needs; "Removal": remove_flush finishes what is already queued for the
    # client, "nothing that arrives later". A client
    # whose remove-flush is pending while its stream is still blocked writing
    # its last buffer needs nothing from the history. (History.push once kept
    # everything from its flush_end: the history grew without bound, past
    # buffers_max, until that write completed, as its lag of 0 trips no limit.)
    history = History()
    history.limits = Limits(buffers_max=5)
    cursor = history.add("S", SyncMethod.LATEST, Burst())
    history.push(Buffer(b"k0"))
    history.take(cursor, 1)  # the stream is blocked inside send_all(k0)
    history.start_flush(cursor)
    assert history.flushed(cursor)
    for i in range(100):
        assert history.push(Buffer(b"x%d" % i)).over_hard == []
    assert len(history.log) == 1
