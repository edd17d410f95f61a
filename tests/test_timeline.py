"""Timeline: one pts that never goes backwards, rebased at discontinuities.

Pure tests: the time is passed in. ``due(out)`` is when a Sink pacing with
``sync=True`` releases a buffer stamped ``out`` (docs/semantics.rst, "Sync
pacing": its base is fixed by the first buffer).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_msink import Buffer
from trio_msink.cli._timeline import MAX_GAP, MAX_REORDER, Timeline

WRAP = 2**33 / 90_000  # seconds of the MPEG-TS 33-bit, 90 kHz counter


class Paced:
    """A Timeline fed as a paced Sink would be: each buffer stamped at the
    later of its arrival and the time the previous one was due."""

    def __init__(self, **opts: float) -> None:
        self.timeline = Timeline(**opts)
        self.now = 1000.0
        self.base: float | None = None
        self.out: list[float | None] = []

    def due(self, pts: float) -> float:
        assert self.base is not None
        return self.base + pts

    def send(self, pts: float | None, *, after: float = 0.0) -> float | None:
        """Stamp a buffer arriving ``after`` seconds after the previous one was
        released; return its output pts, and move the clock to its release."""
        self.now += after
        buffer = self.timeline.stamp(Buffer(b"x", pts=pts), self.now)
        out = buffer.pts
        if out is not None:
            if self.base is None:
                self.base = self.now - out
            self.now = max(self.now, self.due(out))
        self.out.append(out)
        return out


def test_buffers_without_pts_pass_unchanged() -> None:
    timeline = Timeline()
    buffer = Buffer(b"abc", delta_unit=True)
    assert timeline.stamp(buffer, 5.0) is buffer
    assert timeline.segments == 0 and timeline.last_pts is None
    timeline.stamp(Buffer(b"k", pts=3.0), 6.0)
    assert timeline.stamp(buffer, 7.0) is buffer


def test_a_steady_stream_keeps_its_timestamps_and_buffers() -> None:
    timeline = Timeline()
    buffers = [Buffer(b"u%d" % i, pts=10 + i / 25, delta_unit=i % 5 != 0) for i in range(50)]
    assert all(timeline.stamp(b, 100.0 + i / 25) is b for i, b in enumerate(buffers))
    assert timeline.segments == 1 and timeline.last_pts == buffers[-1].pts


def test_restamped_buffer_keeps_payload_and_flags() -> None:
    timeline = Timeline()
    timeline.stamp(Buffer(b"a", pts=5.0), 0.0)
    timeline.discontinuity()
    payload = bytearray(b"payload")
    original = Buffer([payload, b"tail"], pts=90_000.0, duration=0.04, delta_unit=False)
    stamped = timeline.stamp(original, 3.0)
    assert stamped.pts == 8.0  # due now: base 0 - 5 = -5, -5 + 8 = 3
    assert stamped.duration == 0.04 and stamped.keyframe and not stamped.header
    assert stamped.tobytes() == b"payloadtail"
    payload[0:1] = b"P"  # the same memory, not a copy
    assert stamped.tobytes() == b"Payloadtail"


def test_b_frame_order_is_not_a_discontinuity() -> None:
    """PTS in stream order with two B-frames: I0 P3 B1 B2 P6 B4 B5 ...; the
    output never decreases and follows the stream's own clock."""
    frame = 1 / 25
    order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8]
    paced = Paced()
    out = [paced.send(10 + n * frame) for n in order]
    assert paced.timeline.segments == 1
    expected = [10 + max(order[: i + 1]) * frame for i in range(len(order))]
    assert out == pytest.approx(expected)


def test_step_back_within_max_reorder_is_clamped() -> None:
    timeline = Timeline()
    timeline.stamp(Buffer(b"", pts=50.0), 0.0)
    back = timeline.stamp(Buffer(b"", pts=50.0 - MAX_REORDER * 0.9), 0.0)
    assert back.pts == 50.0 and timeline.segments == 1


@pytest.mark.parametrize("jump", [-MAX_REORDER * 1.5, -3600.0, MAX_GAP * 1.5, 7200.0])
def test_jump_beyond_the_bounds_is_due_now_then_paced(jump: float) -> None:
    paced = Paced()
    for i in range(10):
        paced.send(100 + i * 0.1)
    assert paced.now == pytest.approx(1000.9)
    paced.now += 0.5  # the jumped buffer arrives half a second after the last was due
    out = paced.send(100 + 0.9 + jump)
    assert out is not None and paced.due(out) == pytest.approx(1001.4)
    assert paced.timeline.segments == 2
    # The next ones keep their own spacing from there.
    later = [paced.send(100 + 0.9 + jump + i * 0.1) for i in range(1, 5)]
    assert [paced.due(p) for p in later if p is not None] == pytest.approx(
        [1001.4 + i * 0.1 for i in range(1, 5)]
    )


