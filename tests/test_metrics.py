"""``/metrics``: the Prometheus text format of a sink, read back with
prometheus-client's own parser. In-process sinks for each rule (viewers by
front, removals by status, drops and resyncs, the lag histograms, the
source), the HTTP front's route, and a real ``trio-msink serve`` whose
counters move between two scrapes."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from _server import run_server
from conftest import RecordingStream, read_all, settle

from trio_msink import Buffer, ClientStatus, RecoverPolicy, Sink
from trio_msink.fronts import ClientRegistry, HttpFront

prometheus_client = pytest.importorskip("prometheus_client", reason="needs prometheus-client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from trio_msink.fronts.metrics import SinkMetrics  # noqa: E402

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Metric family types by name, and every sample by (name, sorted labels)."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, key
            samples[key] = sample.value
    return types, samples


def scrape(metrics: SinkMetrics) -> tuple[dict[str, str], Samples]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return parse(body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_viewers_by_front_bytes_and_removals_by_status() -> None:
    registry = ClientRegistry()
    metrics = SinkMetrics(registry=registry, fronts=["tcp", "http"])
    with trio.fail_after(10):
        async with Sink(**metrics.callbacks()) as sink:
            metrics.sink = sink
            a, b, c = RecordingStream(), RecordingStream(), RecordingStream()
            registry.register(a, "tcp")
            registry.register(b, "tcp")
            registry.register(c, "http")
            for stream in (a, b, c):
                sink.add(stream)
            await sink.send(Buffer(b"x" * 100))
            await settle()
            types, samples = scrape(metrics)
            assert types["trio_msink_clients"] == "gauge"
            assert types["trio_msink_clients_added"] == "counter"
            assert value(samples, "trio_msink_clients", front="tcp") == 2
            assert value(samples, "trio_msink_clients", front="http") == 1
            assert value(samples, "trio_msink_clients_added_total", front="tcp") == 2
            assert value(samples, "trio_msink_input_bytes_total", sink="stream") == 100
            assert value(samples, "trio_msink_output_bytes_total", sink="stream") == 300
            assert value(samples, "trio_msink_buffers_queued", sink="stream") == 1

            sink.remove(a)
            sink.add(c)  # a duplicate add: counted, and c is still served
            await settle()
            _, samples = scrape(metrics)
            assert value(samples, "trio_msink_clients", front="tcp") == 1
            assert value(samples, "trio_msink_clients", front="http") == 1
            assert value(samples, "trio_msink_clients_removed_total",
                         front="tcp", status="REMOVED") == 1
            assert value(samples, "trio_msink_clients_removed_total",
                         front="http", status="DUPLICATE") == 1
            # the process's own metrics, from the private registry
            assert types["process_cpu_seconds"] == "counter"
            assert types["python_info"] == "gauge"

            # a client added without a front is counted as "other"
            other = RecordingStream()
            sink.add(other)
            await settle()
            _, samples = scrape(metrics)
            assert value(samples, "trio_msink_clients", front="other") == 1


async def test_drops_resyncs_and_the_lag_histogram() -> None:
    metrics = SinkMetrics(process_metrics=False)
    with trio.fail_after(10):
        async with Sink(buffers_soft_max=3, recover_policy=RecoverPolicy.RESYNC_LATEST,
                        sync=False, **metrics.callbacks()) as sink:
            metrics.sink = sink
            slow = RecordingStream(stalled=True)
            fast = RecordingStream()
            sink.add(slow)
            sink.add(fast)
            await sink.send(Buffer(b"k" * 10))
            await settle()  # slow is stuck writing k: not lag
            for _ in range(3):
                await sink.send(Buffer(b"d" * 10, delta_unit=True))
            await settle()
            types, samples = scrape(metrics)
            assert types["trio_msink_client_lag_buffers"] == "histogram"
            # fast has no lag, slow 3 buffers (30 bytes)
            assert value(samples, "trio_msink_client_lag_buffers_bucket", le="0.0") == 1
            assert value(samples, "trio_msink_client_lag_buffers_bucket", le="2.0") == 1
            assert value(samples, "trio_msink_client_lag_buffers_bucket", le="5.0") == 2
            assert value(samples, "trio_msink_client_lag_buffers_bucket", le="+Inf") == 2
            assert value(samples, "trio_msink_client_lag_buffers_gsum") == 3
            assert value(samples, "trio_msink_client_lag_bytes_gsum") == 30
            assert value(samples, "trio_msink_client_lag_bytes_bucket", le="1024.0") == 2
            assert value(samples, "trio_msink_buffers_dropped_total") == 0
            assert value(samples, "trio_msink_client_resyncs_total") == 0

            await sink.send(Buffer(b"d" * 10, delta_unit=True))  # over the soft limit
            dropped = sink.get_stats(slow).buffers_dropped  # type: ignore[union-attr]
            assert dropped > 0
            _, samples = scrape(metrics)
            assert value(samples, "trio_msink_buffers_dropped_total") == dropped
            assert value(samples, "trio_msink_client_resyncs_total") == 1
            _, again = scrape(metrics)  # nothing new: the counters stay
            assert value(again, "trio_msink_client_resyncs_total") == 1

            for _ in range(4):  # a second resync, seen only at the removal
                await sink.send(Buffer(b"d" * 10, delta_unit=True))
            dropped = sink.get_stats(slow).buffers_dropped  # type: ignore[union-attr]
            sink.remove(slow)
            await settle()
            _, samples = scrape(metrics)
            assert value(samples, "trio_msink_buffers_dropped_total") == dropped
            assert value(samples, "trio_msink_client_resyncs_total") == 2
            assert value(samples, "trio_msink_clients_removed_total",
                         front="other", status="REMOVED") == 1
            assert value(samples, "trio_msink_client_lag_buffers_bucket", le="+Inf") == 1


async def test_source_state_and_counters() -> None:
    source: dict[str, Any] | None = None
    metrics = SinkMetrics(source_status=lambda: source,
                          source_states=["connecting", "live", "reconnecting"],
                          process_metrics=False)
    types, samples = scrape(metrics)  # no sink, no source yet: still valid
    assert "trio_msink_source_state" not in types
    assert value(samples, "trio_msink_buffers_dropped_total") == 0
    source = {"spec": "tcp://127.0.0.1:9", "state": "reconnecting", "uptime": 0.0,
              "bytes_in": 1234, "bitrate_in": 0, "reconnects": 2, "last_error": "refused"}
    types, samples = scrape(metrics)
    assert types["trio_msink_source_state"] == "gauge"
    assert value(samples, "trio_msink_source_state", state="reconnecting") == 1
    assert value(samples, "trio_msink_source_state", state="live") == 0
    assert value(samples, "trio_msink_source_state", state="connecting") == 0
    assert value(samples, "trio_msink_source_read_bytes_total") == 1234
    assert value(samples, "trio_msink_source_reconnects_total") == 2
    assert value(samples, "trio_msink_source_uptime_seconds") == 0


def test_openmetrics_when_the_scraper_asks() -> None:
    metrics = SinkMetrics(process_metrics=False)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b"# TYPE trio_msink_client_lag_bytes gaugehistogram" in body


async def _get(port: int, path: str, accept: str | None = None) -> tuple[bytes, bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: test\r\n"
    if accept is not None:
        request += f"Accept: {accept}\r\n"
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all((request + "\r\n").encode())
        head, _, body = (await read_all(stream)).partition(b"\r\n\r\n")
    return head, body


async def test_http_front_serves_metrics_only_when_given() -> None:
    with trio.fail_after(10):
        async with Sink() as sink, trio.open_nursery() as nursery:
            registry = ClientRegistry()
            metrics = SinkMetrics(sink, registry=registry)
            ports = []
            for front in (HttpFront(sink, registry=registry, metrics=metrics),
                          HttpFront(sink, registry=registry)):
                listeners = await nursery.start(partial(trio.serve_tcp, front.serve, 0,
                                                        host="127.0.0.1"))
                ports.append(listeners[0].socket.getsockname()[1])
            head, body = await _get(ports[0], "/metrics")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"content-type: text/plain; version=0.0.4" in head.lower()
            _, samples = parse(body.decode())
            assert value(samples, "trio_msink_output_bytes_total", sink="stream") == 0
            head, body = await _get(ports[0], "/metrics", "application/openmetrics-text")
            assert b"content-type: application/openmetrics-text" in head.lower()
            assert body.endswith(b"# EOF\n")
            head, _ = await _get(ports[1], "/metrics")
            assert head.startswith(b"HTTP/1.1 404 ")
            nursery.cancel_scope.cancel()


async def test_a_real_scrape_sees_the_counters_move() -> None:
    """``trio-msink serve test``: scrapes of its /metrics around viewers
    that join (two on TCP, one on WebSocket), receive and leave."""
    pytest.importorskip("av", reason="the test source needs PyAV")
    from trio_websocket import open_websocket_url

    async def get_metrics(port: int) -> Samples:
        head, body = await _get(port, "/metrics")
        assert head.startswith(b"HTTP/1.1 200 "), head
        return parse(body.decode())[1]

    with trio.fail_after(60):
        async with run_server(["serve", "test", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0",
                               "--ws", "127.0.0.1:0", "--linger", "0"], fronts=3) as server:
            http = server.port("http")
            before = await get_metrics(http)
            for front in ("tcp", "http", "websocket"):  # every front, before its first client
                assert value(before, "trio_msink_clients", front=front) == 0
            viewers = [await trio.open_tcp_stream("127.0.0.1", server.port("tcp"))
                       for _ in range(2)]
            for viewer in viewers:
                received = 0
                while received < 20_000:
                    received += len(await viewer.receive_some())
            async with open_websocket_url(server.url("ws")) as ws:
                await ws.get_message()
                with_ws = await get_metrics(http)
            assert value(with_ws, "trio_msink_clients", front="websocket") == 1
            assert value(with_ws, "trio_msink_clients_added_total", front="websocket") == 1
            # the browser viewers' video is a second Sink (--ws), with its own bytes
            assert ("trio_msink_output_bytes_total", (("sink", "video"),)) in with_ws
            during = await get_metrics(http)
            assert value(during, "trio_msink_clients", front="tcp") == 2
            assert value(during, "trio_msink_clients_added_total", front="tcp") == 2
            assert (value(during, "trio_msink_output_bytes_total", sink="stream")
                    >= value(before, "trio_msink_output_bytes_total", sink="stream") + 40_000)
            assert (value(during, "trio_msink_input_bytes_total", sink="stream")
                    > value(before, "trio_msink_input_bytes_total", sink="stream"))
            assert value(during, "trio_msink_source_state", state="live") == 1
            assert value(during, "trio_msink_client_lag_buffers_bucket", le="+Inf") == 2
            assert value(during, "process_cpu_seconds_total") > 0

            await viewers[0].aclose()

            async def removed() -> bool:
                samples = await get_metrics(http)
                key = ("trio_msink_clients_removed_total",
                       (("front", "tcp"), ("status", ClientStatus.CLOSED.name)))
                return samples.get(key) == 1 and value(
                    samples, "trio_msink_clients", front="tcp") == 1

            # the server notices the close on its next write: scrape until then
            for _ in range(100):
                if await removed():
                    break
                await trio.sleep(0.1)
            else:
                raise AssertionError("the closed viewer was never counted as removed")
            await viewers[1].aclose()


def documented_metrics() -> set[str]:
    """The metric names in docs/cli.md's table (counters without ``_total``)."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    return {re.sub(r"_total$", "", name)
            for name in re.findall(r"^\| `(trio_msink_\w+)", docs, re.MULTILINE)}


