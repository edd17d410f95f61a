"""BufferLog, the core's history of buffers: range queries (bytes, PTS span,
keyframes, the starts that reach or stay within an amount) and compaction,
each against a brute-force scan."""

from __future__ import annotations

import pytest
from conftest import amount, make_log

from trio_msink._buffer import Buffer
from trio_msink._enums import Format
from trio_msink._log import BufferLog


def test_bytes_between_and_span_between() -> None:
    log = make_log([(3, True, None), (0, False, 1.0), (5, False, 2.5), (2, True, None)])
    assert [log.bytes_between(0, 4), log.bytes_between(1, 3), log.bytes_between(1, 2)] == [10, 5, 0]
    assert log.bytes_between(2, 2) == 0 and log.bytes_between(3, 1) == 0
    assert log.span_between(0, 4) == 1.5
    assert log.span_between(2, 4) == 0.0  # one PTS only
    assert log.span_between(0, 1) == 0.0
    assert log.amount(Format.BUFFERS, 1, 4) == 3
    assert log.amount(Format.BYTES, 1, 4) == 7
    assert log.amount(Format.TIME, 0, 3) == 1.5


def test_newest_start_reaching() -> None:
    log = make_log([(10, True, float(i)) for i in range(5)])  # seq 0..4, PTS 0..4
    end = log.next
    assert log.newest_start_reaching(Format.BYTES, 25, end) == 2  # 30 bytes
    assert log.newest_start_reaching(Format.BYTES, 30, end) == 2  # reaching is >=
    assert log.newest_start_reaching(Format.BYTES, 50, end) == 0
    assert log.newest_start_reaching(Format.BYTES, 51, end) == 0  # too little: everything
    assert log.newest_start_reaching(Format.BUFFERS, 2, end) == 3
    assert log.newest_start_reaching(Format.BUFFERS, 9, end) == 0
    assert log.newest_start_reaching(Format.TIME, 2.5, end) == 1  # 4 - 1 >= 2.5
    assert log.newest_start_reaching(Format.TIME, 3.0, end) == 1
    assert log.newest_start_reaching(Format.TIME, 9.0, end) == 0


def test_newest_start_reaching_skips_zero_size_and_unstamped() -> None:
    log = make_log([(4, True, 0.0), (0, False, None), (0, False, 1.0), (4, False, None)])
    end = log.next
    # bytes [s, 4) >= 4: s = 3 alone already has 4 bytes
    assert log.newest_start_reaching(Format.BYTES, 4, end) == 3
    assert log.newest_start_reaching(Format.BYTES, 5, end) == 0
    # span [s, 4) >= 1.0 needs PTS 0.0 (seq 0); seq 1 has no PTS
    assert log.newest_start_reaching(Format.TIME, 1.0, end) == 0


def test_oldest_start_within() -> None:
    log = make_log([(10, True, float(i)) for i in range(5)])
    end = log.next
    assert log.oldest_start_within(Format.BYTES, 25, end) == 3  # 20 bytes
    assert log.oldest_start_within(Format.BYTES, 30, end) == 2  # within is <=
    assert log.oldest_start_within(Format.BYTES, 5, end) == end  # newest alone is over
    assert log.oldest_start_within(Format.BYTES, 1000, end) == 0
    assert log.oldest_start_within(Format.BUFFERS, 2, end) == 3
    assert log.oldest_start_within(Format.TIME, 2.5, end) == 2  # 4 - 2 <= 2.5
    assert log.oldest_start_within(Format.TIME, 2.0, end) == 2
    assert log.oldest_start_within(Format.TIME, 0.0, end) == 4
    # over a shorter range (a flushing client's waiting buffers)
    assert log.oldest_start_within(Format.BYTES, 15, 3) == 2


def brute_log_checks(log: BufferLog, bufs: list[Buffer]) -> None:
    low, end = log.low, log.next
    assert len(log) == end - low
    for s in range(low, end):
        assert log[s] is bufs[s]
    for s in (low - 1, end):
        with pytest.raises(IndexError):
            log[s]
    keyframes = [s for s in range(low, end) if bufs[s].keyframe]
    stamped = [s for s in range(low, end) if bufs[s].pts is not None]
    assert log.oldest_pts_seq() == (stamped[0] if stamped else None)
    for s in range(low, end + 1, 3):
        for e in range(s, end + 1, 5):
            assert log.bytes_between(s, e) == amount(bufs, Format.BYTES, s, e)
            assert log.span_between(s, e) == amount(bufs, Format.TIME, s, e)
        before = [k for k in keyframes if k <= s]
        after = [k for k in keyframes if k >= s]
        assert log.keyframe_at_or_before(s) == (before[-1] if before else None)
        assert log.keyframe_at_or_after(s) == (after[0] if after else None)
    for fmt, value in ((Format.BYTES, 17), (Format.TIME, 4.0), (Format.BUFFERS, 7)):
        amounts = {s: amount(bufs, fmt, s, end) for s in range(low, end)}
        reaching = [s for s, a in amounts.items() if a >= value]
        within = [s for s, a in amounts.items() if a <= value]
        assert log.newest_start_reaching(fmt, value, end) == (max(reaching) if reaching else low)
        assert log.oldest_start_within(fmt, value, end) == (min(within) if within else end)


def test_trim_and_compaction_keep_every_index_right() -> None:
    bufs = [
        Buffer(b"y" * (i % 7), pts=float(i) if i % 3 else None, delta_unit=i % 5 != 0)
        for i in range(300)
    ]
    log = BufferLog()
    for b in bufs[:200]:
        log.append(b)
    brute_log_checks(log, bufs)
    # Trims in uneven steps cross the compaction threshold (64, half) many times.
    for keep_from in (1, 30, 63, 64, 65, 129, 130, 131, 160, 199):
        log.trim(keep_from)
        assert log.low == keep_from
        brute_log_checks(log, bufs)
    log.trim(150)  # backwards: no-op
    assert log.low == 199
    for b in bufs[200:]:
        log.append(b)
    brute_log_checks(log, bufs)
    log.trim(10**9)  # the newest always stays
    assert (log.low, log.next, len(log)) == (299, 300, 1)
    brute_log_checks(log, bufs)
    assert log.total_bytes == sum(len(b) for b in bufs)
