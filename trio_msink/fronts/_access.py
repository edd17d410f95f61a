"""Who may connect to the fronts, and how many: the policy, without I/O.

Plain synchronous Python (no Trio): the fronts and the accept loop ask it
questions at the points where they decide (a connection accepted, a request
head parsed, a WebSocket handshake received) and act on the answer. The
rules, their defaults and why are in docs/security.md.

* :class:`Tokens`: the accepted tokens, fixed ones and a token file that
  can be re-read; a presented token is compared against each in constant
  time (``hmac.compare_digest`` of SHA-256 digests, so the time depends on
  neither the token nor its length), and tokens are never logged.
* :class:`Admission`: counts connections and viewers, in total and per
  address, against the limits; the operator's requests have a reserve of
  connections above the viewers' limit.
* :class:`Gate`: the two together with the address list (``--allow``) and
  the WebSocket origins (``--ws-origin``); a front asks it
  :meth:`Gate.enter` and gets a :class:`Refusal` or a slot.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "DEFAULT_MAX_CLIENTS_CAP",
    "FD_OVERHEAD",
    "OPERATOR_RESERVE",
    "RETRY_AFTER",
    "Admission",
    "Front",
    "Gate",
    "Refusal",
    "Role",
    "Tokens",
    "default_max_clients",
    "host_of",
    "parse_networks",
    "presented_token",
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
#: The default ``--max-clients`` is also capped here: beyond this many
#: viewers one process is CPU-bound anyway (see docs/performance.md), and a
#: hard limit of a million descriptors should not mean a million viewers.
DEFAULT_MAX_CLIENTS_CAP = 10_000
#: Seconds a refused viewer is told to wait (``Retry-After``).
RETRY_AFTER = 5


class Role(enum.Enum):
    """What a request is for: watching the stream, or the operator's view."""

    VIEWER = "viewer"
    OPERATOR = "operator"


