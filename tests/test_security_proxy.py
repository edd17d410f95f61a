"""The reverse-proxy example of docs/security.md, run: HAProxy terminates
TLS in front of trio-msink's HTTP and WebSocket fronts, which admit only the
proxy's address and still check the tokens."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
import trustme
from _server import need_tool, run_server
from test_security_cli import SERVE_TEST, assert_decoded, ffmpeg_decode, http_status
from trio_websocket import ConnectionRejected, open_websocket_url

CONFIG = """\
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h

frontend stream
    bind 127.0.0.1:{proxy} ssl crt {pem}
    use_backend ws if {{ path /ws }} || {{ path_beg /ws/ }}
    default_backend http

backend http
    server msink 127.0.0.1:{http}

backend ws
    http-request set-path "%[path,regsub(^/ws,/)]"
    server msink 127.0.0.1:{ws}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_behind_haproxy_with_tls_termination(tmp_path: Path) -> None:
    haproxy = need_tool("haproxy")
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    pem = tmp_path / "stream.pem"
    pem.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems)
                    + issued.private_key_pem.bytes())
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    proxy = _free_port()
    origin = f"https://127.0.0.1:{proxy}"
    args = [*SERVE_TEST, "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--allow", "127.0.0.1",
            "--token", "viewer", "--admin-token", "operator", "--ws-origin", origin]
    with trio.fail_after(60):
        async with run_server(args, fronts=2) as server:
            config = tmp_path / "haproxy.cfg"
            config.write_text(CONFIG.format(proxy=proxy, pem=pem, http=server.port("http"),
                                            ws=server.port("ws")))
            process = await trio.lowlevel.open_process(
                [haproxy, "-f", str(config), "-db"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while True:  # until HAProxy listens
                    try:
                        await (await trio.open_tcp_stream("127.0.0.1", proxy)).aclose()
                        break
                    except OSError:
                        assert process.returncode is None, "haproxy exited"
                        await trio.sleep(0.05)
                assert_decoded(await ffmpeg_decode(f"{origin}/stream?token=viewer",
                                                   "-ca_file", str(ca_file)))
                assert await http_status(proxy, "/stream", client) == 401
                assert await http_status(proxy, "/stats?token=viewer", client) == 403
                assert await http_status(proxy, "/stats?token=operator", client) == 200
                async with open_websocket_url(f"wss://127.0.0.1:{proxy}/ws?token=viewer",
                                              ssl_context=client,
                                              extra_headers=[(b"Origin", origin.encode())]) as ws:
                    assert await ws.get_message()
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(
                            f"wss://127.0.0.1:{proxy}/ws?token=viewer", ssl_context=client,
                            extra_headers=[(b"Origin", b"https://evil.example")]):
                        pass
                assert rejected.value.status_code == 403
            finally:
                process.kill()
                await process.wait()
