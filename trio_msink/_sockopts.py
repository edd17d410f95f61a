"""Client sockets: finding the socket under a stream, and the options the
sink sets on it (DSCP)."""

from __future__ import annotations

import logging
import socket

import trio

__all__ = ["apply_dscp", "find_socket"]

logger = logging.getLogger("trio_msink")


def find_socket(stream: object) -> socket.socket | trio.socket.SocketType | None:
    """The socket under ``stream``, looking through ``SSLStream``-like layers
    (``transport_stream``, at most four deep); ``None`` when there is none
    (memory streams, pipes)."""
    for _ in range(4):
        sock = getattr(stream, "socket", None)
        if sock is not None:
            return sock  # type: ignore[no-any-return]
        stream = getattr(stream, "transport_stream", None)
        if stream is None:
            return None
    return None


def apply_dscp(stream: object, dscp: int) -> None:
    """Stamp ``dscp`` on the stream's socket; failures are logged, never fatal."""
    if dscp < 0:
        return
    sock = find_socket(stream)
    if sock is None:
        return
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        elif sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
    except OSError:
        logger.warning("could not set DSCP %d on %r", dscp, stream, exc_info=True)