class Front(enum.Enum):
    """How a client arrived: which checks apply (a raw TCP client carries no
    token; only a WebSocket handshake carries a browser's ``Origin``)."""

    TCP = "tcp"
    HTTP = "http"
    WEBSOCKET = "ws"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a client is turned away, and how to say so.

    ``status`` is the HTTP status (401, 403, 503) for an HTTP response or a
    WebSocket handshake refused; ``close_code`` the WebSocket close code for
    a client refused after the handshake (1013, "try again later"), else
    ``None``; ``headers`` the extra response headers (``WWW-Authenticate``,
    ``Retry-After``); ``message`` a short text for the body (never a token).
    """

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()
    close_code: int | None = None


_MISSING = Refusal(401, "a token is needed (Authorization: Bearer, or ?token=)",
                   (("WWW-Authenticate", 'Bearer realm="trio-msink"'),))
_WRONG = Refusal(403, "this token is not accepted here",
                 (("WWW-Authenticate", 'Bearer realm="trio-msink", error="invalid_token"'),))
_NO_ADMIN = Refusal(403, "the operator's pages need --admin-token, which is not set")
_ORIGIN = Refusal(403, "WebSocket connections from this origin are not allowed (--ws-origin)")
_FULL = Refusal(503, "too many clients, try again later",
                (("Retry-After", str(RETRY_AFTER)),), close_code=1013)


def default_max_clients(fd_limit: int) -> int:
    """The default ``--max-clients`` for a process allowed ``fd_limit`` open
    descriptors: ``fd_limit - FD_OVERHEAD - OPERATOR_RESERVE``, at least 1
    and at most :data:`DEFAULT_MAX_CLIENTS_CAP`. Every client holds one
    descriptor (a TLS client too), so the server refuses viewers before the
    process runs out of descriptors, with the reserve left for the operator.
    """
    return max(1, min(DEFAULT_MAX_CLIENTS_CAP, fd_limit - FD_OVERHEAD - OPERATOR_RESERVE))


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


class Tokens:
    """A set of accepted tokens: ``tokens`` given once, plus the lines of
    ``path`` (one token a line; blank lines and lines starting with ``#``
    are ignored; surrounding white space is not part of a token).

    Only digests are kept. :meth:`reload` re-reads the file; a file that
    cannot be read leaves the previous tokens in force. Raises
    :exc:`ValueError` for an empty token or one with white space inside,
    and :exc:`OSError` when the file cannot be read at construction.
    """

    def __init__(self, tokens: Iterable[str] = (), path: str | None = None) -> None:
        self._fixed = [_digest(_checked_token(token)) for token in tokens]
        self.path = path
        self._from_file: list[bytes] = []
        self._stamp: tuple[int, int, int] | None = None
        if path is not None:
            self.reload()

    @property
    def enabled(self) -> bool:
        """Whether tokens are required at all (some were given, or a file)."""
        return bool(self._fixed) or self.path is not None

    def __len__(self) -> int:
        return len(self._fixed) + len(self._from_file)

    def matches(self, presented: str | bytes) -> bool:
        """Whether ``presented`` is one of the tokens. Every token is
        compared, in constant time, whatever matches."""
        digest = _digest(presented)
        found = False
        for token in (*self._fixed, *self._from_file):
            found |= hmac.compare_digest(digest, token)
        return found

    def reload(self) -> None:
        """Re-read the token file (no-op without one). Raises :exc:`OSError`
        if it cannot be read and :exc:`ValueError` for a malformed token;
        the previous tokens then stay in force."""
        if self.path is None:
            return
        with open(self.path, encoding="utf-8") as file:
            stat = os.fstat(file.fileno())
            lines = file.read().splitlines()
        tokens = [line.strip() for line in lines]
        self._from_file = [_digest(_checked_token(token, self.path)) for token in tokens
                           if token and not token.startswith("#")]
        self._stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def changed(self) -> bool:
        """Whether the token file was replaced or modified since it was last
        read (a file that is gone counts as unchanged: nothing to re-read)."""
        if self.path is None:
            return False
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size) != self._stamp


def _checked_token(token: str, source: str | None = None) -> str:
    where = f" in {source}" if source else ""
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"a token must be non-empty without white space{where}")
    return token


def presented_token(target: bytes | str | None,
                    headers: Iterable[tuple[bytes | str, bytes | str]]) -> str | None:
    """The token a request presents: ``Authorization: Bearer TOKEN``, else
    the ``token`` query parameter of ``target``; ``None`` if neither."""
    for name, value in headers:
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        if name.lower() != "authorization":
            continue
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if target is None:
        return None
    if isinstance(target, bytes):
        target = target.decode("latin-1")
    values = parse_qs(urlsplit(target).query).get("token")
    return values[0] if values else None


def _header(headers: Iterable[tuple[bytes | str, bytes | str]], wanted: str) -> str | None:
    for name, value in headers:
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        if name.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Sequence[str]) -> list[Network]:
    """``["127.0.0.1", "10.0.0.0/8", "::1"]`` as networks (a bare address is
    a one-address network). Raises :exc:`ValueError` naming a bad entry."""
    networks: list[Network] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an address or network (CIDR)") from None
    return networks


def host_of(address: str | None) -> str | None:
    """The host of a ``"host:port"`` / ``"[v6]:port"`` peer address."""
    if address is None:
        return None
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if ":" in address else address


def _ip(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if host is None:
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:10.1.2.3 on a dual-stack socket is 10.1.2.3
    return ip


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


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int


def _parse_origin(origin: str) -> _Origin | None:
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return _Origin(parts.scheme, parts.hostname,
                   port if port is not None else (443 if parts.scheme == "https" else 80))


class Gate:
    """Every access rule of the fronts in one object.

    ``tokens`` admit viewers (when enabled), ``admin_tokens`` the operator
    and viewers alike; ``allow`` lists the networks that may connect at all
    (empty: any); ``ws_origins`` the browser origins (``scheme://host:port``,
    or ``*``) a WebSocket may come from besides the server's own pages (see
    :meth:`origin_allowed`); ``admission`` the limits (``None``: no limit).
    """

    def __init__(self, *, tokens: Tokens | None = None, admin_tokens: Tokens | None = None,
                 allow: Sequence[str] = (), ws_origins: Sequence[str] = (),
                 admission: Admission | None = None) -> None:
        self.tokens = tokens if tokens is not None else Tokens()
        self.admin_tokens = admin_tokens if admin_tokens is not None else Tokens()
        self.allow = parse_networks(allow)
        self.any_origin = "*" in ws_origins
        self.ws_origins: set[_Origin] = set()
        for origin in ws_origins:
            if origin == "*":
                continue
            parsed = _parse_origin(origin)
            if parsed is None:
                raise ValueError(f"{origin!r} is not an origin (http[s]://HOST[:PORT])")
            self.ws_origins.add(parsed)
        self.admission = admission
        #: Ports the server's own pages are served on (the HTTP front's):
        #: their origin may open WebSockets. Set once the fronts listen.
        self.page_ports: set[int] = set()
        #: Hosts the fronts listen on (their origins may open WebSockets).
        self.listen_hosts: set[str] = set()

    # -- addresses --------------------------------------------------------------
    def address_allowed(self, host: str | None) -> bool:
        """Whether a peer at ``host`` may connect (``--allow``); a peer
        without an IP address (a Unix socket) is allowed only without a list."""
        if not self.allow:
            return True
        ip = _ip(host)
        return ip is not None and any(ip in network for network in self.allow
                                      if network.version == ip.version)

    # -- tokens ------------------------------------------------------------------
    @property
    def tokens_enabled(self) -> bool:
        """Whether any token is configured (viewer or operator)."""
        return self.tokens.enabled or self.admin_tokens.enabled

    def authorize(self, role: Role, target: bytes | str | None,
                  headers: Iterable[tuple[bytes | str, bytes | str]]) -> Refusal | None:
        """The refusal for a request of ``role`` with this target and these
        headers, or ``None`` if its token (if one is needed) is accepted.

        Viewers need a viewer or operator token when viewer tokens are set;
        the operator needs an operator token when any tokens are set. A
        missing token is 401, a wrong one 403.
        """
        needed = self.tokens_enabled if role is Role.OPERATOR else self.tokens.enabled
        if not needed:
            return None
        token = presented_token(target, headers)
        if token is None:
            return _MISSING
        if role is Role.OPERATOR and not self.admin_tokens.enabled:
            return _NO_ADMIN
        admitted = self.admin_tokens.matches(token)
        if role is Role.VIEWER:
            admitted |= self.tokens.matches(token)  # both compared: constant time
        return None if admitted else _WRONG

    # -- WebSocket origin ----------------------------------------------------------
    def origin_allowed(self, origin: str | None, ws_port: int | None = None) -> bool:
        """Whether a WebSocket handshake with this ``Origin`` header may
        proceed. No ``Origin`` (a player, a script): yes. A browser page: if
        its origin is listed in ``ws_origins`` (or that is ``*``), or it is
        one of the server's own pages: host ``localhost``, a loopback
        address or a host the fronts listen on, and port ``ws_port`` or one
        of :attr:`page_ports`. The ``Host`` header is not trusted for this:
        a DNS-rebinding page controls it.
        """
        if origin is None or self.any_origin:
            return True
        parsed = _parse_origin(origin)
        if parsed is None:
            return False  # "null" (a sandboxed or file:// page), or garbage
        if parsed in self.ws_origins:
            return True
        ports = self.page_ports | ({ws_port} if ws_port is not None else set())
        if parsed.port not in ports:
            return False
        ip = _ip(parsed.host.strip("[]"))
        return (parsed.host == "localhost" or (ip is not None and ip.is_loopback)
                or parsed.host.strip("[]") in self.listen_hosts)

    # -- the one question the fronts ask ----------------------------------------------
    def check(self, front: Front, role: Role, host: str | None, target: bytes | str | None,
              headers: Iterable[tuple[bytes | str, bytes | str]],
              ws_port: int | None = None) -> Refusal | None:
        """Tokens and origin for a request (no counting): the refusal, or
        ``None``. ``host`` is the peer's address, ``ws_port`` the port a
        WebSocket client connected to."""
        headers = list(headers)
        if front is Front.WEBSOCKET and not self.origin_allowed(_header(headers, "origin"),
                                                                ws_port):
            return _ORIGIN
        if front is Front.TCP:
            return None  # cannot carry a token: --allow is its rule
        return self.authorize(role, target, headers)

    @contextmanager
    def enter(self, front: Front, role: Role, host: str | None,
              target: bytes | str | None = None,
              headers: Iterable[tuple[bytes | str, bytes | str]] = (),
              ws_port: int | None = None) -> Iterator[Refusal | None]:
        """:meth:`check`, then for a viewer a place among the viewers for the
        ``with`` block: yields the refusal (403, 401, 503) or ``None``::

            with gate.enter(Front.HTTP, Role.VIEWER, host, target, headers) as refusal:
                if refusal is not None:
                    ...  # answer refusal.status; nothing is counted
                else:
                    ...  # serve; the viewer is counted until the block ends
        """
        refusal = self.check(front, role, host, target, headers, ws_port)
        counted = (refusal is None and role is Role.VIEWER and self.admission is not None)
        if counted:
            assert self.admission is not None
            if not self.admission.add_viewer(host):
                refusal, counted = _FULL, False
        try:
            yield refusal
        finally:
            if counted:
                assert self.admission is not None
                self.admission.remove_viewer(host)
