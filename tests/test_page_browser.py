"""The live page in a real browser (docs/fronts.md, "The browser viewer"):
headless Chromium, driven by Playwright, watches `trio-msink demo`.

The page exposes what it did on ``window.msink`` (frames decoded, decoder
errors, whether the first chunk was a keyframe, its latency estimate), and
the tests compare what it shows with ``/stats``. A screenshot is kept in
tests/artifacts/page.png for people to look at.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (test extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs the chromium binary")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts"
# The sum of the canvas's pixels: a cheap fingerprint of the picture.
CANVAS_SUM = """() => {
  const canvas = document.getElementById("video");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += data[i] + 2 * data[i + 1] + 3 * data[i + 2];
  return sum;
}"""
COUNTERS = """() => {
  const {framesDecoded, decoderErrors, firstChunkKey, latencyMs, chunksDecoded} = window.msink;
  return {framesDecoded, decoderErrors, firstChunkKey, latencyMs, chunksDecoded};
}"""


class Server:
    def __init__(self, *extra: str) -> None:
        command = [sys.executable, "-m", "trio_msink", *extra, "--tcp", "127.0.0.1:0",
                   "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self.urls: dict[str, str] = {}
        deadline = time.monotonic() + 30
        assert self.process.stdout is not None
        while len(self.urls) < 3:
            assert time.monotonic() < deadline, "the server printed no URLs"
            line = self.process.stdout.readline()
            assert line, "the server exited before listening"
            self.urls[line.split("://", 1)[0]] = line.strip()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.urls["http"] + "stats", timeout=10) as response:
            doc: dict[str, Any] = json.load(response)
        return doc

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


# One browser and one demo server for the module: each costs seconds to start.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def demo() -> Iterator[Server]:
    server = Server("demo")
    try:
        yield server
    finally:
        server.close()


def open_page(browser: Any, server: Server) -> Any:
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(server.urls["http"])
    return page


def test_the_page_plays_the_live_video(browser: Any, demo: Server) -> None:
    opened = time.monotonic()
    first = open_page(browser, demo)
    first.wait_for_function("window.msink.framesDecoded > 0", timeout=10_000)
    picture = first.evaluate(CANVAS_SUM)
    # A second viewer joins while the first watches.
    time.sleep(max(0.0, opened + 2.5 - time.monotonic()))
    second = open_page(browser, demo)
    second.wait_for_function("window.msink.framesDecoded >= 25", timeout=10_000)
    time.sleep(max(0.0, opened + 5.0 - time.monotonic()))

    # The first picture within a second on this machine when idle (typically
    # 0.2-0.4 s); the bound is generous for a loaded CI machine.
    first_frame = first.evaluate("window.msink.firstFrameMs")
    print(f"first picture {first_frame:.0f} ms after the page was opened")
    assert first_frame < 5000
    watched = first.evaluate(COUNTERS)
    assert watched["framesDecoded"] >= 100, watched
    assert watched["decoderErrors"] == 0
    assert watched["firstChunkKey"] is True
    assert first.evaluate(CANVAS_SUM) != picture  # the picture moves
    first.wait_for_function("window.msink.latencyMs !== null", timeout=10_000)
    assert first.evaluate("window.msink.latencyMs") < 500
    joined = second.evaluate(COUNTERS)
    assert joined["firstChunkKey"] is True and joined["decoderErrors"] == 0, joined
    assert first.errors == [] and second.errors == []

    # A raw-stream client too, so the table has two fronts.
    tcp_host, tcp_port = demo.urls["tcp"].removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((tcp_host, int(tcp_port)), timeout=10) as raw:
        raw.recv(188)
        first.wait_for_function(
            "document.querySelectorAll('#client-rows tr').length === 3", timeout=10_000)
        stats = demo.stats()
        fronts = first.eval_on_selector_all("#client-rows td.front",
                                            "cells => cells.map(c => c.textContent)")
        lags = first.eval_on_selector_all("#client-rows div.lag",
                                          "bars => bars.map(b => Number(b.dataset.lag))")
    assert sorted(fronts) == sorted(row["front"] for row in stats["clients"])
    assert sorted(fronts) == ["tcp", "video", "video"]
    assert all(lag >= 0 for lag in lags) and len(lags) == 3
    shown = first.evaluate("window.msink.stats")
    assert shown["total_clients"] == len(fronts)
    assert first.evaluate("window.msink.history.at(-1).viewers") == shown["total_clients"]
    video = stats["video"]
    assert first.inner_text("#stream-codec") == video["codec"]
    size = f"{video['width']} \N{MULTIPLICATION SIGN} {video['height']}"
    assert first.inner_text("#stream-resolution") == size
    assert first.inner_text("#source-state") == stats["source"]["state"] == "live"
    commands = first.inner_text("#player-commands")
    assert f"ffplay -fflags nobuffer {demo.urls['tcp']}" in commands
    assert f"vlc {demo.urls['http']}stream" in commands
    assert "gst-launch-1.0 souphttpsrc" in commands

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "page.png"
    first.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the page: {shot}")
    first.close()
    second.close()


def test_a_stream_the_browser_cannot_play_is_said_in_one_sentence(browser: Any) -> None:
    server = Server("demo", "--format", "raw")
    try:
        page = open_page(browser, server)
        page.wait_for_function("window.msink.unsupported !== null", timeout=10_000)
        message = page.inner_text("#video-message")
        assert "raw" in message and "player commands below" in message
        assert message.count(". ") == 0  # one sentence
        assert f"vlc {server.urls['http']}stream" in page.inner_text("#player-commands")
        page.close()
    finally:
        server.close()


def test_with_many_clients_the_page_reads_the_summary_and_pages(browser: Any,
                                                                  demo: Server) -> None:
    tcp_host, tcp_port = demo.urls["tcp"].removeprefix("tcp://").rsplit(":", 1)
    clients = [socket.create_connection((tcp_host, int(tcp_port)), timeout=10)
               for _ in range(110)]
    try:
        page = open_page(browser, demo)
        # (The server accepts the 110 connections while the page loads.)
        page.wait_for_function("window.msink.stats.summary !== undefined"
                               " && window.msink.stats.total_clients >= 110", timeout=10_000)
        page.wait_for_function("!document.getElementById('pager').hidden", timeout=10_000)
        shown = page.evaluate("window.msink.stats")
        page.wait_for_function("performance.getEntriesByType('resource')"
                               ".some(entry => entry.name.includes('summary=1'))",
                               timeout=10_000)
        assert shown["summary"]["clients"] == shown["total_clients"] >= 110
        assert shown["summary"]["by_front"]["tcp"] == 110
        assert page.locator("#client-rows tr").count() == 50
        assert page.inner_text("#page-label").startswith("1\N{EN DASH}50 of ")
        page.click("#page-next")
        page.wait_for_function(
            "document.getElementById('page-label').textContent.startsWith('51')",
            timeout=10_000)
        assert "p99" in page.inner_text("#viewer-summary")
        assert page.errors == []
        page.close()
    finally:
        for client in clients:
            client.close()
