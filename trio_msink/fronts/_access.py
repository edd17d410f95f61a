"""Who may connect to the fronts, and how many: the policy, without I/O.

Plain synchronous Python (no Trio): the fronts and the accept loop ask it
questions at the points where they decide (a connection accepted, a request
head parsed, a WebSocket handshake received) and act on the answer. The
rules, their defaults and why are in docs/security.md.

* ``Tokens`` (in ``_tokens.py``): the accepted tokens, fixed ones and a
  token file that can be re-read; a presented token is compared against
  each in constant time (``hmac.compare_digest`` of SHA-256 digests, so the
  time depends on neither the token nor its length), and tokens are never
  logged.
* ``Admission`` (in ``_admission.py``): counts connections and viewers, in
  total and per address, against the limits; the operator's requests have
  a reserve of connections above the viewers' limit.
* :class:`Gate`: the two together with the address list (``--allow``) and
  the WebSocket origins (``--ws-origin``); a front asks it
  :meth:`Gate.enter` and gets a :class:`Refusal` or a slot.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._admission import (
    DEFAULT_MAX_CLIENTS_CAP,
    FD_OVERHEAD,
    OPERATOR_RESERVE,
    Admission,
    default_max_clients,
)
from ._tokens import Tokens, header_value, presented_token

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
        #: The origins as given (``ws_origins``).
        self.ws_origin_specs = list(ws_origins)
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
        if front is Front.WEBSOCKET and not self.origin_allowed(header_value(headers, "origin"),
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
