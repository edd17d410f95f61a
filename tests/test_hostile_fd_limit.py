"""Hostile clients at the process's descriptor limit: servers started with
a low ``ulimit -n`` (64) meet more viewers than they have descriptors.

Judged by the criteria of tests/_hostile.py, and, while the attackers
stay: the server writes no traceback and at most a few lines about them
(not one per refused viewer or failed accept), and the steady viewer keeps
decoding; once they leave, fresh clients are served within 1 s again.

* With the default ``--max-clients`` (derived from the fd limit) the
  server refuses the viewers it has no room for before it runs out of
  descriptors, and ``/stats`` still answers (docs/security.md).
* With a ``--max-clients`` above what the descriptors allow, the limit is
  reached anyway: the accept loop backs off quietly and resumes once
  descriptors are free.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio
from _hostile import (
    FRESH_WITHIN,
    HostileServer,
    close_all,
    connect_many,
    fds,
    raise_fd_limit,
    serving,
    small_receive_buffer,
)

# The servers' RLIMIT_NOFILE: about 15 are in use at rest (listeners, the
# test source, the viewer), so some 50 viewers reach the limit.
NOFILE = 64
ATTACKERS = 150
# Lines the server may write about the attack (beside one line per client
# added or removed): a rate-limited notice, not a storm.
LIMIT_LINES = 10
HOLD = 4.0
# tcpi_state values (linux/tcp_states.h).
_TCP_CLOSE, _TCP_CLOSE_WAIT = 7, 8
ARGS = ["serve", "test", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"]


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    """Default admission limits."""
    raise_fd_limit(4096)
    with serving(ARGS, fronts=2, nofile=NOFILE) as running:
        yield running


@pytest.fixture(scope="module")
def unlimited() -> Iterator[HostileServer]:
    """A --max-clients the descriptors cannot hold."""
    raise_fd_limit(4096)
    with serving([*ARGS, "--max-clients", "1000"], fronts=2, nofile=NOFILE) as running:
        yield running


def other_lines(stderr: bytes) -> list[bytes]:
    """The lines of ``stderr`` that are not a client added or removed."""
    return [line for line in stderr.splitlines()
            if b"client added" not in line and b"client removed" not in line]


def closed_by_server(stream: trio.SocketStream) -> bool:
    """Whether the server has closed (FIN: CLOSE_WAIT) or reset (CLOSE)
    this connection, read from the kernel without reading the stream."""
    state = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state in (_TCP_CLOSE, _TCP_CLOSE_WAIT)


async def http_status(port: int, path: str) -> bytes:
    """The status line of ``GET path``, within 1 s of connecting."""
    with trio.fail_after(FRESH_WITHIN):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                chunk = await stream.receive_some()
                assert chunk, "closed without an answer"
                head += chunk
    return head.split(b"\r\n", 1)[0]


async def attack(server: HostileServer) -> tuple[int, int, bytes, list[trio.SocketStream]]:
    """ATTACKERS TCP viewers that never read, held HOLD seconds: the
    server's descriptors then, how many viewers it closed, what it wrote
    meanwhile, and the viewers (for the caller to close)."""
    before = len(server.stderr)
    held = await connect_many(server.port("tcp"), ATTACKERS, setup=small_receive_buffer)
    await trio.sleep(HOLD)
    server.assert_up()
    at_limit = fds(server.pid)
    refused = sum(closed_by_server(stream) for stream in held)
    print(f"attack: {at_limit} descriptors of {NOFILE}, {refused} viewers refused")
    return at_limit, refused, bytes(server.stderr[before:]), held


def assert_quiet(during: bytes) -> None:
    assert b"Traceback" not in during, (
        f"{during.count(b'Traceback')} tracebacks in {HOLD:g} s, the first: "
        + during[during.index(b"Traceback") :][:1500].decode(errors="replace"))
    lines = other_lines(during)
    assert len(lines) <= LIMIT_LINES, (
        f"{len(lines)} lines in {HOLD:g} s: " + b"\n".join(lines[:12]).decode(errors="replace"))


async def test_viewers_beyond_the_default_limit_are_refused(server: HostileServer) -> None:
    """150 viewers against 64 descriptors and the default --max-clients:
    those without room are closed at once, before the descriptors run out,
    and /stats answers meanwhile."""
    base = await server.baseline()
    with trio.fail_after(90):
        at_limit, refused, during, held = await attack(server)
        stats = await http_status(server.port("http"), "/stats")
        await close_all(held)
        await server.fresh_client()
    assert refused > 0 and at_limit < NOFILE, "the default limit let the descriptors run out"
    assert stats == b"HTTP/1.1 200 OK", stats
    assert_quiet(during)
    await server.check_recovered(base)


async def test_the_fd_limit_reached_anyway(unlimited: HostileServer) -> None:
    """150 viewers against 64 descriptors and --max-clients 1000: the
    descriptors run out, the server backs off quietly, and serves again
    once they are free."""
    server = unlimited
    base = await server.baseline()
    with trio.fail_after(90):
        at_limit, _, during, held = await attack(server)
        await close_all(held)
        await server.fresh_client()
    assert at_limit >= NOFILE - 5, "the attack did not reach the fd limit: it tests nothing"
    assert_quiet(during)
    await server.check_recovered(base)
