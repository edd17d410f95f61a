"""``--format auto`` fed what it cannot recognise (docs/cli.md, "Input that
auto does not recognise"): random bytes are never served labelled as
MPEG-TS. From stdin or a file the command exits 1 with one line; with
``--content-type`` (the operator says what it is) or ``--format raw`` the
bytes are served as raw chunks."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import trio
from _server import COMMAND, run_server
from test_framing_mpegts import encode_ts

# Random bytes: neither three sync bytes 188 apart nor two plausible NAL
# headers in the first 4096 (checked by the first test).
NOISE = random.Random(9).randbytes(64 * 1024)
ERROR = b"trio-msink: error: SOURCE -: neither MPEG-TS nor H.264"


def test_the_noise_is_not_recognised() -> None:
    from trio_msink.framing import detect_format

    assert detect_format(NOISE) == "raw"
    assert detect_format(NOISE[:1000], final=True) == "raw"


async def test_random_bytes_on_stdin_exit_1_with_one_line() -> None:
    """stdin stays open: the exit comes from detection, not from the end of input."""
    with trio.fail_after(30):
        async with run_server(["serve", "-", "--http", "127.0.0.1:0"], fronts=1,
                              stdin=True) as server:
            stdin = server.process.stdin
            assert stdin is not None
            await stdin.send_all(NOISE[:8192])
            assert await server.process.wait() == 1
            await stdin.aclose()
            await server.wait_log(b"\n")
            lines = bytes(server.stderr).splitlines()
    errors = [line for line in lines if b"neither" in line]
    assert len(errors) == 1 and errors[0].startswith(ERROR), lines
    assert b"--format raw" in errors[0] and b"--content-type" in errors[0]
    assert b"Traceback" not in server.stderr


async def test_a_short_unrecognised_input_exits_1_at_its_end() -> None:
    """Fewer bytes than the probe window: decided at the end of input."""
    with trio.fail_after(30):
        result = await trio.run_process(
            [*COMMAND, "serve", "-", "--tcp", "127.0.0.1:0"], stdin=NOISE[:1000],
            capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if b"neither" in line]
    assert len(errors) == 1 and errors[0].startswith(ERROR), result.stderr
    assert b"Traceback" not in result.stderr


async def read_head(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some()
            assert chunk, head
            head += chunk
    return head.split(b"\r\n\r\n", 1)[0].lower()


async def test_content_type_serves_it_as_raw_chunks() -> None:
    with trio.fail_after(30):
        async with run_server(["serve", "-", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0",
                               "--content-type", "application/x-noise", "--linger", "-1"],
                              fronts=2, stdin=True) as server:
            client = await trio.open_tcp_stream("127.0.0.1", server.port("tcp"))
            await server.wait_log(b"client added")
            stdin = server.process.stdin
            assert stdin is not None
            async with stdin:
                await stdin.send_all(NOISE)
            head = await read_head(server.port("http"))
            got = bytearray()
            async for chunk in client:  # until the server removes us after end of input
                got += chunk
            assert await server.process.wait() == 0
    assert got == NOISE
    assert b"\r\ncontent-type: application/x-noise" in head
    assert server.stderr.count(b"neither MPEG-TS nor H.264") == 1
    assert b"labelled application/x-noise" in server.stderr


async def test_format_raw_serves_it_as_octet_stream(tmp_path: Path) -> None:
    source = tmp_path / "noise.bin"
    source.write_bytes(NOISE)
    with trio.fail_after(30):
        async with run_server(["serve", str(source), "--format", "raw", "--http", "127.0.0.1:0",
                               "--no-sync", "--linger", "0"], fronts=1) as server:
            head = await read_head(server.port("http"))
            assert await server.process.wait() == 0
    assert b"\r\ncontent-type: application/octet-stream" in head
    assert b"neither" not in server.stderr


async def test_recognised_input_is_served_without_a_word(tmp_path: Path) -> None:
    """The check leaves real MPEG-TS alone: a file detected by auto is
    served to its end, exit 0, no warning."""
    source = tmp_path / "in.ts"
    source.write_bytes(encode_ts("libx264")[0])
    with trio.fail_after(60):
        result = await trio.run_process(
            [*COMMAND, "serve", str(source), "--tcp", "127.0.0.1:0", "--no-sync",
             "--linger", "0"], capture_stdout=True, capture_stderr=True,
            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    assert b"neither" not in result.stderr
    assert b"input format: mpegts" in result.stderr or b"end of input" in result.stderr


async def test_an_unrecognised_publisher_is_dropped_and_the_next_one_served() -> None:
    """Push ingest: a publisher of noise costs its own upstream only; the
    server stays up and the next publisher's MPEG-TS reaches the clients,
    without a byte of the noise."""
    ts = encode_ts("libx264")[0]
    with trio.fail_after(60):
        async with run_server(["serve", "--ingest", "tcp://127.0.0.1:0", "--tcp", "127.0.0.1:0",
                               "--no-sync"], fronts=2) as server:
            tcp, ingest = (int(u.rsplit(":", 1)[1].strip("/")) for u in server.urls)
            client = await trio.open_tcp_stream("127.0.0.1", tcp)
            await server.wait_log(b"client added")
            noisy = await trio.open_tcp_stream("127.0.0.1", ingest)
            await noisy.send_all(NOISE)
            await server.wait_log(b"not served until the next upstream")
            await noisy.aclose()
            await server.wait_log(b"left)")  # the slot is free
            good = await trio.open_tcp_stream("127.0.0.1", ingest)
            await good.send_all(ts)
            got = bytearray()
            while len(got) < len(ts) // 2:
                chunk = await client.receive_some()
                assert chunk
                got += chunk
            await good.aclose()
            assert server.process.returncode is None
    whole = len(got) // 188
    assert got[: whole * 188 : 188] == b"\x47" * whole  # packets of the new stream only
    assert all(bytes(got[i : i + 188]) in ts for i in range(0, whole * 188, 188 * 50))
    assert NOISE[:64] not in got
    assert server.stderr.count(b"neither MPEG-TS nor H.264") == 1
