"""A tiny run of benchmarks/haproxy_latency.py (relay_latency.py with an
HAProxy as the hop): the table has a row without and a row with HAProxy,
and every buffer arrived through it; never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _server import need_tool

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_LATENCY = ROOT / "benchmarks" / "haproxy_latency.py"


def test_haproxy_latency_quick_measures_one_hop(tmp_path: Path) -> None:
    need_tool("haproxy")
    out_json = tmp_path / "haproxy.json"
    proc = subprocess.run(
        [sys.executable, str(HAPROXY_LATENCY), "--quick", "--json", str(out_json)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "_haproxy_hop.py HOST:PORT" in proc.stdout  # the hop is HAProxy, not a relay
    data = json.loads(out_json.read_text())
    assert [(r["hops"], r["runs"], r["bad"], r["errors"]) for r in data["results"]] == \
        [(0, 1, 0, []), (1, 1, 0, [])]
    for result in data["results"]:
        assert result["buffers"] > 0 and result["lost"] == 0
