"""The command's access control, admission limits and TLS (docs/security.md):
the flags, and the objects the server builds from them before it listens.

The rules themselves live in the fronts (:mod:`trio_msink.fronts._access`,
:mod:`trio_msink.fronts._accept`); this module turns the flags into them,
raises the descriptor limit, and reloads the token file and the certificate
while the server runs (on SIGHUP, and the token file when it changes).
"""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ..fronts._accept import AcceptLoop
from ..fronts._access import (
    DEFAULT_MAX_CLIENTS_CAP,
    FD_OVERHEAD,
    OPERATOR_RESERVE,
    Admission,
    Gate,
    Tokens,
    default_max_clients,
    parse_networks,
)
from ._errors import CommandError

__all__ = [
    "TOKEN_FILE_POLL",
    "Security",
    "TlsContext",
    "add_security_flags",
    "raise_fd_limit",
    "secure_url",
]

logger = logging.getLogger("trio_msink.cli")

#: Seconds between checks of the token file for changes (a stat call).
TOKEN_FILE_POLL = 1.0
_SCHEMES = {"tcp": "tls", "http": "https", "ws": "wss"}
# OpenSSL's reasons for refusing a certificate and key, in words ("PEM lib"
# is what it says for a file that is not PEM, or a certificate without key).
_SSL_REASONS = {
    "None": "not a PEM certificate with its private key",
    "PEM_lib": "not a PEM certificate with its private key",
    "KEY_VALUES_MISMATCH": "the key does not belong to the certificate",
}


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _checked_by(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse ``type`` that keeps a flag's text once ``check`` (the
    object the server will build from it) accepts it, so that a bad value
    fails as the flag is parsed, with ``check``'s message."""
    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    return parse


_network = _checked_by(lambda text: parse_networks([text]))
_origin = _checked_by(lambda text: Gate(ws_origins=[text]))
_token = _checked_by(lambda text: Tokens([text]))


def add_security_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of docs/security.md: tokens, addresses, origins, limits, TLS."""
    group = parser.add_argument_group("access, limits and TLS (see docs/security.md)")
    # One declaration a flag, alike in shape by design.
    group.add_argument("--token", action="append", default=[], type=_token, metavar="TOKEN",
                       help="a token viewers must present (Authorization: Bearer, or "
                            "?token=); repeatable (default: none, anyone may watch)")
    group.add_argument("--token-file", metavar="FILE", default=None,
                       help="viewer tokens, one a line; re-read when it changes and on "
                            "SIGHUP (default: none)")
    group.add_argument("--admin-token", action="append", default=[], type=_token,
                       metavar="TOKEN",
                       help="the operator's token for /stats and the page (also admits "
                            "viewers); repeatable (default: none)")
    group.add_argument("--admin-token-file", metavar="FILE", default=None,
                       help="operator tokens, one a line; re-read as --token-file "
                            "(default: none)")
    group.add_argument("--allow", action="append", default=[], type=_network, metavar="CIDR",
                       help="admit only clients from this network, on every front; "
                            "repeatable (default: any address)")
    group.add_argument("--ws-origin", action="append", default=[], type=_origin,
                       metavar="ORIGIN",
                       help="a browser origin (https://host:port, or *) allowed to open "
                            "WebSockets besides the server's own pages; repeatable")
    group.add_argument("--max-clients", type=_count, default=None, metavar="N",
                       help="viewers over all fronts (default: the fd limit - "
                            f"{FD_OVERHEAD} - {OPERATOR_RESERVE}, at most "
                            f"{DEFAULT_MAX_CLIENTS_CAP})")
    group.add_argument("--max-clients-per-ip", type=_count, default=None, metavar="N",
                       help="viewers from one address (default: --max-clients)")
    group.add_argument("--tls-cert", metavar="FILE", default=None,
                       help="serve every front over TLS with this certificate chain (PEM)")
    group.add_argument("--tls-key", metavar="FILE", default=None,
                       help="the private key of --tls-cert (PEM; default: in --tls-cert)")


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit, as servers
    commonly do (nginx ``worker_rlimit_nofile``, systemd's advice for
    daemons); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        target = hard
        if hard == resource.RLIM_INFINITY:  # the kernel caps it at nr_open anyway
            target = 1 << 20
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.debug("cannot raise the fd limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def secure_url(url: str) -> str:
    """``tcp://`` → ``tls://``, ``http://`` → ``https://``, ``ws://`` → ``wss://``."""
    scheme, rest = url.split("://", 1)
    return f"{_SCHEMES.get(scheme, scheme)}://{rest}"


