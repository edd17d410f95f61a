"""Real players against ``trio-msink serve``: ffmpeg/ffprobe, GStreamer's
tcpclientsrc, a WebSocket client and headless Chromium. .ci/run installs the
tools; on a developer's machine without them these tests skip."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import trio
from _server import need_tool, run_server
from trio_websocket import open_websocket_url

SERVE_TEST = ["serve", "test", "--sync-method", "latest-keyframe", "--linger", "1"]


async def _ffmpeg_decode(url: str, seconds: float = 2.0) -> subprocess.CompletedProcess[bytes]:
    """Decode ``seconds`` of ``url`` from its first byte; -xerror fails on any error."""
    ffmpeg = need_tool("ffmpeg")
    return await trio.run_process(
        [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-xerror", "-err_detect",
         "explode", "-i", url, "-t", str(seconds), "-f", "framecrc", "-"],
        capture_stdout=True, capture_stderr=True, check=False,
    )


def _assert_clean_decode(result: subprocess.CompletedProcess[bytes], frames: int) -> None:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.decode().strip() == ""
    lines = [ln for ln in result.stdout.decode().splitlines() if not ln.startswith("#")]
    assert len(lines) >= frames


async def _first_frame_is_key(url: str) -> None:
    ffprobe = need_tool("ffprobe")
    result = await trio.run_process(
        [ffprobe, "-v", "error", "-read_intervals", "%+#5", "-select_streams", "v:0",
         "-show_entries", "frame=key_frame", "-of", "json", url],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    frames = json.loads(result.stdout)["frames"]
    assert frames and frames[0]["key_frame"] == 1


async def test_ffmpeg_joins_mid_stream_over_tcp_and_http_and_decodes_cleanly() -> None:
    with trio.fail_after(60):
        async with run_server([*SERVE_TEST, "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"],
                              fronts=2) as server:
            await trio.sleep(1.3)  # join mid-stream, between keyframes
            tcp = f"tcp://127.0.0.1:{server.port('tcp')}"
            http = f"http://127.0.0.1:{server.port('http')}/stream"
            _assert_clean_decode(await _ffmpeg_decode(tcp), frames=40)
            _assert_clean_decode(await _ffmpeg_decode(http), frames=40)
            await _first_frame_is_key(tcp)
            await _first_frame_is_key(http)


async def test_ffmpeg_decodes_through_a_chain_of_two_relays() -> None:
    with trio.fail_after(60):
        async with run_server([*SERVE_TEST, "--tcp", "127.0.0.1:0"], fronts=1) as origin:
            upstream = f"tcp://127.0.0.1:{origin.port('tcp')}"
            relay_args = ["--sync-method", "latest-keyframe", "--tcp", "127.0.0.1:0",
                          "--linger", "1"]
            async with run_server(["serve", upstream, *relay_args], fronts=1) as edge1:
                upstream2 = f"tcp://127.0.0.1:{edge1.port('tcp')}"
                async with run_server(["serve", upstream2, *relay_args], fronts=1) as edge2:
                    await trio.sleep(1.3)
                    url = f"tcp://127.0.0.1:{edge2.port('tcp')}"
                    _assert_clean_decode(await _ffmpeg_decode(url), frames=40)


async def test_gstreamer_tcpclientsrc_receives_the_stream() -> None:
    gst = need_tool("gst-launch-1.0")
    with trio.fail_after(60), tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "got.ts"
        async with run_server([*SERVE_TEST, "--tcp", "127.0.0.1:0"], fronts=1) as server:
            await trio.sleep(0.5)
            result = await trio.run_process(
                [gst, "-q", "tcpclientsrc", "host=127.0.0.1", f"port={server.port('tcp')}",
                 "num-buffers=40", "!", "filesink", f"location={out}"],
                capture_stdout=True, capture_stderr=True, check=False,
            )
            assert result.returncode == 0, result.stderr.decode()
        data = out.read_bytes()
        assert len(data) > 10_000 and data[0] == 0x47
        _assert_clean_decode(await _ffmpeg_decode(str(out), seconds=0.5), frames=5)


async def test_websocket_client_receives_whole_buffers() -> None:
    with trio.fail_after(60):
        async with (
            run_server([*SERVE_TEST, "--ws", "127.0.0.1:0"], fronts=1) as server,
            open_websocket_url(server.url("ws")) as ws,
        ):
            messages = [await ws.get_message() for _ in range(30)]
    assert all(isinstance(m, bytes) for m in messages)
    for message in messages:
        assert isinstance(message, bytes)
        assert len(message) % 188 == 0  # whole TS packets: whole buffers
        assert all(message[i] == 0x47 for i in range(0, len(message), 188))
    # the first messages are the streamheader (PAT, then PMT), then a keyframe unit
    assert len(messages[0]) == len(messages[1]) == 188
    assert messages[0][1:3] == b"\x40\x00"  # PID 0, payload unit start: the PAT


async def test_headless_chromium_shows_live_numbers() -> None:
    chromium = need_tool("chromium")
    with trio.fail_after(90), tempfile.TemporaryDirectory() as profile:
        async with run_server([*SERVE_TEST, "--http", "127.0.0.1:0"], fronts=1) as server:
            result = await trio.run_process(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--virtual-time-budget=3000", "--dump-dom", server.url("http")],
                capture_stdout=True, capture_stderr=True, check=False,
            )
    dom = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert '<span id="updated">updated ' in dom  # the page's script refreshed from /stats
    assert 'id="bytes_to_serve"' in dom


async def test_a_never_reading_client_is_dropped_while_ffmpeg_keeps_decoding() -> None:
    args = [*SERVE_TEST, "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0",
            "--buffers-max", "40", "--qos-dscp", "-1"]
    with trio.fail_after(60):
        async with run_server(args, fronts=2) as server:
            sock = trio.socket.socket()
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", server.port("tcp")))  # and never read
            await trio.sleep(0.5)
            url = f"http://127.0.0.1:{server.port('http')}/stream"
            _assert_clean_decode(await _ffmpeg_decode(url, seconds=3), frames=60)
            await server.wait_log(b"client removed (SLOW)")
            sock.close()


async def test_a_never_reading_client_is_resynced_while_ffmpeg_keeps_decoding() -> None:
    args = [*SERVE_TEST, "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0",
            "--buffers-soft-max", "20", "--recover-policy", "resync-keyframe"]
    with trio.fail_after(60):
        async with run_server(args, fronts=2) as server:
            sock = trio.socket.socket()
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", server.port("tcp")))
            url = f"http://127.0.0.1:{server.port('http')}/stream"
            _assert_clean_decode(await _ffmpeg_decode(url, seconds=3), frames=60)
            stats_url = f"http://127.0.0.1:{server.port('http')}/stats"
            curl = await trio.run_process(["python3", "-c", (
                "import sys,urllib.request;"
                "sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())"),
                stats_url], capture_stdout=True)
            doc = json.loads(curl.stdout)
            stalled = [c for c in doc["clients"] if c["front"] == "tcp"]
            assert stalled and stalled[0]["buffers_dropped"] > 0
            assert stalled[0]["status"] == "OK"
            sock.close()


async def test_workers_serve_clients_from_two_processes() -> None:
    args = [*SERVE_TEST, "--workers", "2", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    with trio.fail_after(60):
        async with run_server(args, fronts=2) as server:
            await trio.sleep(1.3)
            tcp = f"tcp://127.0.0.1:{server.port('tcp')}"
            http = f"http://127.0.0.1:{server.port('http')}/stream"
            async with trio.open_nursery() as nursery:  # at once: one per worker
                for url in (tcp, http):
                    nursery.start_soon(_first_frame_is_key, url)
            _assert_clean_decode(await _ffmpeg_decode(tcp), frames=40)
            await server.wait_log(b"worker 1: client added")
            await server.wait_log(b"worker 0: client added")
            server.process.send_signal(15)
            assert await server.process.wait() == 0


def _h264_file(frames: int = 60, gop: int = 10) -> bytes:
    """An H.264 Annex B stream made with PyAV (no container, no timestamps)."""
    import io

    import av
    import numpy as np

    out = io.BytesIO()
    container = av.open(out, "w", format="h264")
    video = container.add_stream("libx264", rate=25)
    video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
    video.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
                     "preset": "veryfast"}
    for i in range(frames):
        img = np.zeros((120, 160, 3), np.uint8)
        img[:, (i * 5) % 140 : (i * 5) % 140 + 20] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode(None):
        container.mux(packet)
    container.close()
    return out.getvalue()


async def test_h264_from_stdin_joins_on_a_keyframe_with_sps_pps_first() -> None:
    """`--format auto` detects Annex B; a client that joins late gets the
    SPS/PPS streamheader, then a burst that starts on an IDR, and decodes."""
    data = _h264_file()
    args = ["serve", "-", "--tcp", "127.0.0.1:0", "--sync-method", "burst-keyframe",
            "--burst-format", "buffers", "--burst-value", "15", "--buffers-min", "1000",
            "--linger", "5"]
    with trio.fail_after(60):
        async with run_server(args, fronts=1, stdin=True) as server:
            stdin = server.process.stdin
            assert stdin is not None
            await stdin.send_all(data)
            url = f"tcp://127.0.0.1:{server.port('tcp')}"
            async with trio.open_nursery() as nursery:
                results: list[subprocess.CompletedProcess[bytes]] = []

                async def decode() -> None:
                    ffmpeg = need_tool("ffmpeg")
                    results.append(await trio.run_process(
                        [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-xerror",
                         "-f", "h264", "-i", url, "-f", "framecrc", "-"],
                        capture_stdout=True, capture_stderr=True, check=False))

                nursery.start_soon(decode)
                await server.wait_log(b"client added")
                await stdin.aclose()  # end of input: the server drains the client, exits
            assert await server.process.wait() == 0
    _assert_clean_decode(results[0], frames=10)
