"""Tokens: which ones are accepted, and which one a request presents
(docs/security.md). Plain synchronous Python."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

__all__ = ["Tokens", "header_value", "presented_token"]


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

    @classmethod
    def from_digests(cls, digests: Iterable[str], path: str | None = None) -> Tokens:
        """Tokens given as the hex digests of :meth:`fixed_digests` (so that
        another process can check them without ever seeing them), plus the
        file ``path``. Raises :exc:`ValueError` for a malformed digest."""
        tokens = cls(path=path)
        tokens._fixed = [bytes.fromhex(digest) for digest in digests]
        if any(len(digest) != hashlib.sha256().digest_size for digest in tokens._fixed):
            raise ValueError("not a SHA-256 digest")
        return tokens

    def fixed_digests(self) -> list[str]:
        """The hex digests of the tokens given once (not the file's)."""
        return [digest.hex() for digest in self._fixed]

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


def header_value(headers: Iterable[tuple[bytes | str, bytes | str]], wanted: str) -> str | None:
    """The value of the first header named ``wanted`` (lower case), or ``None``."""
    for name, value in headers:
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        if name.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None
