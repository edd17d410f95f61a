"""What the server knows about its source, as plain data: the reconnect
schedule and the source's state, uptime and counters.

Pure and synchronous, like the library's core: no I/O, no clock of its own
(every method takes ``now``, in seconds of any monotonic clock) and no
randomness of its own (the jitter is passed in), so every rule here is
tested without sockets or sleeping.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Backoff", "SourceState", "SourceStatus"]

# The reconnect schedule. A restarted origin is usually back within
# seconds, and a relay should notice at once: for the first FAST_WINDOW
# seconds of an outage every retry comes after INITIAL (so a 5 s outage is
# over for the relay about INITIAL after the origin returns). Past that the
# delay doubles up to MAXIMUM, so a long outage costs the origin one
# connection attempt every ~10 s per relay (nginx's proxy_next_upstream
# and ffmpeg's reconnect_delay_max use the same order of magnitude).
INITIAL_DELAY = 0.5
MAXIMUM_DELAY = 10.0
FAST_WINDOW = 10.0
# Each delay is scaled by a factor in [1 - JITTER, 1], so that many relays
# that lost the same origin do not all knock at the same instant.
JITTER = 0.5
# Window over which the input bitrate is measured, in seconds.
RATE_WINDOW = 5.0


@dataclass(slots=True)
class Backoff:
    """The delays between connection attempts (seconds): INITIAL_DELAY for
    the first ``fast_window`` seconds of an outage, then doubling from twice
    that up to ``maximum``; each scaled by ``1 - jitter * random``.

    ``max_attempts`` bounds the failed attempts in a row (``None``: retry
    forever). Call :meth:`failed` after each failed attempt (False: the
    bound is reached), :meth:`next_delay` before each wait (with several
    sources, once per round of attempts), and :meth:`succeeded` once a
    connection delivers data.
    """

    initial: float = INITIAL_DELAY
    maximum: float = MAXIMUM_DELAY
    fast_window: float = FAST_WINDOW
    jitter: float = JITTER
    max_attempts: int | None = None
    #: Failed attempts since the last success.
    failures: int = 0
    _outage_start: float | None = None
    _slow: int = 0

    def failed(self) -> bool:
        """One more failed attempt; False once ``max_attempts`` are reached."""
        self.failures += 1
        return self.max_attempts is None or self.failures < self.max_attempts

    def next_delay(self, now: float, random: float) -> float:
        """The wait before the next attempt, at time ``now``; ``random`` in [0, 1)."""
        if self._outage_start is None:
            self._outage_start = now
        if now - self._outage_start < self.fast_window:
            delay = self.initial
        else:
            self._slow += 1
            delay = min(self.maximum, self.initial * 2.0 ** self._slow)
        return delay * (1.0 - self.jitter * random)

    def succeeded(self) -> None:
        """A connection worked: the next outage starts the schedule over."""
        self.failures = 0
        self._outage_start = None
        self._slow = 0


class SourceState(enum.Enum):
    """Where the source is; the value is the word shown to people."""

    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    WAITING = "waiting for publisher"
    ENDED = "ended"


@dataclass(slots=True)
class SourceStatus:
    """The source as ``/stats``, the page, the display and the log show it.

    ``spec`` is what the user gave (``tcp://origin:9000``; for several
    sources, the one in use). Each state change returns the log line that
    describes it (``None`` when nothing changed), so the shell logs exactly
    one line per change.
    """

    spec: str
    state: SourceState = SourceState.CONNECTING
    #: When the source last became live (``None``: not live now).
    live_since: float | None = None
    bytes_in: int = 0
    #: Times the source was lost after being live, or a publisher left.
    reconnects: int = 0
    last_error: str | None = None
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def _change(self, state: SourceState) -> bool:
        if state is self.state:
            return False
        self.state = state
        return True

    def connecting(self, spec: str, now: float) -> str | None:
        """An attempt to reach ``spec`` starts (with several sources, the
        attempts go round them: only a change of state is logged)."""
        self.spec = spec
        retry = self.state in (SourceState.RECONNECTING, SourceState.LIVE)
        state = SourceState.RECONNECTING if retry else SourceState.CONNECTING
        if self._change(state):
            return f"source {spec}: {state.value}"
        return None

    def waiting(self, spec: str, now: float) -> str | None:
        """A push source listens at ``spec`` with no publisher."""
        self.spec = spec
        if self._change(SourceState.WAITING):
            return f"source {spec}: {SourceState.WAITING.value}"
        return None

    def live(self, spec: str, now: float, detail: str = "") -> str | None:
        """Data flows from ``spec`` (``detail``: e.g. the publisher's address)."""
        changed = spec != self.spec
        self.spec = spec
        self.live_since = now
        if self._change(SourceState.LIVE) or changed:
            return f"source {spec}: live" + (f" ({detail})" if detail else "")
        return None

    def lost(self, error: str, now: float, *, push: bool = False) -> str | None:
        """The source stopped: a lost connection, a failed attempt, a
        publisher gone. ``error`` says why, for people."""
        self.last_error = error
        was_live = self.state is SourceState.LIVE
        self.live_since = None
        if was_live:
            self.reconnects += 1
        if push:
            state = SourceState.WAITING
        elif self.state is SourceState.CONNECTING:  # never reached yet
            state = SourceState.CONNECTING
        else:
            state = SourceState.RECONNECTING
        changed = self._change(state)
        if was_live or changed:
            return f"source {self.spec}: {state.value} ({error})"
        return None

    def ended(self, now: float) -> str | None:
        """The real end of a finite source."""
        self.live_since = None
        if self._change(SourceState.ENDED):
            return f"source {self.spec}: ended"
        return None

    def received(self, size: int, now: float) -> None:
        """``size`` bytes arrived from the source."""
        self.bytes_in += size
        samples = self._samples
        if not samples or now - samples[-1][0] >= 0.25:
            samples.append((now, self.bytes_in))
        else:
            samples[-1] = (samples[-1][0], self.bytes_in)
        while len(samples) > 2 and now - samples[1][0] > RATE_WINDOW:
            samples.popleft()

    def bitrate(self, now: float) -> float:
        """Bits per second received over the last RATE_WINDOW seconds (0 when
        nothing arrived in that window)."""
        samples = self._samples
        if not samples or now - samples[-1][0] > RATE_WINDOW:
            return 0.0
        t0, b0 = samples[0]
        span = max(now - t0, 1.0)
        return (self.bytes_in - b0) * 8 / span

    def uptime(self, now: float) -> float:
        """Seconds since the source became live; 0 when not live."""
        return 0.0 if self.live_since is None else max(0.0, now - self.live_since)

    def snapshot(self, now: float) -> dict[str, Any]:
        """The JSON-ready ``"source"`` object of ``/stats``."""
        return {
            "spec": self.spec,
            "state": self.state.value,
            "uptime": round(self.uptime(now), 3),
            "bytes_in": self.bytes_in,
            "bitrate_in": round(self.bitrate(now)),
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }
