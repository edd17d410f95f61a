"""The servers under test: their command lines, start-up, CPU/RSS, shutdown.

Switching the trio server between the ``trio-msink serve`` command and the
stand-in built on the library is one line: :data:`DEFAULT_TRIO_CMD` (or the
``--trio-cmd`` flag of ``fanout.py``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # the only address the benchmark ever targets

#: "cli": ``trio-msink serve - --format raw ...``; "library": the stand-in on the public API.
DEFAULT_TRIO_CMD = "cli"

#: Server command lines. Placeholders: {size} {buffers_max} {buffers_soft_max} {sync_method}
#: {recover_policy} (trio names) {gst_recover_policy} {port} {workers}.
#: Trio commands listen on port 0 and print ``tcp://HOST:PORT``; GStreamer
#: gets a free port picked by the harness and is polled until it accepts.
COMMANDS: dict[str, list[str]] = {
    "cli": [
        sys.executable, "-m", "trio_msink", "serve", "-", "--format", "raw",
        "--chunk-size", "{size}", "--tcp", f"{HOST}:0", "--no-sync",
        "--buffers-max", "{buffers_max}", "--buffers-soft-max", "{buffers_soft_max}",
        "--recover-policy", "{recover_policy}", "--sync-method", "{sync_method}",
        # The command's own defaults for a public server (a byte limit, a write
        # timeout) would be limits tcpserversink does not get: pin the
        # library's, which are GStreamer's.
        "--unit-format", "buffers", "--units-max", "-1", "--units-soft-max", "-1",
        "--timeout", "0", "--linger", "0", "{workers_flag}",
    ],
    "library": [
        sys.executable, str(BENCH_DIR / "_trio_server.py"), "--chunk-size", "{size}",
        "--host", HOST, "--port", "0", "--buffers-max", "{buffers_max}",
        "--buffers-soft-max", "{buffers_soft_max}", "--recover-policy", "{recover_policy}",
        "--sync-method", "{sync_method}",
    ],
    # The WebSocket comparison (websocket.py): the command's WebSocket front,
    # and the two peers, which print ``ws://HOST:PORT/`` once listening.
    "cli-ws": [
        sys.executable, "-m", "trio_msink", "serve", "-", "--format", "raw",
        "--chunk-size", "{size}", "--ws", f"{HOST}:0", "--no-sync",
        "--buffers-max", "{buffers_max}", "--buffers-soft-max", "{buffers_soft_max}",
        "--recover-policy", "{recover_policy}", "--sync-method", "{sync_method}",
        "--unit-format", "buffers", "--units-max", "-1", "--units-soft-max", "-1",
        "--timeout", "0", "--linger", "0", "{workers_flag}",
    ],
    "websockets": [sys.executable, str(BENCH_DIR / "_ws_peer.py"), "--size", "{size}"],
    "node-ws": ["node", str(BENCH_DIR / "_ws_peer.js"), "{size}"],
    "gst": [
        "gst-launch-1.0", "-q", "fdsrc", "fd=0", "blocksize={size}", "!",
        "tcpserversink", f"host={HOST}", "port={port}", "sync=false",
        "buffers-max={buffers_max}", "buffers-soft-max={buffers_soft_max}",
        "recover-policy={gst_recover_policy}",
        "sync-method={sync_method}", "enable-last-sample=false",
    ],
}

#: trio-msink's recover-policy names -> tcpserversink's nicks.
GST_RECOVER = {"none": "none", "resync-latest": "latest",
               "resync-soft-limit": "soft-limit", "resync-keyframe": "keyframe"}

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class ServerError(RuntimeError):
    pass


def gst_available() -> bool:
    return shutil.which("gst-launch-1.0") is not None


@dataclass(frozen=True)
class ServerSpec:
    """One server variant of the run: ``trio`` (``trio-w2`` ...) or ``gst``."""

    label: str
    kind: str  # "trio", "gst", or "peer" (a WebSocket peer: trio_cmd names its command)
    trio_cmd: str = DEFAULT_TRIO_CMD
    workers: int = 1
    #: extra arguments of its client processes (``--ws`` for WebSocket servers)
    client_args: tuple[str, ...] = ()

    def command(self, *, size: int, buffers_max: int, buffers_soft_max: int,
                sync_method: str, recover_policy: str, port: int) -> list[str]:
        key = "gst" if self.kind == "gst" else self.trio_cmd
        if self.kind == "trio" and self.workers > 1 and key != "cli":
            raise ServerError(f"--workers {self.workers} needs --trio-cmd cli")
        values = {
            "size": size, "buffers_max": buffers_max, "buffers_soft_max": buffers_soft_max,
            "sync_method": sync_method,
            "recover_policy": recover_policy,
            "gst_recover_policy": GST_RECOVER[recover_policy], "port": port,
        }
        cmd: list[str] = []
        for arg in COMMANDS[key]:
            if arg == "{workers_flag}":
                if self.workers > 1:
                    cmd += ["--workers", str(self.workers)]
                continue
            cmd.append(arg.format(**values))
        return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    """A running server process (its own process group), fed from ``stdin_fd``.

    ``port`` 0: the command listens on a port of its choice and prints
    ``tcp://HOST:PORT`` as its first line on stdout (trio-msink); otherwise it
    listens on ``port`` and is polled until it accepts connections.
    Raises :class:`ServerError` if it exits or is not ready within ``timeout``
    seconds (and stops it).
    """

    def __init__(self, cmd: list[str], *, stdin_fd: int, log: IO[bytes], port: int = 0,
                 timeout: float = 20.0) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, stdin=stdin_fd, stdout=subprocess.PIPE if port == 0 else log,
            stderr=log, start_new_session=True, cwd=BENCH_DIR.parent,
        )
        try:
            if port == 0:
                self.port = self._read_url(timeout, log)
            else:
                self._wait_port(port, timeout)
                self.port = port
        except BaseException:
            self.stop()
            raise

    @classmethod
    def start(cls, spec: ServerSpec, *, size: int, buffers_max: int, buffers_soft_max: int,
              sync_method: str, recover_policy: str, stdin_fd: int, log: IO[bytes],
              timeout: float = 20.0) -> Server:
        """Start one server variant of the fan-out benchmark with these settings."""
        port = free_port() if spec.kind == "gst" else 0
        cmd = spec.command(size=size, buffers_max=buffers_max, buffers_soft_max=buffers_soft_max,
                           sync_method=sync_method, recover_policy=recover_policy, port=port)
        return cls(cmd, stdin_fd=stdin_fd, log=log, port=port, timeout=timeout)

    def _read_url(self, timeout: float, log: IO[bytes]) -> int:
        """The port of the first ``tcp://HOST:PORT`` line on stdout; lines
        before it (a version of the command that says more) go to the log."""
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while True:
                line, nl, rest = buf.partition(b"\n")
                if nl and line.startswith((b"tcp://", b"ws://")):
                    break
                if nl:
                    log.write(line + nl)
                    buf = rest
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerError(f"no tcp:// or ws:// line within {timeout:.0f} s")
                if not sel.select(min(left, 0.2)):
                    if self.proc.poll() is not None:
                        raise ServerError(f"exited with status {self.proc.returncode}")
                    continue
                chunk = os.read(out.fileno(), 4096)
                if not chunk:
                    raise ServerError(f"exited with status {self.proc.wait()}")
                buf += chunk
        text = line.decode(errors="replace").strip().rstrip("/")
        host, _, port = text.partition("://")[2].rpartition(":")
        if host.strip("[]") != HOST:
            raise ServerError(f"server listens on {host}, not {HOST}")
        log.write(rest)

        def drain() -> None:  # keep the pipe from filling; nothing else reads it
            try:
                for chunk in iter(lambda: os.read(out.fileno(), 65536), b""):
                    log.write(chunk)
            except (OSError, ValueError):  # closed by stop()
                pass

        threading.Thread(target=drain, daemon=True).start()
        return int(port)

    def _wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"exited with status {self.proc.returncode}")
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerError(f"port {port} not accepting within {timeout:.0f} s") \
                        from None
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _group(self) -> list[int]:
        """The server's processes: everything in the process group it leads."""
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[2]) == self.proc.pid:
                pids.append(int(name))
        return pids or [self.proc.pid]

    def cpu_seconds(self) -> float:
        """utime + stime of every process of the server, in seconds."""
        return sum(proc_cpu_seconds(pid) for pid in self._group())

    def rss_kib(self) -> int:
        """VmRSS of every process of the server, in KiB."""
        total = 0
        for pid in self._group():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                            break
            except OSError:
                continue
        return total

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 3 s."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group (workers)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
