"""Child processes of the harness: reading their lines with a deadline, stopping them."""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Sequence


class LineReader:
    """Line reader over several child stdouts, with deadlines."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self.procs = procs
        self.bufs = [b""] * len(procs)
        self.sel = selectors.DefaultSelector()
        for i, p in enumerate(procs):
            assert p.stdout is not None
            os.set_blocking(p.stdout.fileno(), False)
            self.sel.register(p.stdout, selectors.EVENT_READ, i)

    def wait_lines(self, prefix: bytes, deadline: float) -> list[bytes | None]:
        """Until every child has written a line starting with ``prefix`` (or the
        deadline); returns each child's first such line (``None``: none)."""
        def find(buf: bytes) -> bytes | None:
            for line in buf.split(b"\n")[:-1]:
                if line.startswith(prefix):
                    return line
            return None

        while time.monotonic() < deadline:
            if all(find(b) is not None for b in self.bufs):
                break
            for key, _ in self.sel.select(min(0.2, max(0.0, deadline - time.monotonic()))):
                i = key.data
                try:
                    chunk = os.read(key.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.sel.unregister(key.fileobj)
                    self.bufs[i] += b"\n" + prefix + b" EOF\n"  # stop waiting for it
                self.bufs[i] += chunk
        return [find(b) for b in self.bufs]

    def close(self) -> None:
        self.sel.close()


def stop_process(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """SIGTERM, SIGKILL after ``grace`` seconds; reap it and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
