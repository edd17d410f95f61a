"""A tiny run of the WebSocket benchmark (benchmarks/websocket.py) with the
two trio_msink servers only (the peers need a registry to install): 4
clients, a 1 s window. It checks the table, that every WebSocket client
stayed on message boundaries, and the ratio line; never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEBSOCKET = ROOT / "benchmarks" / "websocket.py"


def test_websocket_benchmark_smoke(tmp_path: Path) -> None:
    out_json = tmp_path / "websocket.json"
    proc = subprocess.run(
        [sys.executable, str(WEBSOCKET), "--servers", "trio-tcp,trio-ws", "--clients", "4",
         "--duration", "1", "--warmup", "0.3", "--repeat", "1", "--client-procs", "1",
         "--rate", "100000", "--cache", str(tmp_path / "cache"), "--json", str(out_json)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert any(line.startswith("| server") for line in proc.stdout.splitlines())
    assert "ratio trio-ws/trio-tcp N=4: CPU " in proc.stdout
    data = json.loads(out_json.read_text())
    rows = {row["server"]: row for row in data["results"]}
    assert set(rows) == {"trio-tcp", "trio-ws"}
    for row in rows.values():
        assert not row["error"], row["error"]
        assert row["buffers"] > 0 and row["lost"] == 0
        assert row["bad"] == 0  # every client stayed on buffer (message) boundaries
