"""The pure core against a brute-force model of docs/semantics.rst.

A hypothesis state machine drives :class:`History` with random adds (every
sync method, bursts with minima and maxima in BYTES/BUFFERS/TIME), pushes,
reads, stalls, removals, remove-flushes and setting changes, and checks every
step against :class:`Model`: a plain list of every buffer ever pushed and,
per client, the sequence number of the next buffer it will receive. The model
computes placement, limits, recovery and retention by scanning that list,
straight from the wording of docs/semantics.rst ("Placement: where a new
client starts", "Limits", "Soft-limit recovery", "Retention",
"Streamheaders"); it never calls the core's helpers.

Where the rules leave room, the model reads them as follows (each is also what
the core does, and each is written down in docs/semantics.rst, so a change to
any of them should be a deliberate one):

* ``time_min`` with less PTS span in history than asked keeps back to the
  oldest buffer that has a PTS (keeping everything would never trim a stream
  without PTS);
* with a keyframe ``sync_method``, retention keeps back to where ``add()``
  with the default burst would start (for BURST_KEYFRAME that is the keyframe
  at or before the burst start, which can be older than the newest keyframe);
* soft-limit recovery leaves a client with a pending remove-flush alone (it
  is promised what was queued); hard limits still remove it;
* after RESYNC_KEYFRAME skips everything, the delta units that arrive before
  the next keyframe are not counted in ``buffers_dropped`` (they were never
  queued for the client), as with NEXT_KEYFRAME.

Example-based tests of the core's parts are in test_core_log.py (BufferLog),
test_core_placement.py (place) and test_core_history.py (History).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise

from conftest import amount
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_msink._buffer import Buffer
from trio_msink._enums import Format, RecoverPolicy, SyncMethod
from trio_msink._history import Cursor, History
from trio_msink._limits import Limits
from trio_msink._placement import Burst

MEASURED = (Format.BYTES, Format.TIME, Format.BUFFERS)


KEYFRAME_METHODS = (
    SyncMethod.LATEST_KEYFRAME,
    SyncMethod.BURST_KEYFRAME,
    SyncMethod.BURST_WITH_KEYFRAME,
)


HEADER_BYTES = (b"H1", b"H2", b"hdr3")


def is_set(fmt: Format, value: float) -> bool:
    """A burst bound is set when its format measures something and it is not -1."""
    return fmt in MEASURED and value != -1


@dataclass(eq=False)
class MClient:
    cursor: Cursor
    #: Next sequence number to receive; None while waiting for a keyframe.
    pos: int | None
    flush_end: int | None = None
    dropped: int = 0
    #: Header bytes recorded at the last data take; None before the first one.
    got_headers: tuple[bytes, ...] | None = None
    received: list[int] = field(default_factory=list)
    stalled: bool = False
    ever_recovered: bool = False
    #: The first sequence number queued for the client (placement or keyframe).
    first: int | None = None
    #: RESYNC_KEYFRAME once made it wait for a keyframe.
    waited_for_keyframe: bool = False


@dataclass
class Expected:
    queued: bool
    over_hard: list[MClient] = field(default_factory=list)
    resynced: list[MClient] = field(default_factory=list)


class Model:
    def __init__(self) -> None:
        self.bufs: list[Buffer] = []  # every queued buffer; index = sequence number
        self.low = 0  # oldest retained sequence number
        self.clients: list[MClient] = []
        self.limits = Limits()
        self.policy = RecoverPolicy.NONE
        self.sync_method = SyncMethod.LATEST
        self.default_burst = (Format.UNDEFINED, 0.0)
        self.bytes_min: float = -1
        self.buffers_min = -1
        self.time_min: float = -1
        self.resend = True
        self.headers: tuple[Buffer, ...] = ()

    @property
    def next(self) -> int:
        return len(self.bufs)

    # -- amounts ------------------------------------------------------------
    def amount(self, fmt: Format, start: int, end: int) -> float:
        return amount(self.bufs, fmt, start, end)

    def suffixes(self, fmt: Format) -> Iterator[tuple[int, float]]:
        """``(s, amount(s, next))`` for every retained ``s``, newest first
        (one backward pass, so that long histories stay cheap)."""
        nbytes = 0
        newest: float | None = None
        oldest: float | None = None
        for s in range(self.next - 1, self.low - 1, -1):
            b = self.bufs[s]
            nbytes += len(b)
            if b.pts is not None:
                newest = b.pts if newest is None else newest
                oldest = b.pts
            if fmt == Format.BYTES:
                yield s, nbytes
            elif fmt == Format.TIME:
                yield s, (newest - oldest) if newest is not None and oldest is not None else 0.0
            else:
                yield s, self.next - s

    def keyframes(self) -> list[int]:
        return [s for s in range(self.low, self.next) if self.bufs[s].keyframe]

    # -- placement (docs/semantics.rst, "Placement: where a new client starts")
    def burst_start(self, burst: Burst) -> int:
        low, end = self.low, self.next
        if end == low:
            return end
        if is_set(burst.min_format, burst.min_value):
            reaching = [s for s, a in self.suffixes(burst.min_format) if a >= burst.min_value]
            start = max(reaching) if reaching else low  # too little: everything
        else:
            start = end - 1  # no minimum: the newest buffer
        if is_set(burst.max_format, burst.max_value):
            within = [
                s for s, a in self.suffixes(burst.max_format)
                if s >= start and a <= burst.max_value
            ]
            start = min(within) if within else end
        return start

    def within_max(self, burst: Burst, start: int) -> bool:
        if not is_set(burst.max_format, burst.max_value):
            return True
        return self.amount(burst.max_format, start, self.next) <= burst.max_value

    def place(self, method: SyncMethod, burst: Burst) -> int | None:
        if method == SyncMethod.LATEST:
            return self.next
        if method == SyncMethod.NEXT_KEYFRAME:
            return None
        keyframes = self.keyframes()
        if method == SyncMethod.LATEST_KEYFRAME:
            return keyframes[-1] if keyframes else None
        start = self.burst_start(burst)
        if method == SyncMethod.BURST:
            return start
        before = [k for k in keyframes if k <= start]
        if before and self.within_max(burst, before[-1]):
            return before[-1]
        if method == SyncMethod.BURST_WITH_KEYFRAME:
            return start
        after = [k for k in keyframes if k > start]
        return after[0] if after else None

    # -- lag and limits -----------------------------------------------------
    def waiting(self, c: MClient) -> tuple[int, int]:
        end = self.next if c.flush_end is None else c.flush_end
        if c.pos is None:
            return end, end
        return c.pos, end

    def _over(self, start: int, end: int, buffers: int, units: float) -> bool:
        if buffers > 0 and end - start > buffers:
            return True
        return units > 0 and self.amount(self.limits.unit_format, start, end) > units

    def over_soft(self, start: int, end: int) -> bool:
        lim = self.limits
        return self._over(start, end, lim.buffers_soft_max, lim.units_soft_max)

    def over_hard(self, start: int, end: int) -> bool:
        lim = self.limits
        return self._over(start, end, lim.buffers_max, lim.units_max)

    def recover(self, c: MClient, start: int, end: int) -> None:
        """Soft-limit recovery of a client whose waiting buffers are start..end-1."""
        if self.policy == RecoverPolicy.RESYNC_LATEST:
            new: int | None = end - 1
            skipped = end - 1 - start
        elif self.policy == RecoverPolicy.RESYNC_SOFT_LIMIT:
            new = min(t for t in range(start, end + 1) if not self.over_soft(t, end))
            skipped = new - start
        else:
            keyframes = [t for t in range(start, end) if self.bufs[t].keyframe]
            if keyframes and not self.over_soft(keyframes[-1], end):
                new = keyframes[-1]
                skipped = new - start
            else:
                new, skipped = None, end - start
                c.waited_for_keyframe = True
        c.pos = new
        c.dropped += skipped
        c.ever_recovered = True

    # -- retention (docs/semantics.rst, "Retention") ---------------------------
    def retention_start(self) -> int:
        end = self.next
        keep = [end - 1]  # the newest buffer always stays
        if self.bytes_min > 0:
            reaching = [s for s, a in self.suffixes(Format.BYTES) if a >= self.bytes_min]
            keep.append(max(reaching) if reaching else self.low)
        if self.buffers_min > 0:
            keep.append(max(self.low, end - self.buffers_min))
        if self.time_min > 0:
            reaching = [s for s, a in self.suffixes(Format.TIME) if a >= self.time_min]
            if reaching:
                keep.append(max(reaching))
            else:
                # Not enough span yet: keep all the span there is, i.e. back to
                # the oldest buffer that has a PTS (buffers older than that add
                # no time; a stream without PTS must not grow without bound).
                stamped = [s for s in range(self.low, end) if self.bufs[s].pts is not None]
                if stamped:
                    keep.append(stamped[0])
        fmt, value = self.default_burst
        default = Burst(fmt, value)
        if is_set(fmt, value) and value > 0:
            keep.append(self.burst_start(default))
        if self.sync_method in KEYFRAME_METHODS:
            start = self.place(self.sync_method, default)
            if start is not None:
                keep.append(start)
        return min(keep)

    # -- the push -----------------------------------------------------------
    def push(self, buffer: Buffer) -> Expected:
        if buffer.header and buffer.tobytes() in [h.tobytes() for h in self.headers]:
            return Expected(queued=False)
        seq = self.next
        self.bufs.append(buffer)
        out = Expected(queued=True)
        for c in self.clients:
            if c.pos is None:
                if c.flush_end is not None or not buffer.keyframe:
                    continue
                c.pos = seq  # from the first keyframe that arrives
                c.first = seq if c.first is None else c.first
            start, end = self.waiting(c)
            # A flushing client is promised what was queued when the flush
            # started; recovery would cut into that, so it applies to others.
            if (self.policy != RecoverPolicy.NONE and c.flush_end is None
                    and self.over_soft(start, end)):
                self.recover(c, start, end)
                out.resynced.append(c)
                if c.pos is None:
                    continue
                start = c.pos
            if self.over_hard(start, end):
                out.over_hard.append(c)
        for c in out.over_hard:
            self.clients.remove(c)
        needs = [s for s, e in map(self.waiting, self.clients) if s < e]
        self.low = max(self.low, min([self.retention_start(), *needs]))
        return out

    # -- reading ------------------------------------------------------------
    def headers_due(self, c: MClient) -> tuple[Buffer, ...]:
        current = tuple(h.tobytes() for h in self.headers)
        if not current:
            return ()
        if not c.got_headers:  # first data buffer, or had no streamheader before
            return self.headers
        if self.resend and c.got_headers != current:
            return self.headers
        return ()

    def take(self, c: MClient, count: int) -> tuple[list[Buffer], list[int]]:
        start, end = self.waiting(c)
        count = min(count, end - start)
        if count <= 0:
            return [], []
        items = list(self.headers_due(c))
        c.got_headers = tuple(h.tobytes() for h in self.headers)
        seqs = list(range(start, start + count))
        items.extend(self.bufs[s] for s in seqs)
        c.pos = start + count
        return items, seqs


COUNTS = st.sampled_from([-1, 0, 1, 2, 3, 4, 6])  # buffers_max, buffers_soft_max


BUFFER_AMOUNTS = st.sampled_from([-1, 0, 0.5, 1, 2, 2.5, 3, 4, 6])


BYTE_AMOUNTS = st.sampled_from([-1, 0, 1, 4, 8, 12, 20, 30])


TIME_AMOUNTS = st.sampled_from([-1, 0, 0.5, 1.0, 2.0, 3.5, 5.0])


SIZES = st.sampled_from([0, 1, 2, 3, 5, 8])


PTS_STEPS = st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0, 2.0]))


def amounts_for(fmt: Format) -> st.SearchStrategy[float]:
    if fmt == Format.BYTES:
        return BYTE_AMOUNTS
    if fmt == Format.TIME:
        return TIME_AMOUNTS
    return BUFFER_AMOUNTS


def _ordered(soft: float, hard: float) -> tuple[float, float]:
    # The Sink refuses a soft limit above its hard limit (docs/semantics.rst, "Limits").
    if soft > 0 and hard > 0 and soft > hard:
        return hard, soft
    return soft, hard


@st.composite
def limits_st(draw: st.DrawFn) -> Limits:
    unit = draw(st.sampled_from([Format.BUFFERS, Format.BYTES, Format.TIME]))
    bsoft, bmax = _ordered(draw(COUNTS), draw(COUNTS))
    usoft, umax = _ordered(draw(amounts_for(unit)), draw(amounts_for(unit)))
    return Limits(int(bmax), int(bsoft), unit, umax, usoft)


FORMATS = st.sampled_from([Format.UNDEFINED, Format.BYTES, Format.BUFFERS, Format.TIME])


@st.composite
def bound_st(draw: st.DrawFn) -> tuple[Format, float]:
    fmt = draw(FORMATS)
    if fmt == Format.UNDEFINED:
        return fmt, draw(st.sampled_from([-1, 3]))
    return fmt, draw(amounts_for(fmt))


@st.composite
def burst_st(draw: st.DrawFn) -> Burst:
    min_format, min_value = draw(bound_st())
    max_format, max_value = draw(bound_st())
    if min_format == max_format and min_value >= 0 and 0 <= max_value < min_value:
        min_value, max_value = max_value, min_value  # add_full refuses max < min
    return Burst(min_format, min_value, max_format, max_value)


def _label(bufs: list[Buffer], items: list[Buffer]) -> list[str]:
    index = {id(b): s for s, b in enumerate(bufs)}
    return [f"#{index[id(b)]}" if id(b) in index else repr(b) for b in items]


class HistoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.history = History()
        self.model = Model()
        self.pts = 10.0
        self.handles = 0

    # -- helpers ------------------------------------------------------------
    def pick(self, index: int) -> MClient:
        return self.model.clients[index % len(self.model.clients)]

    def has_clients(self) -> bool:
        return bool(self.model.clients)

    def make_buffer(self, size: int, delta: bool, step: float | None) -> Buffer:
        pts = None
        if step is not None:
            self.pts += step
            pts = self.pts
        return Buffer(b"x" * size, pts=pts, delta_unit=delta)

    def check_client(self, c: MClient) -> None:
        cur, m, h = c.cursor, self.model, self.history
        assert cur in h.cursors and cur.active
        assert cur.next == c.pos, (cur.next, c.pos)
        assert cur.flush_end == c.flush_end
        assert cur.buffers_dropped == c.dropped, (cur.buffers_dropped, c.dropped)
        start, end = m.waiting(c)
        assert h.waiting(cur) == (start, end)
        for fmt in MEASURED:
            assert h.lag(cur, fmt) == m.amount(fmt, start, end), fmt
        # Whole buffers, in send order; only recovery may leave gaps.
        got = c.received
        assert all(a < b for a, b in pairwise(got))
        if not c.ever_recovered:
            assert all(b == a + 1 for a, b in pairwise(got)), got
        # buffers_dropped counts exactly the skips: every buffer queued for the
        # client since its first was either handed over or dropped (a client
        # waiting for a keyframe after RESYNC_KEYFRAME was queued nothing).
        if c.first is not None and c.pos is not None:
            handled = len(got) + c.dropped
            if c.waited_for_keyframe:
                assert handled <= c.pos - c.first
            else:
                assert handled == c.pos - c.first, (len(got), c.dropped, c.first, c.pos)
        stamps = [m.bufs[s].pts for s in got if m.bufs[s].pts is not None]
        assert (cur.first_pts, cur.last_pts) == (
            (stamps[0], stamps[-1]) if stamps else (None, None))

    def settle_flush(self, c: MClient) -> None:
        """Like the Sink: a flushing client with nothing left to hand over is
        removed as soon as its stream is not blocked in a write (a stalled
        client here is one whose stream is stuck inside ``send_all``)."""
        if c.flush_end is None:
            return
        start, end = self.model.waiting(c)
        assert self.history.flushed(c.cursor) == (start >= end)
        if start >= end and not c.stalled:
            self.history.remove(c.cursor)
            self.model.clients.remove(c)

    def do_push(self, buffer: Buffer) -> None:
        m, h = self.model, self.history
        before = list(m.clients)
        expected = m.push(buffer)
        result = h.push(buffer)
        assert result.queued == expected.queued
        if not expected.queued:
            assert result.over_hard == [] and result.resynced == []
            return
        by_cursor = {c.cursor: c for c in before}
        got_hard = [by_cursor[cur] for cur in result.over_hard]
        assert set(got_hard) == set(expected.over_hard), (
            "over_hard", [before.index(c) for c in got_hard],
            [before.index(c) for c in expected.over_hard])
        assert {by_cursor[cur] for cur in result.resynced} == set(expected.resynced)
        for c in expected.over_hard:
            assert c.cursor not in h.cursors and not c.cursor.active
        for c in m.clients:
            start, end = m.waiting(c)
            assert not m.over_hard(start, end)
            if m.policy != RecoverPolicy.NONE and c.flush_end is None:
                # Within every soft limit, except RESYNC_LATEST's "next buffer
                # is the newest one" when that buffer alone is over.
                assert not m.over_soft(start, end) or (
                    m.policy == RecoverPolicy.RESYNC_LATEST and (start, end) == (m.next - 1, m.next)
                )
        assert h.log.low == m.low, ("retained from", h.log.low, "model", m.low)
        assert h.buffers_queued == len(h.log) == m.next - m.low

    # -- rules: the stream ----------------------------------------------------
    @rule(size=SIZES, delta=st.booleans(), step=PTS_STEPS)
    def push(self, size: int, delta: bool, step: float | None) -> None:
        self.do_push(self.make_buffer(size, delta, step))

    @rule(
        n=st.integers(1, 24),
        every=st.integers(1, 6),
        sizes=st.lists(SIZES, min_size=1, max_size=3),
        step=PTS_STEPS,
    )
    def push_many(self, n: int, every: int, sizes: list[int], step: float | None) -> None:
        for i in range(n):
            self.do_push(self.make_buffer(sizes[i % len(sizes)], i % every != 0, step))

    @rule(data=st.sampled_from(HEADER_BYTES))
    def push_header_buffer(self, data: bytes) -> None:
        self.do_push(Buffer(data, header=True))

    @rule(headers=st.lists(st.sampled_from(HEADER_BYTES), max_size=2))
    def set_streamheader(self, headers: list[bytes]) -> None:
        buffers = [Buffer(b, header=True) for b in headers]
        self.history.set_streamheader(buffers)
        self.model.headers = tuple(buffers)

    @rule(resend=st.booleans())
    def set_resend_streamheader(self, resend: bool) -> None:
        self.history.resend_streamheader = resend
        self.model.resend = resend

    # -- rules: clients -------------------------------------------------------
    @rule(method=st.sampled_from(SyncMethod), burst=burst_st(), use_defaults=st.booleans())
    def add(self, method: SyncMethod, burst: Burst, use_defaults: bool) -> None:
        m = self.model
        if use_defaults:  # Sink.add: the sink's sync_method and burst, no max
            method = m.sync_method
            burst = Burst(*m.default_burst)
        self.handles += 1
        expected = m.place(method, burst)
        cursor = self.history.add(self.handles, method, burst)
        assert cursor.next == expected, (method, burst, cursor.next, expected)
        m.clients.append(MClient(cursor, expected, first=expected))

    @precondition(has_clients)
    @rule(index=st.integers(0, 15), count=st.integers(0, 6))
    def take(self, index: int, count: int) -> None:
        c = self.pick(index)
        if c.stalled:
            return
        self.read(c, count)

    def read(self, c: MClient, count: int) -> None:
        h = self.history
        peek_headers, peek_data = h.peek(c.cursor, count)
        expected, seqs = self.model.take(c, count)
        got = h.take(c.cursor, count)
        same = len(got) == len(expected) and all(map(operator.is_, got, expected))
        assert same, (_label(self.model.bufs, got), _label(self.model.bufs, expected))
        if count > 0:
            peeked = [*peek_headers, *peek_data]
            assert len(peeked) == len(got) and all(map(operator.is_, peeked, got))
        if seqs and not c.received and self.model.headers:
            # A new client receives the streamheader before its first data buffer.
            assert all(map(operator.is_, got, self.model.headers))
        c.received.extend(seqs)
        self.settle_flush(c)

    @precondition(has_clients)
    @rule()
    def deliver(self) -> None:
        """Every client that is not stalled reads everything waiting for it."""
        for c in list(self.model.clients):
            if not c.stalled:
                self.read(c, 10**6)

    @precondition(has_clients)
    @rule(index=st.integers(0, 15), stalled=st.booleans())
    def stall(self, index: int, stalled: bool) -> None:
        c = self.pick(index)
        c.stalled = stalled
        self.settle_flush(c)

    @precondition(has_clients)
    @rule(index=st.integers(0, 15))
    def remove(self, index: int) -> None:
        c = self.pick(index)
        self.history.remove(c.cursor)
        self.model.clients.remove(c)
        assert c.cursor not in self.history.cursors and not c.cursor.active

    @precondition(has_clients)
    @rule(index=st.integers(0, 15))
    def start_flush(self, index: int) -> None:
        c = self.pick(index)
        if c.flush_end is None:
            c.flush_end = self.model.next
            if c.pos is None:
                c.pos = c.flush_end  # nothing that arrives later is queued for it
        self.history.start_flush(c.cursor)
        self.settle_flush(c)

    # -- rules: settings (take effect at the next push / add) -----------------
    @rule(limits=limits_st())
    def set_limits(self, limits: Limits) -> None:
        self.history.limits = limits
        self.model.limits = limits

    @rule(policy=st.sampled_from(RecoverPolicy))
    def set_recover_policy(self, policy: RecoverPolicy) -> None:
        self.history.recover_policy = policy
        self.model.policy = policy

    @rule(
        bytes_min=st.sampled_from([-1, 0, 1, 10, 25, 50]),
        buffers_min=st.sampled_from([-1, 0, 1, 2, 3, 5, 10]),
        time_min=st.sampled_from([-1, 0, 0.5, 1.0, 3.0, 6.0]),
    )
    def set_retention(self, bytes_min: int, buffers_min: int, time_min: float) -> None:
        h, m = self.history, self.model
        h.bytes_min, h.buffers_min, h.time_min = bytes_min, buffers_min, time_min
        m.bytes_min, m.buffers_min, m.time_min = bytes_min, buffers_min, time_min

    @rule(method=st.sampled_from(SyncMethod), bound=bound_st())
    def set_default_placement(self, method: SyncMethod, bound: tuple[Format, float]) -> None:
        self.history.sync_method = method
        self.history.default_burst = Burst(*bound)
        self.model.sync_method = method
        self.model.default_burst = bound

    # -- invariants -----------------------------------------------------------
    @invariant()
    def agrees_with_model(self) -> None:
        h, m = self.history, self.model
        assert h.log.next == m.next
        assert h.log.low == m.low
        assert len(h.cursors) == len(m.clients)
        assert h.bytes_to_serve == sum(len(b) for b in m.bufs)
        for s in range(m.low, m.next):
            assert h.log[s] is m.bufs[s]
        for c in m.clients:
            self.check_client(c)
            start, end = m.waiting(c)
            assert start >= end or start >= m.low  # nothing a client needs was trimmed


HistoryMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


TestHistoryModel = HistoryMachine.TestCase
