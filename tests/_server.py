"""Run ``trio-msink`` as a real process for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

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
class Running:
    process: trio.Process
    urls: list[str]
    stderr: bytearray

    def port(self, scheme: str) -> int:
        for url in self.urls:
            if url.startswith(scheme + "://"):
                return int(url.rsplit(":", 1)[1].strip("/"))
        raise KeyError(scheme)

    async def wait_log(self, text: bytes, count: int = 1) -> None:
        """Wait until the server's stderr holds ``text`` ``count`` times."""
        while self.stderr.count(text) < count:
            await trio.sleep(0.01)

    def url(self, scheme: str) -> str:
        return next(u for u in self.urls if u.startswith(scheme + "://"))


async def _collect(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    async for chunk in stream:
        into += chunk


@asynccontextmanager
async def run_server(args: Sequence[str], *, fronts: int, stdin: bool = False,
                     ) -> AsyncIterator[Running]:
    """Start ``trio-msink ARGS``, wait for its ``fronts`` URL lines, yield it;
    on exit send SIGTERM and wait for it (killing it if it lingers)."""
    process = await trio.lowlevel.open_process(
        [*COMMAND, *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stderr = bytearray()
    out = bytearray()
    assert process.stdout is not None and process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, process.stderr, stderr)
            while out.count(b"\n") < fronts:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"server exited early: {stderr.decode()}")
                out += chunk
            urls = out.decode().split()
            yield Running(process, urls, stderr)
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
