"""The live page's resources on the HTTP front (docs/fronts.md, "The live
page"): the summary and pages of /stats, /time, the page's files, and the
browser viewers' video (BrowserVideo) over a WebSocket path of its own."""

from __future__ import annotations

import json
import struct
import time
from functools import partial
from importlib import resources

import pytest
import trio
import trio.testing
from _server import run_server
from conftest import poll_until
from test_access_units import encode, ts_units
from test_front_http import fetch, start_front
from trio_websocket import open_websocket_url

from trio_msink import Buffer, Sink
from trio_msink.framing import MpegTsFramer
from trio_msink.fronts import ClientRegistry, HttpFront, WebSocketFront
from trio_msink.fronts._stats_document import LAG_BUCKETS, StatsQuery, stats_document, summarize
from trio_msink.fronts.browser import KIND_CONFIG, KIND_UNIT, MAGIC, BrowserVideo

HEADER = struct.Struct(">4sBBBxqd")


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


async def test_stats_summary_and_pages_have_a_bounded_size() -> None:
    with trio.fail_after(10):
        async with Sink(buffers_soft_max=5, buffers_max=50) as sink, \
                trio.open_nursery() as nursery:
            front = HttpFront(sink)
            streams = []
            for i in range(30):
                send, _ = trio.testing.memory_stream_one_way_pair()
                front.registry.register(send, "tcp" if i % 3 else "ws", f"10.0.0.{i}:1")
                sink.add(send)
                streams.append(send)
            await sink.send(b"x" * 10)
            port = await start_front(nursery, front)
            full = json.loads((await fetch(port, get("/stats"))).body)
            assert full["total_clients"] == 30 and len(full["clients"]) == 30
            assert full["limits"]["stream"] == {"soft": 5, "hard": 50}
            summary = json.loads((await fetch(port, get("/stats?summary=1"))).body)
            assert "clients" not in summary
            assert summary["summary"]["clients"] == 30
            assert summary["summary"]["by_front"] == {"ws": 10, "tcp": 20}
            assert summary["summary"]["bytes_sent"] == sum(
                row["bytes_sent"] for row in full["clients"])
            page = json.loads((await fetch(port, get("/stats?offset=25&limit=10"))).body)
            assert [row["address"] for row in page["clients"]] == [
                f"10.0.0.{i}:1" for i in range(25, 30)]
            assert (page["offset"], page["limit"], page["total_clients"]) == (25, 10, 30)
            both = json.loads((await fetch(port, get("/stats?summary=1&limit=2"))).body)
            assert len(both["clients"]) == 2 and both["summary"]["clients"] == 30
            bad = await fetch(port, get("/stats?limit=-1"))
            assert bad.status == 400 and b"limit" in bad.body
            nursery.cancel_scope.cancel()


def test_summary_size_does_not_grow_with_the_clients() -> None:
    def rows(n: int) -> list[dict[str, object]]:
        return [{"front": "tcp", "status": "OK", "bytes_sent": 10, "buffers_dropped": 0,
                 "lag_buffers": i % 300} for i in range(n)]

    small, large = summarize(rows(10)), summarize(rows(9_000))
    assert abs(len(json.dumps(small)) - len(json.dumps(large))) < 40
    lag = large["lag_buffers"]
    assert sum(b["count"] for b in lag["histogram"]) == 9_000
    assert [b["upto"] for b in lag["histogram"]] == [*LAG_BUCKETS, None]
    assert lag["max"] == 299 and lag["p50"] == 150
    assert summarize([])["lag_buffers"]["max"] == 0


def test_stats_query_names_the_bad_parameter() -> None:
    assert StatsQuery.parse({"summary": "1", "offset": "3"}) == StatsQuery(True, 3, None)
    with pytest.raises(ValueError, match="offset"):
        StatsQuery.parse({"offset": "x"})


async def test_time_and_the_page_files() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            port = await start_front(nursery, HttpFront(sink))
            before = time.time() * 1000
            reply = json.loads((await fetch(port, get("/time"))).body)
            assert before - 1 <= reply["time"] <= time.time() * 1000 + 1
            package = resources.files("trio_msink.fronts").joinpath("page")
            for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
                response = await fetch(port, get(f"/{name}"))
                assert response.status == 200
                assert response.headers["content-type"].startswith(kind)
                assert response.body == package.joinpath(name).read_bytes()
            page = (await fetch(port, get("/"))).body.decode()
            assert '<script type="application/json" id="initial-stats">' in page
            assert (await fetch(port, get("/index.html"))).status == 404
            nursery.cancel_scope.cancel()


def ts_buffers() -> tuple[list[Buffer], list[Buffer]]:
    """The headers, then the video buffers (one access unit each)."""
    framer = MpegTsFramer()
    buffers = framer.feed(encode("mpegts")) + framer.flush()
    return framer.streamheader, [b for b in buffers if b.pts is not None]


async def test_browser_viewers_get_the_config_then_keyframe_first_units() -> None:
    headers, buffers = ts_buffers()
    with trio.fail_after(20):
        async with BrowserVideo("mpegts") as video, Sink() as sink, \
                trio.open_nursery() as nursery:
            registry = ClientRegistry()
            viewers = WebSocketFront(video.sink, registry=registry, name="video")
            front = WebSocketFront(sink, registry=registry, routes={"/video": viewers})
            listeners = await nursery.start(
                partial(trio.serve_tcp, front.serve_stream, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            video.set_streamheader(headers)
            for buffer in buffers[:13]:  # a keyframe at 0 and at 10
                await video.send(buffer)
            async with open_websocket_url(f"ws://127.0.0.1:{port}/video") as ws:
                await poll_until(lambda: video.sink.num_handles == 1)
                for buffer in buffers[13:16]:
                    await video.send(buffer)
                messages = [await ws.get_message() for _ in range(7)]
            fields = [HEADER.unpack_from(m) for m in messages]
            assert all(f[0] == MAGIC and f[1] == 1 for f in fields)
            config = json.loads(messages[0][HEADER.size :])
            assert fields[0][2] == KIND_CONFIG
            assert config["codec"].startswith("avc1.") and config["width"] == 160
            # LATEST_KEYFRAME: the newest keyframe in history (unit 10), then on.
            assert [f[2] for f in fields[1:]] == [KIND_UNIT] * 6
            assert [f[3] & 1 for f in fields[1:]] == [1, 0, 0, 0, 0, 0]
            assert abs(fields[1][5] - time.time() * 1000) < 10_000
            status = video.status()
            assert status["keyframe_interval"] == pytest.approx(1.0)
            assert status["units"] == 16  # one per buffer, whoever watches
            doc = stats_document(sink, registry, video=video)
            assert doc["video"]["codec"] == config["codec"]
            nursery.cancel_scope.cancel()


def test_browser_video_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="soft_limit"):
        BrowserVideo(soft_limit=2, hard_limit=1)
    raw = BrowserVideo("raw")
    assert raw.config is not None and raw.config.codec is None
    assert "raw" in (raw.config.reason or "")


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_gives_browser_viewers_keyframe_first_units(workers: int) -> None:
    """`serve test`: the page's `fronts.video` URL (the WebSocket front's
    /video; with --workers, a port of the main process, whichever process
    answers /stats) gives the config, then units from a keyframe."""
    args = ["serve", "test", "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0",
            "--workers", str(workers)]
    with trio.fail_after(60):
        async with run_server(args, fronts=2) as server:
            http_port = server.port("http")
            urls = set()
            for _ in range(3):  # with workers, each process answers in turn
                doc = json.loads((await fetch(http_port, get("/stats"))).body)
                urls.add(doc["fronts"]["video"])
            (url,) = urls
            if workers == 1:
                assert url == server.url("ws") + "video"
            async with open_websocket_url(url) as ws:
                messages = [await ws.get_message() for _ in range(3)]
            kinds = [HEADER.unpack_from(m)[2:4] for m in messages]
            assert kinds == [(KIND_CONFIG, 0), (KIND_UNIT, 3), (KIND_UNIT, 2)]
            config = json.loads(messages[0][HEADER.size :])
            assert (config["width"], config["height"]) == (320, 240)


async def test_a_slow_viewer_jumps_to_the_newest_keyframe() -> None:
    """The browser sink's RESYNC_KEYFRAME with a soft limit in time: a viewer
    that stops reading drops to a keyframe instead of falling behind."""
    headers, buffers = ts_buffers()
    units = ts_units(encode("mpegts"))  # the same stream's units, to name them
    with trio.fail_after(20):
        async with BrowserVideo("mpegts", soft_limit=0.5) as video:
            video.set_streamheader(headers)
            send, receive = trio.testing.lockstep_stream_one_way_pair()
            video.sink.add(send)
            for buffer in buffers[:25]:  # 2.5 s of pictures; keyframes at 0, 1 and 2 s
                await video.send(buffer)
            # The config message and the first keyframe were being written
            # when the viewer stalled; what came next waited, and the soft
            # limit (0.5 s) made it skip to the keyframe at 1 s, then to the
            # one at 2 s: it resumes there, not 2 s behind.
            stats = video.sink.get_stats(send)
            assert stats is not None and stats.buffers_dropped >= 10
            assert stats.lag_buffers == 5
            messages = [await receive.receive_some() for _ in range(2 + 5)]
            fields = [HEADER.unpack_from(message) for message in messages]
            assert fields[0][2] == KIND_CONFIG
            assert [f[3] & 1 for f in fields[1:]] == [1, 1, 0, 0, 0, 0]
            expected = [units[0], *units[20:25]]
            assert [f[4] for f in fields[1:]] == [round((u.pts or 0) * 1e6) for u in expected]


async def test_summary_answers_are_shared_for_half_a_second(
        mock_clock: trio.testing.MockClock) -> None:
    async with Sink() as sink:
        front = HttpFront(sink)
        query = StatsQuery(summary=True)

        def clients() -> int:
            count: int = json.loads(front._stats_body(query))["summary"]["clients"]
            return count

        send, _ = trio.testing.memory_stream_one_way_pair()
        front.registry.register(send, "tcp", "10.0.0.1:1")
        sink.add(send)
        assert clients() == 1
        other, _ = trio.testing.memory_stream_one_way_pair()
        front.registry.register(other, "tcp", "10.0.0.2:1")
        sink.add(other)
        assert clients() == 1  # built once for every page that asks within 0.5 s
        assert json.loads(front._stats_body(StatsQuery()))["total_clients"] == 2  # full: fresh
        mock_clock.jump(0.6)
        assert clients() == 2
