"""The stream source: fixed-size stamped buffers written to stdout (a pipe).

``python _source.py --size 1316 --rate 2000000 --seconds 30``

Each buffer starts with the header of :mod:`_common` (sequence number,
CLOCK_MONOTONIC nanoseconds at write time, magic) and is padded to ``--size``.
``--rate`` is the stream rate in bytes per second; 0 writes as fast as the
pipe accepts. With ``--prime N`` the source first writes N buffers per second
(so that clients can connect to a server that is not saturated yet) and
switches to ``--rate`` when a line ``go`` arrives on stdin; EOF on stdin
stops it.

Writes are kept whole: before a write the source checks (FIONREAD) that the
pipe has room for all of it, so the write never blocks half-way and the
server's reader (``fdsrc blocksize=SIZE`` for GStreamer, which keeps whatever
one ``read`` returns as a buffer) always finds whole buffers in the pipe. The
stream each server sees is therefore aligned on buffer boundaries.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import os
import select
import sys
import termios
import time

from _common import HEADER, HEADER_SIZE, MAGIC

_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def _unread(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]


class _Control:
    """Non-blocking look at stdin: ``go`` lines and EOF, at most every 10 ms."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.next_check = 0
        self.go = fd is None
        self.eof = False

    def poll(self, now: int) -> None:
        if self.fd is None or now < self.next_check:
            return
        self.next_check = now + 10_000_000
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 4096)
            if not data:
                self.eof = True
                self.fd = None
                return
            if b"go" in data:
                self.go = True


def run(fd: int, size: int, rate: float, seconds: float, batch_bytes: int,
        prime: float, control: _Control) -> int:
    """Write for ``seconds``; returns the number of buffers written."""
    try:
        capacity = fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except OSError:  # not a pipe (a file, a tty): no gating needed
        capacity = 0
    # Half the pipe, so that page rounding never makes a write block; a
    # single buffer may use an empty pipe whole.
    room = capacity // 2
    if capacity and size > capacity:
        raise SystemExit(f"_source: buffer size {size} > pipe capacity {capacity}")
    per_write = max(1, batch_bytes // size)
    batch = bytearray(size * per_write)
    for i in range(per_write):
        HEADER.pack_into(batch, i * size, 0, 0, MAGIC)
    view = memoryview(batch)
    pack = HEADER.pack_into
    now_ns = time.monotonic_ns
    deadline = now_ns() + int(seconds * 1e9)
    target_ns = size * 1e9 / rate if rate > 0 else 0.0
    if prime > 0 and (not target_ns or target_ns < 1e9 / prime):
        interval_ns = 1e9 / prime  # until "go"
    else:
        interval_ns = target_ns
        control.go = True
    start = now_ns()
    base = seq = 0  # the schedule counts buffers from `base`
    while True:
        now = now_ns()
        if now >= deadline:
            break
        control.poll(now)
        if control.eof:
            break
        if control.go and interval_ns != target_ns:
            interval_ns, start, base = target_ns, now, seq
        if interval_ns:
            due = int((now - start) / interval_ns) + 1 - (seq - base)
            if due <= 0:
                wait = start + ((seq - base) * interval_ns) - now
                time.sleep(min(wait / 1e9, 0.005))
                continue
            max_behind = max(1, int(0.05e9 / interval_ns))
            if due > max_behind:  # fell behind (server not reading): skip ahead
                start += int((due - max_behind) * interval_ns)
                due = max_behind
            n = min(due, per_write)
        else:
            n = per_write
        if capacity:
            unread = _unread(fd)
            fits = (room - unread) // size if room >= size else (1 if unread == 0 else 0)
            if fits <= 0:
                time.sleep(0.0002)
                continue
            n = min(n, fits)
        now = now_ns()
        for i in range(n):
            pack(batch, i * size, seq + i, now, MAGIC)
        chunk = view[: n * size]
        while chunk:
            written = os.write(fd, chunk)
            chunk = chunk[written:]
        seq += n
    return seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="bytes/s; 0: unpaced")
    parser.add_argument("--seconds", type=float, required=True, help="stop after this long")
    parser.add_argument("--batch-bytes", type=int, default=65536)
    parser.add_argument("--prime", type=float, default=0.0, metavar="BUFFERS/S",
                        help="rate until 'go' on stdin (default: none, --rate at once)")
    args = parser.parse_args()
    if args.size < HEADER_SIZE:
        parser.error(f"--size must be >= {HEADER_SIZE}")
    fd = sys.stdout.fileno()
    try:
        control = _Control(sys.stdin.fileno() if args.prime > 0 else None)
        count = run(fd, args.size, args.rate, args.seconds, args.batch_bytes, args.prime,
                    control)
    except (BrokenPipeError, KeyboardInterrupt):
        return
    print(f"_source: wrote {count} buffers of {args.size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
