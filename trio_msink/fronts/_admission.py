"""Admission: how many connections and viewers, in total and per address
(docs/security.md). Plain synchronous Python."""

from __future__ import annotations

from collections import Counter

__all__ = [
    "DEFAULT_MAX_CLIENTS_CAP",
    "FD_OVERHEAD",
    "OPERATOR_RESERVE",
    "Admission",
    "default_max_clients",
]

#: Descriptors the process needs besides its clients: stdin/stdout/stderr,
#: the listening sockets (two per front with IPv4 and IPv6), the epoll
#: descriptor and Trio's wake-up socket pair, the source, a token or
#: certificate file being read, the worker processes' socket pairs.
FD_OVERHEAD = 32
#: Connections kept above ``--max-clients`` for the operator's requests
#: (``/stats``, the page) and for the short-lived connections of refused
#: viewers, which need a descriptor to be told 503 / 1013.
OPERATOR_RESERVE = 8
#: The default ``--max-clients`` is also capped here: docs/performance.md
#: measures one process at full CPU with 1,000 clients of a paced stream, so
#: ten times that is already beyond what one process serves well, and a hard
#: limit of a million descriptors should not mean a million viewers.
DEFAULT_MAX_CLIENTS_CAP = 10_000


def default_max_clients(fd_limit: int) -> int:
    """The default ``--max-clients`` for a process allowed ``fd_limit`` open
    descriptors: ``fd_limit - FD_OVERHEAD - OPERATOR_RESERVE``, at least 1
    and at most :data:`DEFAULT_MAX_CLIENTS_CAP`. Every client holds one
    descriptor (a TLS client too), so the server refuses viewers before the
    process runs out of descriptors, with the reserve left for the operator.
    """
    return max(1, min(DEFAULT_MAX_CLIENTS_CAP, fd_limit - FD_OVERHEAD - OPERATOR_RESERVE))


class Admission:
    """Counts of open connections and of viewers, in total and per address.

    A connection (any front, before its request is known) is admitted while
    fewer than ``max_clients + reserve`` are open in total and fewer than
    ``max_per_ip + reserve`` from its address; a viewer (a client the sink
    serves) while fewer than ``max_clients`` are watching in total and
    ``max_per_ip`` from its address. So the operator's requests still get a
    connection when viewers are at their limit. Raises :exc:`ValueError`
    for a limit below 1 or a negative reserve.
    """

    def __init__(self, max_clients: int, max_per_ip: int | None = None,
                 reserve: int = OPERATOR_RESERVE) -> None:
        max_per_ip = max_clients if max_per_ip is None else max_per_ip
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, not {max_clients}")
        if max_per_ip < 1:
            raise ValueError(f"max_clients_per_ip must be >= 1, not {max_per_ip}")
        if reserve < 0:
            raise ValueError(f"reserve must be >= 0, not {reserve}")
        self.max_clients = max_clients
        self.max_per_ip = max_per_ip
        self.reserve = reserve
        self.connections = 0
        self.viewers = 0
        self._connections: Counter[str] = Counter()
        self._viewers: Counter[str] = Counter()

    def open_connection(self, host: str | None) -> bool:
        """Count a new connection from ``host``; ``False`` (nothing counted)
        if it is over the connection limits."""
        key = host or ""
        if (self.connections >= self.max_clients + self.reserve
                or self._connections[key] >= self.max_per_ip + self.reserve):
            return False
        self.connections += 1
        self._connections[key] += 1
        return True

    def close_connection(self, host: str | None) -> None:
        """Forget a connection counted by :meth:`open_connection`."""
        self.connections -= 1
        _decrement(self._connections, host or "")

    # Viewers are counted as connections are, but against the limits
    # without the reserve (kept for refused connections to be answered):
    # alike in shape, two different limits.
    def add_viewer(self, host: str | None) -> bool:
        """Count a new viewer from ``host``; ``False`` (nothing counted) if
        it is over the viewer limits."""
        key = host or ""
        if self.viewers >= self.max_clients or self._viewers[key] >= self.max_per_ip:
            return False
        self.viewers += 1
        self._viewers[key] += 1
        return True

    def remove_viewer(self, host: str | None) -> None:
        """Forget a viewer counted by :meth:`add_viewer`."""
        self.viewers -= 1
        _decrement(self._viewers, host or "")


def _decrement(counter: Counter[str], key: str) -> None:
    # Drop zero entries: the counters stay as small as the set of addresses
    # connected now, whatever came before.
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