async def test_every_metric_is_in_the_docs_table() -> None:
    """docs/cli.md lists exactly the metrics the server renders."""
    documented = documented_metrics()
    source = {"state": "live", "bytes_in": 0, "reconnects": 0, "uptime": 0.0}
    async with Sink() as sink:
        metrics = SinkMetrics(sink, source_status=lambda: source, process_metrics=False)
        types, _ = scrape(metrics)
    rendered = {name for name in types
                if name.startswith("trio_msink_") and not name.endswith(("_gcount", "_gsum"))}
    assert rendered == documented


async def test_a_second_sink_is_counted_under_its_name() -> None:
    registry = ClientRegistry()
    metrics = SinkMetrics(registry=registry, process_metrics=False)
    with trio.fail_after(10):
        async with Sink(**metrics.callbacks()) as main, \
                Sink(**metrics.callbacks("video")) as video:
            metrics.sink = main
            metrics.add_sink("video", video)
            with pytest.raises(ValueError, match="name"):
                metrics.add_sink("video", main)
            viewer = RecordingStream()
            registry.register(viewer, "video")
            video.add(viewer)
            await video.send(Buffer(b"v" * 50))
            await settle()
            _, samples = scrape(metrics)
            assert value(samples, "trio_msink_clients", front="video") == 1
            assert value(samples, "trio_msink_output_bytes_total", sink="video") == 50
            assert value(samples, "trio_msink_output_bytes_total", sink="stream") == 0
            video.remove(viewer)
            await settle()
            _, samples = scrape(metrics)
            assert value(samples, "trio_msink_clients", front="video") == 0
            assert value(samples, "trio_msink_clients_removed_total",
                         front="video", status="REMOVED") == 1


async def test_metrics_need_the_operator_token_like_stats() -> None:
    """With tokens on, /metrics is an operator's resource, as /stats is."""
    pytest.importorskip("av", reason="the test source needs PyAV")

    async def status(port: int, path: str, token: str | None = None) -> bytes:
        request = f"GET {path} HTTP/1.1\r\nHost: test\r\n"
        if token is not None:
            request += f"Authorization: Bearer {token}\r\n"
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all((request + "\r\n").encode())
            return (await read_all(stream)).split(b" ", 2)[1]

    with trio.fail_after(60):
        async with run_server(["serve", "test", "--http", "127.0.0.1:0", "--linger", "0",
                               "--token", "viewer", "--admin-token", "operator"],
                              fronts=1) as server:
            http = server.port("http")
            for path in ("/stats", "/metrics"):
                assert await status(http, path) == b"401"
                assert await status(http, path, "viewer") == b"403"
                assert await status(http, path, "operator") == b"200"
