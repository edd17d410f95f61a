#!/usr/bin/env python3
"""Side by side: the key figures of several fanout.py runs, one column per run.

    python benchmarks/compare.py before.txt after.txt
    python benchmarks/compare.py run1.txt run2.txt after.txt \\
        --label "before, run 1" --label "before, run 2" --label after

Each file is what ``fanout.py`` printed on stdout (its table is found in the
text) or the file its ``--json`` wrote. Prints one markdown table: a row per
case and figure (:data:`FIGURES`), a column per run, ``-`` where a run has no
such case. Used for before/after comparisons of a change to the library (see
benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from _report import COLUMNS, format_cell

#: The figures compared per scenario: (server row, column of fanout's table,
#: the figure's name here). "trio" is replaced by ``--server``.
FIGURES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "unpaced": (("trio", "MB/s", "MB/s"), ("trio/gst", "MB/s", "trio/gst MB/s"),
                ("trio", "MB/CPU-s", "MB/CPU-s"), ("trio", "p99 ms", "p99 ms")),
    "paced-sweep": (("trio", "MB/s", "MB/s"), ("trio/gst", "MB/s", "trio/gst MB/s"),
                    ("trio", "MB/CPU-s", "MB/CPU-s"), ("trio", "p99 ms", "p99 ms")),
    "stalled": (("trio", "MB/CPU-s", "MB/CPU-s"), ("trio", "p99 ms", "p99 ms"),
                ("trio", "RSS MiB", "RSS MiB")),
    "stalled-all": (("trio", "KiB/client", "KiB/client"), ("trio", "RSS MiB", "RSS MiB")),
    "churn": (("trio", "TTFB p50 ms", "TTFB p50 ms"), ("trio", "p99 ms", "p99 ms")),
    "ttfb": (("trio", "TTFB p50 ms", "TTFB p50 ms"), ("gst", "TTFB p50 ms", "TTFB p50 ms, gst")),
}

Rows = dict[tuple[str, str, str, str], dict[str, str]]  # (server, scenario, size, N) -> cells


def read_run(path: Path) -> Rows:
    """The rows of one run's table, from fanout.py's stdout or its ``--json`` file.

    Raises ValueError if the file holds neither.
    """
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return _rows_from_json(json.loads(text))
    lines = [line for line in text.splitlines() if line.startswith("| server ")]
    if not lines:
        raise ValueError(f"{path}: no fanout.py table (a line starting with '| server ')")
    header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    start = text.splitlines().index(lines[0])
    rows: Rows = {}
    for line in text.splitlines()[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|")),
                         strict=True))
        rows[(cells["server"], cells["scenario"], cells["size"], cells["N"])] = cells
    return rows


def _rows_from_json(data: dict[str, object]) -> Rows:
    rows: Rows = {}
    ratios = data.get("ratios")
    for row in ratios if isinstance(ratios, list) else []:
        rows[(row["server"], row["scenario"], row["size"], row["N"])] = row
    results = data.get("results")
    columns = data.get("columns")
    if not isinstance(results, list) or not isinstance(columns, list):
        raise ValueError("not a fanout.py --json file (no results/columns)")
    for result in results:  # the cells of the printed table, formatted by the same code
        cells = {header: format_cell(result.get(attr), fmt) for header, attr, fmt in COLUMNS}
        rows[(cells["server"], cells["scenario"], cells["size"], cells["N"])] = cells
    return rows


def compare(runs: Sequence[Rows], labels: Sequence[str], server: str = "trio") -> str:
    """The markdown table: a row per (case, figure) that some run has."""
    cases = sorted({(scen, size, n) for rows in runs for (_, scen, size, n) in rows},
                   key=lambda c: (list(FIGURES).index(c[0]) if c[0] in FIGURES else 99,
                                  int(c[1]), int(c[2])))
    out = [f"| case ({server}) | figure | " + " | ".join(labels) + " |",
           "|---|---|" + "---:|" * len(labels)]
    for scen, size, n in cases:
        for row_server, column, name in FIGURES.get(scen, ()):
            row_server = row_server.replace("trio", server)
            values = [rows.get((row_server, scen, size, n), {}).get(column, "") or "-"
                      for rows in runs]
            if all(v == "-" for v in values):
                continue
            out.append(f"| {scen} {size} B N={n} | {name} | " + " | ".join(values) + " |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="fanout.py outputs or --json files")
    p.add_argument("--label", action="append", default=[],
                   help="a column's title, once per run in order (default: file names)")
    p.add_argument("--server", default="trio",
                   help="the trio variant to compare: trio, trio-w2, ... (default: trio)")
    args = p.parse_args(argv)
    if args.label and len(args.label) != len(args.runs):
        p.error(f"{len(args.label)} --label for {len(args.runs)} runs")
    try:
        runs = [read_run(path) for path in args.runs]
    except (OSError, ValueError) as exc:
        print(f"compare.py: {exc}", file=sys.stderr)
        return 1
    print(compare(runs, args.label or [path.name for path in args.runs], args.server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
