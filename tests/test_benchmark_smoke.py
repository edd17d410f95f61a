"""Tiny runs of the benchmarks: the fan-out benchmark (benchmarks/fanout.py)
against the trio_msink server only (3 clients, 1 s window) and the relay-hop
latency benchmark (benchmarks/relay_latency.py --quick). They check the
tables' shape, that bytes flowed whole and in order, and that the fan-out
report takes its targets from the plan's table; never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
FANOUT = BENCHMARKS / "fanout.py"
RELAY_LATENCY = BENCHMARKS / "relay_latency.py"
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


RELAY_COLUMNS = ["Mbit/s", "relays", "N", "samples", "p50 ms", "p99 ms", "+p50 ms/relay",
                 "+p99 ms/relay", "loss %", "delivered %", "origin CPU %", "CPU %/relay"]


def _table(stdout: str) -> list[list[str]]:
    """The rows of the first markdown table in ``stdout`` (header first, no rule)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in stdout.splitlines() if line.startswith("|")]
    return [rows[0], *rows[2:]]


def test_relay_latency_quick_prints_a_row_per_relay_count(tmp_path: Path) -> None:
    out_json = tmp_path / "relays.json"
    proc = subprocess.run(
        [sys.executable, str(RELAY_LATENCY), "--quick", "--json", str(out_json)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, *rows = _table(proc.stdout)
    assert header == RELAY_COLUMNS
    cells = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(c["Mbit/s"], c["relays"], c["N"]) for c in cells] == \
        [("4", "0", "2"), ("4", "1", "2"), ("4", "3", "2")]
    for c in cells:
        assert int(c["samples"]) > 0
        assert 0 <= float(c["p50 ms"]) <= float(c["p99 ms"])
        assert float(c["loss %"]) == 0  # every buffer arrived, through every relay
        assert float(c["delivered %"]) > 0
        assert float(c["origin CPU %"]) >= 0
    for c in cells[1:]:  # the added latency is a number (of either sign: noise)
        float(c["+p50 ms/relay"])
        float(c["+p99 ms/relay"])
        assert float(c["CPU %/relay"]) >= 0
    assert cells[0]["+p50 ms/relay"] == cells[0]["CPU %/relay"] == "-"
    data = json.loads(out_json.read_text())
    assert [(r["hops"], r["runs"], r["bad"], r["errors"]) for r in data["results"]] == \
        [(0, 1, 0, []), (1, 1, 0, []), (3, 1, 0, [])]


@pytest.fixture
def bench_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The benchmark's modules importable (they import each other by bare name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield
    for name in ("_plan", "_results", "_report", "_servers", "_common", "compare"):
        sys.modules.pop(name, None)


def test_fanout_targets_come_from_the_plan_table(
        bench_modules: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import _plan
    import _report
    from _results import Result

    def rows(server: str, kib: float, ttfb: float, mb_s: float) -> list[Result]:
        return [Result(server, "paced-sweep", 1316, 100, mb_s=mb_s),
                Result(server, "unpaced", 65536, 100, mb_s=mb_s),
                Result(server, "stalled-all", 4096, 1000, kib_per_client=kib),
                Result(server, "ttfb", 1316, 100, ttfb_p50_ms=ttfb)]

    results = rows("gst", 2.0, 15.0, 100.0) + rows("trio", 19.0, 1.0, 60.0)
    lines = _report.target_lines(results)
    assert lines == [
        "paced sweep 1316 B N=100: trio/gst = 0.60x (target >= 0.5x) MET",
        "unpaced 65536 B N=100: trio/gst = 0.60x (target >= 1.0x) MISSED",
        "memory stalled-all 4096 B N=1000: trio 19.0 KiB/client (target < 20) MET",
        "TTFB at 50 kB/s 1316 B N=100: trio 1.00 ms vs gst 15.00 ms (target: below) MET",
    ]
    # One table: a changed need changes the verdict, a removed target its line.
    paced, _unpaced, memory, _ttfb = _plan.TARGETS
    monkeypatch.setattr(_report, "TARGETS", (replace(paced, need=0.75), memory))
    assert _report.target_lines(results) == [
        "paced sweep 1316 B N=100: trio/gst = 0.60x (target >= 0.75x) MISSED",
        "memory stalled-all 4096 B N=1000: trio 19.0 KiB/client (target < 20) MET",
    ]


def test_compare_puts_runs_side_by_side(bench_modules: None, tmp_path: Path) -> None:
    import compare
    from _report import format_table
    from _results import Result

    def run(trio_mb_s: float) -> str:
        results = [Result("gst", "unpaced", 4096, 100, mb_s=1000.0, p99_ms=50.0),
                   Result("trio", "unpaced", 4096, 100, mb_s=trio_mb_s, p99_ms=10.0,
                          mb_per_cpu_s=trio_mb_s),
                   Result("trio", "ttfb", 1316, 100, ttfb_p50_ms=2.0)]
        return "machine: ...\n\n" + format_table(results) + "\n\n(total 1 s)\n"

    (tmp_path / "before.txt").write_text(run(4000.0))
    (tmp_path / "after.txt").write_text(run(3000.0))
    runs = [compare.read_run(tmp_path / name) for name in ("before.txt", "after.txt")]
    assert compare.compare(runs, ["before", "after"]).splitlines() == [
        "| case (trio) | figure | before | after |",
        "|---|---|---:|---:|",
        "| unpaced 4096 B N=100 | MB/s | 4000.0 | 3000.0 |",
        "| unpaced 4096 B N=100 | trio/gst MB/s | 4.00x | 3.00x |",
        "| unpaced 4096 B N=100 | MB/CPU-s | 4000 | 3000 |",
        "| unpaced 4096 B N=100 | p99 ms | 10.00 | 10.00 |",
        "| ttfb 1316 B N=100 | TTFB p50 ms | 2.00 | 2.00 |",
    ]
    (tmp_path / "empty.txt").write_text("no table here\n")
    with pytest.raises(ValueError, match=r"no fanout\.py table"):
        compare.read_run(tmp_path / "empty.txt")


CLIENT_MEMORY = BENCHMARKS / "client_memory.py"
TEN_THOUSAND = BENCHMARKS / "ten_thousand.py"


def test_client_memory_reports_bytes_per_client_and_where_they_go(tmp_path: Path) -> None:
    out_json = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(CLIENT_MEMORY), "--clients", "20", "--settle", "0.3",
         "--top", "5", "--json", str(out_json)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "## reading clients: 20, server inproc" in proc.stdout
    assert "## stalled clients: 20, server inproc" in proc.stdout
    data = json.loads(out_json.read_text())
    assert data["clients"] == 20
    for kind in ("reading", "stalled"):
        result = data["kinds"][kind]
        assert result["handles"] == 20  # every client was served while measured
        # Each connected client allocates something, spread over the sites shown.
        assert result["traced_per_client"] > 0
        assert result["blocks_per_client"] > 0
        assert 0 < len(result["sites"]) <= 5 and 0 < len(result["owners"]) <= 5
        assert all(site["site"] and isinstance(site["bytes"], float)
                   for site in result["sites"])
        assert isinstance(result["rss_per_client"], float)


def test_client_memory_measures_a_serve_subprocess_by_rss(tmp_path: Path) -> None:
    out_json = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(CLIENT_MEMORY), "--clients", "10", "--settle", "0.3",
         "--server", "serve", "--kinds", "reading", "--json", str(out_json)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out_json.read_text())["kinds"]["reading"]
    assert set(result) == {"rss_per_client"}  # tracemalloc sees only in-process servers
    assert "RSS per client:" in proc.stdout


def test_ten_thousand_small_run_delivers_every_buffer(tmp_path: Path) -> None:
    out_json = tmp_path / "ten.json"
    proc = subprocess.run(
        [sys.executable, str(TEN_THOUSAND), "--clients", "30", "--procs", "3",
         "--duration", "1", "--warmup", "0.3", "--json", str(out_json)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, *rows = _table(proc.stdout)
    assert header[:5] == ["clients", "connected", "rate/client", "MB/s expected", "delivered %"]
    assert len(rows) == 1 and rows[0][:2] == ["30", "30"]
    assert "no loss: met" in proc.stdout  # whole buffers, in sequence, none lost
    data = json.loads(out_json.read_text())
    assert [w["connected"] for w in data["waves"]] == [10, 10, 10]  # three waves
    assert data["readers"] == 30 and data["lost"] == 0 and data["bad"] == 0
    assert data["bytes"] > 0 and data["p99_ms"] is not None
    assert data["fd_limit"] >= 30
