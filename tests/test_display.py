"""The server's operator display: a live rich table, or log lines."""

from __future__ import annotations

import logging

import pytest
import trio
from conftest import RecordingStream, settle
from rich.console import Console

from trio_msink import ClientStatus, Sink
from trio_msink.cli._display import Display
from trio_msink.fronts import ClientRegistry


async def test_live_table_shows_every_client() -> None:
    with trio.fail_after(5):
        registry = ClientRegistry()
        display = Display(registry, interactive=True)
        async with Sink() as sink:
            display.sink = sink
            stream = RecordingStream()
            registry.register(stream, "tcp", "10.0.0.7:5555")
            sink.add(stream)
            await sink.send(b"x" * 2000)
            await settle()
            console = Console(record=True, width=120)
            console.print(display._table())
            text = console.export_text()
    assert "10.0.0.7:5555" in text and "tcp" in text and "OK" in text
    assert "2.0 kB" in text
    assert "1 clients" in text


async def test_log_lines_without_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_msink.cli")
    with trio.fail_after(5):
        registry = ClientRegistry()
        display = Display(registry, interactive=False)
        async with Sink(on_client_added=display.client_added,
                        on_client_removed=display.client_removed) as sink:
            display.sink = sink
            stream = RecordingStream()
            registry.register(stream, "http", "192.0.2.1:80")
            sink.add(stream)
            await sink.send(b"abc")
            await settle()
            sink.remove(stream)
    messages = [r.getMessage() for r in caplog.records]
    assert "client added: http 192.0.2.1:80" in messages
    assert any(m.startswith(f"client removed ({ClientStatus.REMOVED.name}): http 192.0.2.1:80")
               for m in messages)
