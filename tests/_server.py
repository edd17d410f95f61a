"""Run ``trio-msink`` as a real process for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio

COMMAND = [sys.executable, "-m", "trio_msink"]


def need_tool(name: str) -> str:
    """The path of an external tool; skipped when absent, except in CI
    (where .ci/run installs it, so absence is a failure)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed (Debian: see .ci/run)")
    return path


@dataclass
class Output:
    """A child's stderr as it arrives, with a wake-up for each chunk."""

    data: bytearray = field(default_factory=bytearray)
    arrived: trio.Event = field(default_factory=trio.Event)

    async def collect(self, stream: trio.abc.ReceiveStream) -> None:
        async for chunk in stream:
            self.data += chunk
            self.arrived.set()
            self.arrived = trio.Event()
        self.arrived.set()


@dataclass
class Running:
    process: trio.Process
    urls: list[str]
    output: Output

    @property
    def stderr(self) -> bytearray:
        return self.output.data

    def port(self, scheme: str) -> int:
        for url in self.urls:
            if url.startswith(scheme + "://"):
                return int(url.rsplit(":", 1)[1].strip("/"))
        raise KeyError(scheme)

    async def wait_log(self, text: bytes, count: int = 1) -> None:
        """Wait until the server's stderr holds ``text`` ``count`` times."""
        while self.stderr.count(text) < count:
            await self.output.arrived.wait()

    def url(self, scheme: str) -> str:
        return next(u for u in self.urls if u.startswith(scheme + "://"))


@asynccontextmanager
async def run_server(args: Sequence[str], *, fronts: int, stdin: bool = False,
                     preexec_fn: Callable[[], object] | None = None,
                     ) -> AsyncIterator[Running]:
    """Start ``trio-msink ARGS``, wait for its ``fronts`` URL lines, yield it;
    on exit send SIGTERM and wait for it (killing it if it lingers).
    ``preexec_fn`` runs in the child before the command (e.g. a low fd limit)."""
    process = await trio.lowlevel.open_process(
        [*COMMAND, *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec_fn,
    )
    output = Output()
    out = bytearray()
    assert process.stdout is not None and process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.collect, process.stderr)
            while out.count(b"\n") < fronts:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"server exited early: {output.data.decode()}")
                out += chunk
            urls = out.decode().split()
            yield Running(process, urls, output)
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
