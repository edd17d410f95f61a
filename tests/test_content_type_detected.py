"""``--format auto``: HTTP ``/stream`` is labelled with the detected format
(docs/cli.md): ``video/h264`` for an H.264 Annex B stream on stdin, also in
``--workers`` processes; an explicit ``--content-type`` always wins."""

from __future__ import annotations

import pytest
import trio
from _server import Running, need_tool, run_server


async def h264_stream() -> bytes:
    """Ten seconds of a small test picture as an H.264 Annex B stream, one
    keyframe a second, made by the real ffmpeg (``-f h264``)."""
    ffmpeg = need_tool("ffmpeg")
    result = await trio.run_process(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc=size=160x120:rate=25", "-t", "10", "-c:v", "libx264",
         "-preset", "ultrafast", "-g", "25", "-f", "h264", "-"],
        capture_stdout=True, capture_stderr=True)
    data: bytes = result.stdout
    assert data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")), data[:16]
    return data


async def get_stream(port: int) -> tuple[bytes, bytes]:
    """``GET /stream``: the response head (lower case) and the first body bytes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or data.endswith(b"\r\n\r\n"):
            chunk = await stream.receive_some()
            assert chunk, data
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return head.lower(), body


def content_type(head: bytes) -> bytes:
    [line] = [line for line in head.split(b"\r\n") if line.startswith(b"content-type:")]
    return line.split(b":", 1)[1].strip()


async def serving_h264(nursery: trio.Nursery, server: Running) -> None:
    """Feed the H.264 stream on the server's stdin (left open, so that the
    server keeps running) and wait until it has detected the format."""
    stdin = server.process.stdin
    assert stdin is not None
    nursery.start_soon(stdin.send_all, await h264_stream())
    await server.wait_log(b"input format: h264")


async def test_an_h264_stream_on_stdin_is_served_as_video_h264() -> None:
    args = ["serve", "-", "--http", "127.0.0.1:0"]
    with trio.fail_after(60):
        async with run_server(args, fronts=1, stdin=True) as server, \
                trio.open_nursery() as nursery:
            await serving_h264(nursery, server)
            head, body = await get_stream(server.port("http"))
            assert head.startswith(b"http/1.1 200"), head
            assert content_type(head) == b"video/h264"
            assert body.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")), body[:16]
            nursery.cancel_scope.cancel()


async def test_every_worker_process_labels_it_video_h264() -> None:
    args = ["serve", "-", "--http", "127.0.0.1:0", "--workers", "2"]
    with trio.fail_after(60):
        async with run_server(args, fronts=1, stdin=True) as server, \
                trio.open_nursery() as nursery:
            await serving_h264(nursery, server)
            # Connections are dealt round robin over the two processes. The
            # label reaches the worker ahead of the stream's first buffer: once
            # each process has sent a client stream bytes, it has the label.
            for _ in range(2):
                await get_stream(server.port("http"))
            labels = [content_type((await get_stream(server.port("http")))[0])
                      for _ in range(4)]
            assert labels == [b"video/h264"] * 4
            nursery.cancel_scope.cancel()


async def test_an_explicit_content_type_wins_over_the_detected_format() -> None:
    args = ["serve", "-", "--http", "127.0.0.1:0", "--content-type", "video/x-mine"]
    with trio.fail_after(60):
        async with run_server(args, fronts=1, stdin=True) as server, \
                trio.open_nursery() as nursery:
            await serving_h264(nursery, server)
            head, _ = await get_stream(server.port("http"))
            assert content_type(head) == b"video/x-mine"
            nursery.cancel_scope.cancel()


async def test_http_front_takes_a_string_or_a_callable_content_type() -> None:
    from trio_msink import Sink
    from trio_msink.fronts import HttpFront

    label = "video/mp2t"
    async with Sink() as sink:
        front = HttpFront(sink, content_type=lambda: label)
        assert dict(front._stream_headers())["Content-Type"] == "video/mp2t"
        label = "video/h264"  # asked for each response
        assert dict(front._stream_headers())["Content-Type"] == "video/h264"
        assert dict(HttpFront(sink, content_type="a/b")._stream_headers())["Content-Type"] \
            == "a/b"
        with pytest.raises(TypeError, match="content_type"):
            HttpFront(sink, content_type=5)  # type: ignore[arg-type]
