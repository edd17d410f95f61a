"""The ``trio-msink`` command: flags, output contract, exit paths."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from _server import COMMAND, run_server

from trio_msink import Sink, SinkProperty
from trio_msink.cli._main import _parser, main
from trio_msink.cli._options import explicit_properties
from trio_msink.cli._testsource import TestPattern


def _make_ts(path: Path, frames: int = 30) -> bytes:
    pattern = TestPattern(fps=25)
    data = b"".join(pattern.frame() for _ in range(frames)) + pattern.close()
    path.write_bytes(data)
    return data


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--buffers-max", "-5"], "--buffers-max"),
        (["--buffers-max", "ten"], "--buffers-max"),
        (["--sync-method", "sideways"], "--sync-method"),
        (["--qos-dscp", "64"], "--qos-dscp"),
        (["--buffers-soft-max", "10", "--buffers-max", "5"], "--buffers-soft-max"),
        (["--time-min", "nan"], "--time-min"),
        (["--tcp", "nowhere"], "--tcp"),
        (["--chunk-size", "0"], "--chunk-size"),
        (["--format", "avi"], "--format"),
        (["/no/such/file.ts"], "SOURCE"),
        (["udp://1.2.3.4:5"], "SOURCE"),
    ],
)
def test_a_bad_value_prints_one_line_naming_the_flag_and_exits_2(
    args: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    named = flag if flag == "SOURCE" else f"argument {flag}"
    assert len(err) == 2 and err[0] == "usage: trio-msink serve [SOURCE] [options]"
    assert err[1].startswith(f"trio-msink: error: {named}: ")


@pytest.mark.parametrize("prop", Sink.properties(), ids=lambda p: p.name)
def test_every_sink_property_has_a_flag_with_its_doc_and_default(
    prop: SinkProperty[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The flags come from the Sink's declaration: a new property has one."""
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    flag = "--" + prop.name.replace("_", "-")
    if prop.kind == "bool":
        assert f"{flag}, --no-{flag[2:]} " in help_text
    else:
        assert f"{flag} " in help_text
    assert " ".join(prop.doc.replace("``", "").split()) in help_text


@pytest.mark.parametrize("prop", Sink.properties(), ids=lambda p: p.name)
def test_every_flag_parses_into_its_property(prop: SinkProperty[Any]) -> None:
    flag = "--" + prop.name.replace("_", "-")
    if prop.kind == "bool":
        argv = [f"--no-{flag[2:]}" if prop.default else flag]
        expected: Any = not prop.default
    elif prop.kind == "enum":
        member = list(prop.type)[-1]
        argv, expected = [flag, member.name.lower().replace("_", "-")], member
    else:
        argv, expected = [flag, "7"], 7
    args = _parser().parse_args(["serve", *argv])
    assert explicit_properties(args) == {prop.name}
    assert getattr(args, prop.name) == expected


async def test_file_source_prints_only_the_urls_and_exits_0_at_end_of_input(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.ts"
    _make_ts(source)
    with trio.fail_after(30):
        result = await trio.run_process(
            [*COMMAND, "serve", str(source), "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0",
             "--ws", "127.0.0.1:0", "--no-sync", "--linger", "0"],
            capture_stdout=True, capture_stderr=True, check=False, stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("tcp://127.0.0.1:")
    assert lines[1].startswith("http://127.0.0.1:") and lines[1].endswith("/")
    assert lines[2].startswith("ws://127.0.0.1:") and lines[2].endswith("/")
    assert "end of input" in result.stderr.decode()


async def test_stdin_source_reaches_a_tcp_client_byte_exact() -> None:
    data = bytes(range(256)) * 400  # 102400 bytes = 77 raw chunks of 1316 + a remainder
    with trio.fail_after(30):
        async with run_server(["serve", "-", "--format", "raw", "--tcp", "127.0.0.1:0",
                               "--linger", "-1"], fronts=1, stdin=True) as server:
            client = await trio.open_tcp_stream("127.0.0.1", server.port("tcp"))
            stdin = server.process.stdin
            assert stdin is not None
            await server.wait_log(b"client added")
            async with stdin:
                await stdin.send_all(data)
            got = bytearray()
            async for chunk in client:  # until the server removes us after end of input
                got += chunk
            assert await server.process.wait() == 0
    assert got == data


async def test_sigterm_stops_and_exits_0() -> None:
    with trio.fail_after(30):
        async with run_server(["serve", "test", "--tcp", "127.0.0.1:0", "--linger", "1"],
                              fronts=1) as server:
            client = await trio.open_tcp_stream("127.0.0.1", server.port("tcp"))
            assert await client.receive_some()
            server.process.send_signal(signal.SIGTERM)
            assert await server.process.wait() == 0
            rest = bytearray()
            async for chunk in client:  # the server let us drain, then we are removed
                rest += chunk
    assert b"SIGTERM" in server.stderr


def test_module_entry_point_help() -> None:
    out = subprocess.run([sys.executable, "-m", "trio_msink", "--help"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert "serve" in out and "demo" in out


async def test_demo_hints_name_the_ports_the_fronts_really_listen_on() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [*COMMAND, "demo", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0",
             "--ws", "127.0.0.1:0", "--test-seconds", "0.5", "--linger", "0"],
            capture_stdout=True, capture_stderr=True, check=False, stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 0, result.stderr.decode()
    tcp, http, ws = result.stdout.decode().split()
    assert not any(url.rstrip("/").endswith(":0") for url in (tcp, http, ws))
    hints = result.stderr.decode()
    assert f"ffplay {tcp}\n" in hints
    assert f"vlc {http}stream\n" in hints
    assert f"browser: {http}\n" in hints
    assert f"WebSocket: {ws}\n" in hints


async def test_http_answers_carry_their_reason_phrase() -> None:
    async def status_line(port: int, path: str) -> bytes:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                head += await stream.receive_some()
            return head.split(b"\r\n", 1)[0]

    with trio.fail_after(30):
        async with run_server(["serve", "test", "--http", "127.0.0.1:0"], fronts=1) as server:
            port = server.port("http")
            assert await status_line(port, "/stats") == b"HTTP/1.1 200 OK"
            assert await status_line(port, "/") == b"HTTP/1.1 200 OK"
            assert await status_line(port, "/nowhere") == b"HTTP/1.1 404 Not Found"


def _h264_elementary(pictures: int) -> bytes:
    """An H.264 Annex B stream, without timestamps: SPS, PPS, an IDR picture,
    then P pictures (hand-made NAL units; each slice has first_mb_in_slice 0)."""
    sps = b"\x00\x00\x00\x01\x67\x42\xc0\x0a\x8c\x8d\x40"
    pps = b"\x00\x00\x00\x01\x68\xce\x3c\x80"
    payload = b"\x11" * 1000
    idr = b"\x00\x00\x01\x65\x88" + payload
    p = b"\x00\x00\x01\x41\x9a" + payload
    return sps + pps + idr + p * (pictures - 1)


async def test_fps_paces_an_h264_elementary_stream(tmp_path: Path) -> None:
    """26 pictures at --fps 25: the last is due 1 s after the first, so the
    file takes a second to serve (without --fps it would go out at once)."""
    source = tmp_path / "in.h264"
    source.write_bytes(_h264_elementary(26))
    with trio.fail_after(30):
        async with run_server(["serve", str(source), "--format", "h264", "--fps", "25",
                               "--tcp", "127.0.0.1:0", "--linger", "0"], fronts=1) as server:
            started = trio.current_time()
            assert await server.process.wait() == 0
            assert trio.current_time() - started >= 0.9