class TlsContext:
    """The server's TLS context, loaded from ``cert`` and ``key`` (PEM).

    :meth:`reload` loads them again; connections made afterwards use the
    new context, established ones keep the old. Raises
    :class:`CommandError` naming the flag and the file when they cannot be
    loaded.
    """

    def __init__(self, cert: str, key: str | None) -> None:
        self.cert = cert
        self.key = key
        self.context = self._load()

    def __call__(self) -> ssl.SSLContext:
        return self.context

    def _load(self) -> ssl.SSLContext:
        # ssl names neither the file nor the flag when one cannot be read:
        # open each first, so that the error line says which.
        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key)):
            if path is None:
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                why = (exc.strerror or str(exc)).lower()
                raise CommandError(f"{flag} {path}: {why}") from exc
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None)
            why = _SSL_REASONS.get(str(reason), str(reason or exc).replace("_", " ").lower())
            names = f"--tls-cert {self.cert}" + (f" --tls-key {self.key}" if self.key else "")
            raise CommandError(f"{names}: cannot load the certificate and key ({why})") from exc
        return context

    def reload(self) -> None:
        """Load the certificate and key again (the old context stays in
        force if that fails: :class:`CommandError`)."""
        self.context = self._load()


def _share(limit: int, processes: int) -> int:
    return -(-limit // processes)  # rounded up: K processes never admit fewer in total


def _read_tokens(given: Sequence[str], path: str | None, flag: str) -> Tokens:
    try:
        return Tokens(given, path)
    except OSError as exc:
        raise CommandError(f"{flag} {path}: {(exc.strerror or str(exc)).lower()}") from exc
    except ValueError as exc:
        raise CommandError(f"{flag}: {exc}") from exc


def _reload_tokens(flag: str, tokens: Tokens) -> None:
    try:
        tokens.reload()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        logger.warning("%s %s: %s; the previous tokens stay in force", flag, tokens.path,
                       why.lower())
        return
    logger.info("%s %s reloaded: %d tokens", flag, tokens.path, len(tokens))


@dataclass
class Security:
    """What the server needs from the flags: the :class:`Gate` the fronts
    consult, the TLS context (``None``: plain), the limits in force."""

    gate: Gate
    tls: TlsContext | None
    fd_limit: int
    #: Called after each SIGHUP's reload (``--workers``: pass it on).
    on_sighup: list[Callable[[], object]] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace, fronts: Sequence[str]) -> Security:
        """Build it (raising the fd limit first). Raises
        :class:`CommandError` for a token file or certificate that cannot be
        read, or ``--tls-key`` without ``--tls-cert``."""
        if args.tls_key is not None and args.tls_cert is None:
            raise CommandError("--tls-key needs --tls-cert")
        tokens = _read_tokens(args.token, args.token_file, "--token-file")
        admin_tokens = _read_tokens(args.admin_token, args.admin_token_file,
                                    "--admin-token-file")
        fd_limit = raise_fd_limit()
        max_clients = args.max_clients or default_max_clients(fd_limit)
        max_per_ip = args.max_clients_per_ip or max_clients
        processes = max(1, getattr(args, "workers", 1))
        # With --workers every process serves its share of the clients
        # (dealt round robin) and counts only its own: each gets 1/K of the
        # limits, rounded up; its descriptors are its own too.
        admission = Admission(_share(max_clients, processes), _share(max_per_ip, processes))
        gate = Gate(tokens=tokens, admin_tokens=admin_tokens, allow=args.allow,
                    ws_origins=args.ws_origin, admission=admission)
        tls = TlsContext(args.tls_cert, args.tls_key) if args.tls_cert is not None else None
        security = cls(gate, tls, fd_limit)
        security._warn(fronts)
        return security

    def worker_config(self) -> dict[str, Any]:
        """What a ``--workers`` process needs to build the same rules
        (:meth:`from_worker_config`), as JSON: tokens only as digests, the
        files and the certificate as paths."""
        gate = self.gate
        admission = gate.admission
        assert admission is not None
        return {
            "tokens": gate.tokens.fixed_digests(), "token_file": gate.tokens.path,
            "admin_tokens": gate.admin_tokens.fixed_digests(),
            "admin_token_file": gate.admin_tokens.path,
            "allow": [str(network) for network in gate.allow],
            "ws_origins": gate.ws_origin_specs, "page_ports": sorted(gate.page_ports),
            "listen_hosts": sorted(gate.listen_hosts),
            "max_clients": admission.max_clients, "max_per_ip": admission.max_per_ip,
            "tls_cert": self.tls.cert if self.tls is not None else None,
            "tls_key": self.tls.key if self.tls is not None else None,
            "fd_limit": self.fd_limit,
        }

    @classmethod
    def from_worker_config(cls, config: dict[str, Any]) -> Security:
        """The rules of the main process, in a worker (see
        :meth:`worker_config`). Raises :class:`CommandError` as
        :meth:`from_args`."""
        tokens = Tokens.from_digests(config["tokens"], config["token_file"])
        admin_tokens = Tokens.from_digests(config["admin_tokens"], config["admin_token_file"])
        gate = Gate(tokens=tokens, admin_tokens=admin_tokens, allow=config["allow"],
                    ws_origins=config["ws_origins"],
                    admission=Admission(config["max_clients"], config["max_per_ip"]))
        gate.page_ports = set(config["page_ports"])
        gate.listen_hosts = set(config["listen_hosts"])
        cert = config["tls_cert"]
        tls = TlsContext(cert, config["tls_key"]) if cert is not None else None
        return cls(gate, tls, config["fd_limit"])

    def _warn(self, fronts: Sequence[str]) -> None:
        gate = self.gate
        if gate.tokens.enabled and "tcp" in fronts and not gate.allow:
            logger.warning("the TCP front cannot carry a token: anyone who reaches it can "
                           "watch (limit it with --allow)")
        if gate.tokens.enabled and not gate.admin_tokens.enabled:
            logger.warning("/stats and the page need --admin-token, which is not set: "
                           "they refuse everyone")

    def accept_loop(self, handshake_timeout: float) -> AcceptLoop:
        """An accept loop for the fronts with this gate and TLS."""
        return AcceptLoop(self.gate, self.tls, handshake_timeout)

    def url(self, url: str) -> str:
        """The URL a front prints: its TLS scheme when TLS is on."""
        return secure_url(url) if self.tls is not None else url

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        """Reload on SIGHUP (token file and certificate) and the token file
        when it changes, until cancelled. Failures are logged and leave the
        previous tokens or certificate in force. Connections already
        admitted are never affected."""
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            files = {"--token-file": self.gate.tokens, "--admin-token-file": self.gate.admin_tokens}
            files = {flag: tokens for flag, tokens in files.items() if tokens.path is not None}
            async with trio.open_nursery() as nursery:
                if files:
                    nursery.start_soon(self._poll_token_files, files)
                async for _ in signals:
                    logger.info("SIGHUP: reloading")
                    for flag, tokens in files.items():
                        _reload_tokens(flag, tokens)
                    self._reload_tls()
                    for hook in self.on_sighup:
                        hook()

    async def _poll_token_files(self, files: dict[str, Tokens]) -> None:
        while True:
            await trio.sleep(TOKEN_FILE_POLL)
            for flag, tokens in files.items():
                if tokens.changed():
                    _reload_tokens(flag, tokens)

    def _reload_tls(self) -> None:
        if self.tls is None:
            return
        try:
            self.tls.reload()
        except CommandError as exc:
            logger.warning("%s; the previous certificate stays in force", exc)
            return
        logger.info("--tls-cert %s reloaded", self.tls.cert)
