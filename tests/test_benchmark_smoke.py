"""A tiny run of the fan-out benchmark (benchmarks/fanout.py) against the
trio_msink server only: 3 clients, 1 s window. Checks the table's shape and
that bytes flowed; never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FANOUT = ROOT / "benchmarks" / "fanout.py"
COLUMNS = ["server", "scenario", "size", "N", "src MB/s", "MB/s", "MB/CPU-s", "CPU %",
           "p50 ms", "p99 ms", "loss %", "drops", "TTFB p50 ms", "TTFB p99 ms", "RSS MiB",
           "KiB/client"]


@pytest.mark.parametrize("trio_cmd", ["cli", "library"])
def test_fanout_smoke(tmp_path: Path, trio_cmd: str) -> None:
    out_json = tmp_path / "fanout.json"
    proc = subprocess.run(
        [sys.executable, str(FANOUT), "--servers", "trio", "--trio-cmd", trio_cmd,
         "--scenarios", "unpaced", "--sizes", "1316", "--clients", "3",
         "--duration", "1", "--warmup", "0.3", "--repeat", "1", "--client-procs", "1",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| server"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == COLUMNS
    data = json.loads(out_json.read_text())
    assert data["columns"] == COLUMNS
    [row] = data["results"]
    assert (row["server"], row["scenario"], row["size"], row["clients"]) == \
        ("trio", "unpaced", 1316, 3)
    assert not row["error"], row["error"]
    assert row["mb_s"] > 0
    assert row["buffers"] > 0
    assert row["bad"] == 0  # every client stayed on buffer boundaries
    assert row["p50_ms"] is not None and row["rss_mib"] > 0
