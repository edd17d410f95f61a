"""``trio-msink serve`` with tokens, TLS and a low fd limit (docs/security.md):
the real command, real sockets, real TLS with a trustme CA, real clients
(ffmpeg over https://, a WebSocket client over wss://, openssl s_client on
the TCP front)."""

from __future__ import annotations

import os
import resource
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme
from _server import Running, need_tool, run_server
from conftest import read_all
from test_front_http import read_head
from trio_websocket import ConnectionRejected, open_websocket_url

SERVE_TEST = ["serve", "test", "--sync-method", "latest-keyframe", "--linger", "1"]
TS_PACKET = 188


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path
    client: ssl.SSLContext


def _certs(directory: Path, name: str) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    paths = Certs(directory / f"{name}-ca.pem", directory / f"{name}-cert.pem",
                  directory / f"{name}-key.pem", ssl.create_default_context())
    ca.cert_pem.write_to_path(str(paths.ca))
    issued.private_key_pem.write_to_path(str(paths.key))
    paths.cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    ca.configure_trust(paths.client)
    return paths


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return _certs(tmp_path_factory.mktemp("tls"), "one")


def get(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: test", *headers, "", ""]).encode()


async def http_status(port: int, path: str, context: ssl.SSLContext | None = None,
                      *headers: str) -> int:
    """The status of ``GET path`` (the connection is closed after the head)."""
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if context is not None:
        stream = trio.SSLStream(stream, context, server_hostname="127.0.0.1")
    async with stream:
        await stream.send_all(get(path, *headers))
        status, _, _ = await read_head(stream)
    return status


async def ffmpeg_decode(url: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    ffmpeg = need_tool("ffmpeg")
    return await trio.run_process(
        [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-xerror", *options,
         "-i", url, "-t", "1.5", "-f", "framecrc", "-"],
        capture_stdout=True, capture_stderr=True, check=False,
    )


def assert_decoded(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.decode().strip() == ""
    frames = [ln for ln in result.stdout.decode().splitlines() if not ln.startswith("#")]
    assert len(frames) >= 20


# -- tokens --------------------------------------------------------------------------------------


async def test_tokens_on_http_and_websocket_with_ffmpeg() -> None:
    args = [*SERVE_TEST, "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "-v",
            "--token", "viewer-secret", "--admin-token", "operator-secret"]
    with trio.fail_after(60):
        async with run_server(args, fronts=2) as server:
            http, ws = server.port("http"), server.port("ws")
            assert await http_status(http, "/stream") == 401
            assert await http_status(http, "/stream?token=guess-8f3a") == 403
            assert await http_status(http, "/stats?token=viewer-secret") == 403
            assert await http_status(http, "/stats", None,
                                     "Authorization: Bearer operator-secret") == 200
            assert_decoded(await ffmpeg_decode(
                f"http://127.0.0.1:{http}/stream?token=viewer-secret"))
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"ws://127.0.0.1:{ws}/"):
                    pass
            assert rejected.value.status_code == 401
            async with open_websocket_url(f"ws://127.0.0.1:{ws}/?token=viewer-secret") as conn:
                assert await conn.get_message()
    log = bytes(server.stderr)
    assert b"Traceback" not in log
    for secret in (b"viewer-secret", b"operator-secret", b"guess-8f3a"):
        assert secret not in log, "a token was logged"


# -- TLS -------------------------------------------------------------------------------------------


async def test_tls_on_every_front_with_real_clients(certs: Certs) -> None:
    args = [*SERVE_TEST, "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0",
            "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    openssl = need_tool("openssl")
    with trio.fail_after(60):
        async with run_server(args, fronts=3) as server:
            schemes = [url.split("://")[0] for url in server.urls]
            assert schemes == ["tls", "https", "wss"]
            https = f"https://127.0.0.1:{server.port('https')}/stream"
            assert_decoded(await ffmpeg_decode(https, "-tls_verify", "1",
                                               "-ca_file", str(certs.ca)))
            tls = f"tls://127.0.0.1:{server.port('tls')}?cafile={certs.ca}&verify=1"
            assert_decoded(await ffmpeg_decode(tls))
            async with open_websocket_url(f"wss://127.0.0.1:{server.port('wss')}/",
                                          ssl_context=certs.client) as conn:
                message = await conn.get_message()
                assert isinstance(message, bytes) and message[0] == 0x47
            process = await trio.lowlevel.open_process(
                [openssl, "s_client", "-quiet", "-verify_return_error", "-CAfile",
                 str(certs.ca), "-connect", f"127.0.0.1:{server.port('tls')}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                assert process.stdout is not None
                data = b""
                while len(data) < 20 * TS_PACKET:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "openssl s_client got no stream"
                    data += chunk
                # whole MPEG-TS packets from the first byte
                assert all(data[i] == 0x47 for i in range(0, 20 * TS_PACKET, TS_PACKET))
            finally:
                process.kill()
                await process.wait()
            # a plain client on the TLS port gets nothing
            async with await trio.open_tcp_stream("127.0.0.1", server.port("https")) as plain:
                await plain.send_all(get("/stats"))
                assert b"200 OK" not in await read_all(plain)
    assert b"Traceback" not in server.stderr


async def _run_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process([sys.executable, "-m", "trio_msink", *args],
                                      capture_stdout=True, capture_stderr=True, check=False)


@pytest.mark.parametrize("which", ["missing cert", "missing key", "wrong key", "not a cert"])
async def test_bad_certificate_files_are_one_line_errors(certs: Certs, tmp_path: Path,
                                                         which: str) -> None:
    other = _certs(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert, key = {
        "missing cert": (str(tmp_path / "absent.pem"), str(certs.key)),
        "missing key": (str(certs.cert), str(tmp_path / "absent-key.pem")),
        "wrong key": (str(certs.cert), str(other.key)),
        "not a cert": (str(garbage), str(certs.key)),
    }[which]
    result = await _run_command("serve", "test", "--tcp", "127.0.0.1:0",
                                "--tls-cert", cert, "--tls-key", key)
    assert result.returncode != 0
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("trio-msink: error: --tls-")
    assert result.stdout == b""  # nothing listened
    if which.startswith("missing"):
        assert "absent" in lines[0] and "no such file" in lines[0]


async def test_bad_security_flags_name_the_flag() -> None:
    for args, flag in ((["--allow", "10.0.0.0/33"], "--allow"),
                       (["--max-clients", "0"], "--max-clients"),
                       (["--ws-origin", "ftp://x"], "--ws-origin"),
                       (["--token", ""], "--token"),
                       (["--token-file", "/nonexistent/tokens"], "--token-file")):
        result = await _run_command("serve", "test", "--tcp", "127.0.0.1:0", *args)
        assert result.returncode != 0
        last = result.stderr.decode().strip().splitlines()[-1]
        assert last.startswith("trio-msink: error:") and flag in last, last


# -- reloads ---------------------------------------------------------------------------------


async def test_token_file_and_certificate_reload(certs: Certs, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(certs.cert.read_bytes())
    key.write_bytes(certs.key.read_bytes())
    tokens = tmp_path / "tokens"
    tokens.write_text("first\n")
    admin = tmp_path / "admin"
    admin.write_text("boss\n")
    args = [*SERVE_TEST, "--http", "127.0.0.1:0", "--token-file", str(tokens),
            "--admin-token-file", str(admin), "--tls-cert", str(cert), "--tls-key", str(key)]
    with trio.fail_after(60):
        async with run_server(args, fronts=1) as server:
            port = server.port("https")
            # a viewer admitted with the first token
            viewer = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), certs.client,
                                    server_hostname="127.0.0.1")
            await viewer.send_all(get("/stream?token=first"))
            assert (await read_head(viewer))[0] == 200
            # the file changes: picked up without a signal
            tokens.write_text("# rotated\nsecond\n")
            await server.wait_log(b"reloaded: 1 tokens")
            assert await http_status(port, "/stream?token=first", certs.client) == 403
            assert await http_status(port, "/stream?token=second", certs.client) == 200
            assert await http_status(port, "/stats?token=boss", certs.client) == 200
            admin.write_text("new-boss\n")
            await server.wait_log(b"--admin-token-file")
            assert await http_status(port, "/stats?token=boss", certs.client) == 403
            assert await http_status(port, "/stats?token=new-boss", certs.client) == 200
            # a new certificate from another CA, on SIGHUP
            other = _certs(tmp_path, "two")
            cert.write_bytes(other.cert.read_bytes())
            key.write_bytes(other.key.read_bytes())
            server.process.send_signal(signal.SIGHUP)
            await server.wait_log(b"--tls-cert")
            assert await http_status(port, "/stream?token=second", other.client) == 200
            with pytest.raises(trio.BrokenResourceError):
                await http_status(port, "/stream?token=second", certs.client)
            # the first viewer is still served, with the old certificate and token
            received = 0
            while received < 50 * TS_PACKET:
                chunk = await viewer.receive_some()
                assert chunk
                received += len(chunk)
            await viewer.aclose()
            assert server.process.returncode is None


# -- the fd limit ---------------------------------------------------------------------------------


FD_LIMIT = 64


def _low_fd_limit() -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    return limit


async def _open_fds(server: Running) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


async def test_at_a_low_fd_limit_viewers_are_refused_politely() -> None:
    args = [*SERVE_TEST, "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"]
    with trio.fail_after(90):
        async with run_server(args, fronts=2, preexec_fn=_low_fd_limit()) as server:
            http = server.port("http")
            viewers: list[trio.SocketStream] = []
            try:
                while True:  # until refused; the default limit is 64 - 32 - 8
                    assert len(viewers) < FD_LIMIT, "never refused"
                    client = await trio.open_tcp_stream("127.0.0.1", http)
                    await client.send_all(get("/stream"))
                    status, headers, _ = await read_head(client)
                    if status != 200:
                        assert status == 503 and headers["retry-after"] == "5"
                        await client.aclose()
                        break
                    viewers.append(client)
                assert len(viewers) == FD_LIMIT - 32 - 8
                # the TCP front closes a refused viewer at once
                async with await trio.open_tcp_stream("127.0.0.1", server.port("tcp")) as tcp:
                    assert await read_all(tcp) == b""
                # the operator still gets /stats
                for _ in range(3):
                    assert await http_status(http, "/stats") == 200
                assert await _open_fds(server) < FD_LIMIT
            finally:
                for client in viewers:
                    await client.aclose()
            # descriptors come back: new viewers are served again
            with trio.fail_after(10):
                while await http_status(http, "/stream") != 200:  # noqa: ASYNC110
                    await trio.sleep(0.1)  # the sink removes the closed viewers
    assert b"Traceback" not in server.stderr


async def test_at_the_fd_limit_accept_backs_off_without_a_traceback_storm() -> None:
    # --max-clients above what the descriptors allow: accept itself fails
    args = [*SERVE_TEST, "--http", "127.0.0.1:0", "--max-clients", "1000",
            "--header-timeout", "60"]
    with trio.fail_after(90):
        async with run_server(args, fronts=1, preexec_fn=_low_fd_limit()) as server:
            http = server.port("http")
            idle = [await trio.open_tcp_stream("127.0.0.1", http) for _ in range(FD_LIMIT + 16)]
            try:
                await server.wait_log(b"cannot accept")
                await trio.sleep(3)  # trio's own loop would log 30 tracebacks by now
                log = bytes(server.stderr)
                assert log.count(b"cannot accept") == 1
                assert b"Traceback" not in log
                assert len(log.splitlines()) < 20
            finally:
                for client in idle:
                    await client.aclose()
            await server.wait_log(b"accepting connections again")
            with trio.fail_after(10):
                assert await http_status(http, "/stats") == 200
            assert await http_status(http, "/stream") == 200


async def test_start_up_raises_the_fd_limit_and_warns_about_an_open_tcp_front() -> None:
    def soft_below_hard() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))

    args = [*SERVE_TEST, "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--token", "t"]
    with trio.fail_after(60):
        async with run_server(args, fronts=2, preexec_fn=soft_below_hard) as server:
            limits = await trio.Path(f"/proc/{server.process.pid}/limits").read_text()
            line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
            assert line.split()[3:5] == ["512", "512"]
            await server.wait_log(b"the TCP front cannot carry a token")
            await server.wait_log(b"/stats and the page need --admin-token")
            # a TCP viewer needs no token (it cannot send one); HTTP does
            async with await trio.open_tcp_stream("127.0.0.1", server.port("tcp")) as tcp:
                assert await tcp.receive_some()
            assert await http_status(server.port("http"), "/stream") == 401


async def test_with_workers_the_hand_off_also_backs_off_at_the_fd_limit() -> None:
    args = [*SERVE_TEST, "--http", "127.0.0.1:0", "--workers", "2", "--header-timeout", "60",
            "--max-clients", "1000"]  # above what the descriptors allow
    with trio.fail_after(90):
        async with run_server(args, fronts=1, preexec_fn=_low_fd_limit()) as server:
            http = server.port("http")
            idle = [await trio.open_tcp_stream("127.0.0.1", http) for _ in range(2 * FD_LIMIT)]
            try:
                await server.wait_log(b"cannot accept")
                await trio.sleep(2)
                assert server.process.returncode is None
                assert b"Traceback" not in server.stderr
            finally:
                for client in idle:
                    await client.aclose()
            await server.wait_log(b"accepting connections again")
            assert await http_status(http, "/stats") == 200


async def test_workers_apply_the_same_rules(certs: Certs, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(certs.cert.read_bytes())
    key.write_bytes(certs.key.read_bytes())
    args = [*SERVE_TEST, "--http", "127.0.0.1:0", "--workers", "2", "--token", "viewer",
            "--admin-token", "boss", "--max-clients", "4", "--tls-cert", str(cert),
            "--tls-key", str(key)]
    with trio.fail_after(60):
        async with run_server(args, fronts=1) as server:
            port = server.port("https")
            for _ in range(2):  # one connection to each process
                assert await http_status(port, "/stream", certs.client) == 401
                assert await http_status(port, "/stats?token=viewer", certs.client) == 403
            viewers = []
            try:
                for _ in range(4):  # dealt round robin: two per process
                    viewer = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port),
                                            certs.client, server_hostname="127.0.0.1")
                    await viewer.send_all(get("/stream?token=viewer"))
                    assert (await read_head(viewer))[0] == 200
                    viewers.append(viewer)
                for _ in range(2):  # each process has its half of --max-clients
                    assert await http_status(port, "/stream?token=viewer", certs.client) == 503
                    assert await http_status(port, "/stats?token=boss", certs.client) == 200
                # SIGHUP reaches the workers: every process serves the new certificate
                other = _certs(tmp_path, "two")
                cert.write_bytes(other.cert.read_bytes())
                key.write_bytes(other.key.read_bytes())
                server.process.send_signal(signal.SIGHUP)
                await server.wait_log(b"--tls-cert", 2)  # the main process and the worker
                for _ in range(2):
                    assert await http_status(port, "/stats?token=boss", other.client) == 200
            finally:
                for viewer in viewers:
                    await viewer.aclose()
    assert b"Traceback" not in server.stderr
