"""One client process: many TCP connections to the server, one ``selectors`` loop.

``python _clients.py --port P --size S --sockets K [--stalled 1] [--churn 0.1,0.5] [--ws]``

Protocol with the harness (line based):

* on stdout, ``ready CONNECTED FAILED`` once every initial connection is
  established (or has failed for good);
* on stdin, ``go T0 T1``: measure during ``[T0, T1]`` (CLOCK_MONOTONIC ns);
* at T1, one JSON line with the results on stdout, then exit. EOF on stdin or
  ``--max-seconds`` also end the process.

Every reading connection parses the stream by buffer position (the stream is
aligned: byte 0 of a connection is the start of a buffer). Of the complete
buffer headers in each ``recv`` at most ``--samples`` are decoded; each gives
a latency sample (now - embedded timestamp), weighted by its share of the
buffers in that ``recv``, and ``seq - buffer_index``: that offset grows by
exactly the number of buffers the connection never received, so loss is
counted without decoding every buffer.

With ``--ws`` each connection is a WebSocket client: it does the opening
handshake, then reads a stream of unmasked binary messages, one per buffer;
every message has the same frame header (the buffers have one size), so the
stream is still aligned, in units of header + buffer.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import json
import os
import random
import selectors
import socket
import sys
import time
from typing import Any

from _common import HEADER, HEADER_SIZE, MAGIC, latency_bin

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Conn:
    __slots__ = (
        "carry",
        "close_at",
        "connected",
        "first_ns",
        "first_off",
        "in_window",
        "initial",
        "last_off",
        "sock",
        "stalled",
        "start_ns",
        "total",
    )

    def __init__(self, sock: socket.socket, *, stalled: bool, initial: bool,
                 start_ns: int) -> None:
        self.sock = sock
        self.stalled = stalled
        self.initial = initial
        self.start_ns = start_ns  # when connect() was called
        self.connected = False
        self.first_ns = 0  # first byte received
        self.total = 0  # stream bytes received on this connection
        self.carry = b""  # start of a buffer header split across recv calls
        self.first_off: int | None = None  # seq - index at the first sample in the window
        self.last_off: int | None = None
        self.close_at = 0  # churn: when this session ends
        self.in_window = False  # churn: session started inside the window


class Stats:
    def __init__(self) -> None:
        self.bytes = 0
        self.buffers = 0
        self.lost = 0
        self.bad = 0
        self.drops = 0
        self.sessions = 0
        self.connect_fail = 0
        self.hist: dict[int, int] = {}
        self.ttfb_initial: list[int] = []
        self.ttfb_window: list[int] = []

    def close_session(self, conn: Conn) -> None:
        if conn.first_off is not None and conn.last_off is not None:
            self.lost += conn.last_off - conn.first_off
        conn.first_off = conn.last_off = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, required=True, help="buffer size of the stream")
    parser.add_argument("--sockets", type=int, required=True, help="connections (incl. stalled)")
    parser.add_argument("--stalled", type=int, default=0, help="of which never read")
    parser.add_argument("--churn", default="", metavar="MIN,MAX",
                        help="seconds a session lasts before reconnecting (default: no churn)")
    parser.add_argument("--rcvbuf", type=int, default=2 << 20, help="SO_RCVBUF of readers")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="initial connections waiting for their first byte at once")
    parser.add_argument("--samples", type=int, default=8, help="headers decoded per recv")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ws", action="store_true",
                        help="WebSocket clients: one binary message per buffer")
    return parser.parse_args(argv)


def ws_header_size(size: int) -> int:
    """Bytes of the frame header of an unmasked message of ``size`` bytes."""
    return 2 if size < 126 else 4 if size < 1 << 16 else 10


def ws_handshake(sock: socket.socket, host: str, port: int, timeout: float = 10.0) -> None:
    """The opening handshake on a connected blocking socket; the response is
    read exactly (what follows it is the first message). Raises OSError."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.settimeout(timeout)
    sock.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while (end := head.find(b"\r\n\r\n")) < 0:
        head = sock.recv(65536, socket.MSG_PEEK)
        if not head:
            raise ConnectionError("closed during the handshake")
        if (end := head.find(b"\r\n\r\n")) < 0:
            time.sleep(0.001)
    response = sock.recv(end + 4)
    if not response.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {response[:40]!r}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.host != "127.0.0.1":
        raise SystemExit("_clients: only 127.0.0.1 may be a target")
    size: int = args.size
    skip = ws_header_size(size) if args.ws else 0  # bytes before a buffer's header
    unit = size + skip  # stream bytes per buffer
    samples: int = max(1, args.samples)
    churn: tuple[float, float] | None = None
    if args.churn:
        lo, hi = (float(x) for x in args.churn.split(","))
        churn = (lo, hi)
    rng = random.Random(args.seed)
    now_ns = time.monotonic_ns
    hard_deadline = now_ns() + int(args.max_seconds * 1e9)
    sel = selectors.DefaultSelector()
    ctl = sys.stdin.fileno()
    os.set_blocking(ctl, False)
    sel.register(ctl, EVENT_READ, None)
    ctl_buf = b""
    addr = (args.host, args.port)
    stats = Stats()
    scratch = bytearray(1 << 20)
    view = memoryview(scratch)
    unpack_from = HEADER.unpack_from
    hist = stats.hist
    conns: set[Conn] = set()
    stalled_socks: list[socket.socket] = []
    retries = max(20, args.sockets)  # reconnect budget for initial connects
    to_connect = [True] * args.stalled + [False] * (args.sockets - args.stalled)
    in_flight = 0
    initial_pending = len(to_connect)
    ready_sent = False
    t0 = t1 = 0
    going = False

    # An initial connection is "in flight" from connect() until its first
    # byte arrives: the server has accepted it and streams to it. Keeping few
    # in flight keeps a short listen backlog (tcpserversink's is 5) from
    # overflowing, which would cost 1 s SYN retransmissions.
    def connect(stalled: bool, initial: bool) -> None:
        nonlocal in_flight
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if not stalled:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
        sock.setblocking(False)
        conn = Conn(sock, stalled=stalled, initial=initial, start_ns=now_ns())
        conn.in_window = going and t0 <= conn.start_ns <= t1
        in_flight += initial
        if args.ws:
            try:
                sock.setblocking(True)
                sock.settimeout(10.0)
                sock.connect(addr)
                ws_handshake(sock, args.host, args.port)
                err = 0
            except OSError:
                err = errno.ECONNREFUSED
            sock.setblocking(False)
        else:
            err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            failed(conn)
            return
        sel.register(sock, EVENT_WRITE, conn)

    def failed(conn: Conn) -> None:
        """Connecting failed, or the server closed before the first byte."""
        nonlocal in_flight, initial_pending, retries
        stats.connect_fail += 1
        if conn.initial:
            in_flight -= 1
            if retries > 0:
                retries -= 1
                to_connect.append(conn.stalled)
            else:
                initial_pending -= 1
        elif churn is not None:
            to_connect.append(conn.stalled)

    def joined(conn: Conn) -> None:
        """First byte (or readable, for a stalled client) on a connection."""
        nonlocal in_flight, initial_pending
        if conn.initial:
            in_flight -= 1
            initial_pending -= 1

    def established(conn: Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sel.unregister(conn.sock)
            conn.sock.close()
            failed(conn)
            return
        conn.connected = True
        sel.modify(conn.sock, EVENT_READ, conn)
        if conn.stalled:
            return
        conns.add(conn)
        if churn is not None and going:
            conn.close_at = conn.start_ns + int(rng.uniform(*churn) * 1e9)
            stats.sessions += conn.in_window

    def end_session(conn: Conn, dropped: bool) -> None:
        sel.unregister(conn.sock)
        conn.sock.close()
        conns.discard(conn)
        stats.close_session(conn)
        if not conn.first_ns:
            failed(conn)
            return
        if dropped and going:
            stats.drops += 1
        if churn is not None:
            to_connect.append(False)

    next_churn_check = 0
    while True:
        now = now_ns()
        if now >= hard_deadline or (going and now >= t1):
            break
        while to_connect and (in_flight < args.concurrency or ready_sent):
            connect(to_connect.pop(), initial=not ready_sent)
        if not ready_sent and initial_pending <= 0 and in_flight == 0 and not to_connect:
            ok = len(conns) + len(stalled_socks)
            sys.stdout.write(f"ready {ok} {args.sockets - ok}\n")
            sys.stdout.flush()
            ready_sent = True
        if churn is not None and going and now >= next_churn_check:
            next_churn_check = now + 2_000_000
            for conn in [c for c in conns if c.close_at and now >= c.close_at and c.first_ns]:
                end_session(conn, dropped=False)
        if going:
            timeout = min(0.005 if churn else 0.05, max(0.0, (t1 - now) / 1e9))
        else:
            timeout = 0.05
        for key, mask in sel.select(timeout):
            conn = key.data
            if conn is None:  # control channel
                try:
                    data = os.read(ctl, 4096)
                except BlockingIOError:
                    continue
                if not data:
                    return  # the harness went away
                ctl_buf += data
                while b"\n" in ctl_buf:
                    line, ctl_buf = ctl_buf.split(b"\n", 1)
                    words = line.split()
                    if words and words[0] == b"go":
                        t0, t1 = int(words[1]), int(words[2])
                        going = True
                        if churn is not None:
                            for c in conns:
                                c.close_at = now_ns() + int(rng.uniform(0.0, churn[1]) * 1e9)
                continue
            if mask & EVENT_WRITE:
                established(conn)
                continue
            if conn.stalled:  # readable once: accepted and streamed to; never read
                sel.unregister(conn.sock)
                stalled_socks.append(conn.sock)
                conn.first_ns = now_ns()
                joined(conn)
                continue
            k = len(conn.carry)
            if k:
                scratch[:k] = conn.carry
            try:
                n = conn.sock.recv_into(view[k:])
            except BlockingIOError:
                continue
            except OSError:
                end_session(conn, dropped=True)
                continue
            if n == 0:
                end_session(conn, dropped=True)
                continue
            now = now_ns()
            if not conn.first_ns:
                conn.first_ns = now
                joined(conn)
                ttfb_us = (now - conn.start_ns) // 1000
                if conn.initial:
                    stats.ttfb_initial.append(ttfb_us)
                elif conn.in_window:
                    stats.ttfb_window.append(ttfb_us)
            base = conn.total - k  # stream offset of scratch[0]
            end = conn.total + n
            conn.total = end
            if going and t0 <= now <= t1:
                stats.bytes += n
                first_b = -(-(base - skip) // unit)
                last_b = (end - HEADER_SIZE - skip) // unit
                count = last_b - first_b + 1
                if count > 0:
                    stats.buffers += count
                    if count <= samples:
                        picks: range | list[int] = range(first_b, last_b + 1)
                        weight, extra = 1, 0
                    else:
                        picks = [first_b + i * count // samples for i in range(samples)]
                        weight, extra = divmod(count, samples)
                    for b in picks:
                        seq, ts, magic = unpack_from(scratch, b * unit + skip - base)
                        if magic != MAGIC:
                            stats.bad += 1
                            continue
                        us = (now - ts) // 1000
                        bin_ = latency_bin(us)
                        hist[bin_] = hist.get(bin_, 0) + weight + extra
                        extra = 0
                        off = seq - b
                        if conn.first_off is None:
                            conn.first_off = off
                        conn.last_off = off
            # Keep the start of a header that this recv cut off.
            tail_start = (end - 1) // unit * unit
            if tail_start >= base and end - tail_start < skip + HEADER_SIZE:
                conn.carry = bytes(view[tail_start - base:end - base])
            else:
                conn.carry = b""

    if not ready_sent:
        ok = len(conns) + len(stalled_socks)
        sys.stdout.write(f"ready {ok} {args.sockets - ok}\n")
    for conn in list(conns):
        stats.close_session(conn)
        conn.sock.close()
    stalled_dropped = 0
    drain_deadline = time.monotonic() + 3.0
    for sock in stalled_socks:
        stalled_dropped += _was_dropped(sock, view, drain_deadline)
        sock.close()
    result: dict[str, Any] = {
        "bytes": stats.bytes, "buffers": stats.buffers, "lost": stats.lost,
        "bad": stats.bad, "drops": stats.drops, "sessions": stats.sessions,
        "connect_fail": stats.connect_fail, "hist": stats.hist,
        "ttfb_initial": stats.ttfb_initial, "ttfb_window": stats.ttfb_window,
        "readers": args.sockets - args.stalled, "stalled": len(stalled_socks),
        "stalled_dropped": stalled_dropped,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _was_dropped(sock: socket.socket, view: memoryview, deadline: float) -> int:
    """Drain a never-read socket: 1 if the server closed it, 0 if still open.

    A socket that keeps delivering past 64 MiB or the deadline counts as open.
    """
    got = 0
    try:
        while got < (64 << 20) and time.monotonic() < deadline:
            n = sock.recv_into(view)
            if n == 0:
                return 1
            got += n
    except BlockingIOError:
        return 0
    except OSError:
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
