"""The in-flight account (pure core): which buffers a partial writev took and
completed, and the unwritten tail the next writev must offer first."""

from __future__ import annotations

from trio_msink import Buffer
from trio_msink._inflight import InFlight


def tail(inflight: InFlight) -> bytes:
    return b"".join(bytes(s) for s in inflight.segments)


def test_a_complete_write_takes_and_completes_everything_offered() -> None:
    inflight = InFlight()
    header, a, b = Buffer(b"HH"), Buffer(b"aaa"), Buffer([b"b", b"bb"])
    booking = inflight.book((header,), [a, b], 8)
    assert booking.taken == 2
    assert booking.completed == [header, a, b]
    assert not inflight and tail(inflight) == b""


def test_a_partial_write_takes_the_buffer_it_started_and_keeps_its_tail() -> None:
    inflight = InFlight()
    a, b, c = Buffer(b"aaa"), Buffer([b"bb", b"bb"]), Buffer(b"ccc")
    booking = inflight.book((), [a, b, c], 5)  # all of a, 2 bytes of b
    assert booking.taken == 2  # c got no byte: it stays waiting
    assert booking.completed == [a]
    assert inflight and tail(inflight) == b"bb"
    # the next write offers the tail first; finishing it completes b
    booking = inflight.book((), [c], 2)
    assert booking.taken == 0 and booking.completed == [b]
    assert not inflight


def test_headers_go_with_the_first_data_buffer() -> None:
    inflight = InFlight()
    header, a = Buffer(b"HHHH"), Buffer(b"aa")
    booking = inflight.book((header,), [a], 2)  # half of the header
    assert booking.taken == 1 and booking.completed == []
    assert tail(inflight) == b"HHaa"
    booking = inflight.book((), [], 3)
    assert booking.completed == [header] and tail(inflight) == b"a"
    booking = inflight.book((), [], 1)
    assert booking.completed == [a] and not inflight


def test_nothing_written_takes_nothing() -> None:
    inflight = InFlight()
    booking = inflight.book((Buffer(b"H"),), [Buffer(b"a")], 0)
    assert booking.taken == 0 and booking.completed == [] and not inflight


def test_zero_length_buffers_are_taken_once_the_bytes_before_them_are_written() -> None:
    inflight = InFlight()
    a, empty, b = Buffer(b"aa"), Buffer(b""), Buffer(b"bb")
    booking = inflight.book((), [a, empty, b], 2)
    assert booking.taken == 2 and booking.completed == [a, empty]
    assert not inflight