def test_forward_step_within_max_gap_is_kept() -> None:
    """A pause shorter than the bound is the stream's own: paced as it says."""
    paced = Paced()
    paced.send(0.0)
    paced.send(MAX_GAP * 0.5)
    assert paced.timeline.segments == 1 and paced.out == [0.0, MAX_GAP * 0.5]


def test_explicit_discontinuity_rebases_even_a_plausible_step() -> None:
    paced = Paced()
    for i in range(5):
        paced.send(i * 0.04)
    paced.timeline.discontinuity()
    paced.timeline.discontinuity()  # twice is once
    out = paced.send(0.2, after=4.0)  # a reconnect 4 s later; its clock happens to fit
    assert out is not None and paced.due(out) == pytest.approx(paced.now)
    assert out == pytest.approx(0.16 + 4.0)  # the gap counts as the time it took
    assert paced.timeline.segments == 2


def test_discontinuity_before_any_timestamp_changes_nothing() -> None:
    timeline = Timeline()
    timeline.discontinuity()
    buffer = Buffer(b"", pts=42.0)
    assert timeline.stamp(buffer, 0.0) is buffer and timeline.segments == 1


def test_unwrapped_mpegts_wrap_passes_through() -> None:
    """The framer unwraps the 33-bit counter: its pts run on past 2**33
    ticks, and the timeline leaves them as they are."""
    paced = Paced()
    pts = [WRAP - 3 + i * 0.5 for i in range(13)]
    assert paced.timeline.stamp(Buffer(b"", pts=pts[0]), 0.0).pts == pts[0]
    assert [paced.timeline.stamp(Buffer(b"", pts=p), 0.0).pts for p in pts[1:]] == pts[1:]
    assert paced.timeline.segments == 1


def test_a_wrap_left_wrapped_is_a_jump_back_and_rebased() -> None:
    paced = Paced()
    for i in range(6):
        paced.send(WRAP - 3 + i * 0.5)
    before = paced.now
    out = paced.send(0.0)  # 2**33 ticks later the counter reads 0 again
    assert out is not None and paced.due(out) == pytest.approx(before)
    assert paced.send(0.5) == pytest.approx(out + 0.5)


def test_producer_ahead_of_the_clock_continues_from_the_last_timestamp() -> None:
    """With sync=False a file is read faster than its timestamps: after a
    discontinuity the output continues from the last one, never back."""
    timeline = Timeline()
    for i in range(100):
        timeline.stamp(Buffer(b"", pts=i * 0.1), 0.001 * i)  # 10 s of media in 0.1 s
    timeline.discontinuity()
    assert timeline.stamp(Buffer(b"", pts=5000.0), 0.2).pts == pytest.approx(9.9)
    assert timeline.stamp(Buffer(b"", pts=5000.1), 0.2).pts == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        ({"max_gap": 0}, ValueError),
        ({"max_gap": -1.0}, ValueError),
        ({"max_reorder": float("inf")}, ValueError),
        ({"max_reorder": float("nan")}, ValueError),
        ({"max_gap": "10"}, TypeError),
        ({"max_reorder": True}, TypeError),
    ],
)
def test_bad_bounds_are_refused(opts: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(opts))):
        Timeline(**opts)  # type: ignore[arg-type]


def test_bad_arguments_to_stamp_are_refused() -> None:
    timeline = Timeline()
    with pytest.raises(TypeError, match="buffer"):
        timeline.stamp(b"bytes", 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="now"):
        timeline.stamp(Buffer(b""), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now"):
        timeline.stamp(Buffer(b""), float("nan"))


EVENTS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.floats(-1e7, 1e7)),  # input pts
        st.floats(0, 20),  # seconds since the previous buffer was released
        st.booleans(),  # a discontinuity before it
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events=EVENTS)
def test_output_never_goes_back_and_never_waits_longer_than_the_stream_says(
    events: list[tuple[float | None, float, bool]],
) -> None:
    paced = Paced()
    high: float | None = None  # highest input pts of the current segment
    last_out: float | None = None
    for pts, after, discontinuity in events:
        if discontinuity:
            paced.timeline.discontinuity()
        segments = paced.timeline.segments
        arrival = paced.now + after
        out = paced.send(pts, after=after)
        if pts is None:
            assert out is None
            continue
        assert out is not None
        wait = paced.due(out) - arrival
        if last_out is not None:
            assert out >= last_out
        if paced.timeline.segments != segments:  # a new clock: due at once
            assert wait <= 1e-6 * max(1.0, abs(arrival))
            high = pts
        else:  # the stream's own step, and never more than the gap bound
            assert high is not None
            assert wait <= max(pts - high, 0.0) + 1e-6 * max(1.0, abs(arrival))
            assert wait <= MAX_GAP + 1e-6
            high = max(high, pts)
        last_out = out
