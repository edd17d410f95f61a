"""Errors a person can act on (docs/cli.md, "Errors"): every failure prints one
line ``trio-msink: error: <what failed>: <why>`` and exits non-zero, with the
traceback only under ``-v``; a flag error prints the one-line usage first."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from _server import COMMAND

import trio_msink
from trio_msink.cli import _server
from trio_msink.cli._errors import CommandError
from trio_msink.cli._main import failure_line, main


async def run(*args: str) -> Any:
    with trio.fail_after(60):
        return await trio.run_process([*COMMAND, *args], capture_stdout=True,
                                      capture_stderr=True, check=False,
                                      stdin=subprocess.DEVNULL)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_port_in_use_is_one_line_and_status_1(busy_port: int) -> None:
    result = await run("serve", "test", "--tcp", f"127.0.0.1:{busy_port}")
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert lines == [f"trio-msink: error: --tcp 127.0.0.1:{busy_port}: address already in use"]


async def test_verbose_adds_the_traceback_before_the_line(busy_port: int) -> None:
    result = await run("serve", "test", "--tcp", f"127.0.0.1:{busy_port}", "-v")
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert "Traceback (most recent call last):" in lines[0]
    assert lines[-1] == f"trio-msink: error: --tcp 127.0.0.1:{busy_port}: address already in use"


@pytest.mark.parametrize(
    ("args", "usage", "error"),
    [
        (["serve", "--no-such-flag"], "usage: trio-msink serve [SOURCE] [options]",
         "trio-msink: error: unrecognized arguments: --no-such-flag"),
        (["demo", "--timeout", "soon"], "usage: trio-msink demo [options]",
         "trio-msink: error: argument --timeout: 'soon' is not a number"),
        (["serve", "/no/such/file.ts"], "usage: trio-msink serve [SOURCE] [options]",
         "trio-msink: error: SOURCE: no such file: '/no/such/file.ts'"),
        (["serve", "--fps", "0"], "usage: trio-msink serve [SOURCE] [options]",
         "trio-msink: error: argument --fps: must be a number > 0, not 0"),
        ([], "usage: trio-msink {serve,demo} [options]",
         "trio-msink: error: the following arguments are required: COMMAND"),
    ],
)
async def test_a_flag_error_is_the_short_usage_and_one_line_status_2(
    args: list[str], usage: str, error: str
) -> None:
    result = await run(*args)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [usage, error]


async def test_version_prints_the_package_version() -> None:
    result = await run("--version")
    assert result.returncode == 0
    assert result.stdout.decode() == f"trio-msink {trio_msink.__version__}\n"


def test_failure_line_finds_the_command_error_in_nested_groups() -> None:
    error = CommandError("--http 127.0.0.1:8080: address already in use")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("x"), error])])
    assert failure_line(group) == "--http 127.0.0.1:8080: address already in use"


def test_failure_line_of_an_os_error_names_its_file() -> None:
    group = BaseExceptionGroup("", [PermissionError(13, "Permission denied", "/dev/x")])
    assert failure_line(group) == "/dev/x: permission denied"
    assert failure_line(OSError(98, "Address already in use")) == "address already in use"


def test_failure_line_of_anything_else_says_it_is_unexpected() -> None:
    line = failure_line(ExceptionGroup("", [RuntimeError("boom")]))
    assert line == "unexpected RuntimeError: boom (-v shows the traceback)"


class _FailingServer:
    """Stands in for the server: fails while running, inside nurseries."""

    def __init__(self, *args: object) -> None:
        pass

    async def run(self) -> None:
        async def fail() -> None:
            raise CommandError("SOURCE tcp://127.0.0.1:9: origin refused the connection")

        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as inner:
                inner.start_soon(fail)
            outer.start_soon(trio.sleep_forever)


def test_a_failure_while_running_comes_out_of_its_groups_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_server, "Server", _FailingServer)
    assert main(["serve", "test", "--tcp", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["trio-msink: error: SOURCE tcp://127.0.0.1:9: origin refused the connection"]
