"""What every benchmark tool shares: timing on torch.utils.benchmark, the provenance block, one JSON writer and
one table printer, so that the bench_* tools differ only in what they measure.

Timing goes through ``torch.utils.benchmark.Timer``: it synchronises the accelerator around the timed calls and
reports the median over blocks, so a one-off stall (another job on a shared CPU, a GC pause) moves the figure less
than a plain mean would. The Timer runs at torch's current thread count (its own default is one thread). A bench
whose unit is one pass over a stream (the loader, pretokenize) times that pass itself: the Timer's untimed
warm-up calls would repeat the whole pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils import benchmark

from srdd_scale.utils.rundir import PROJECT_ROOT, bench_provenance

DEFAULT_OUT_DIR = PROJECT_ROOT / "artifacts" / "bench"


@dataclass(frozen=True)
class Timing:
    """Seconds per call of a measured function: the median over timed blocks, and how many calls were timed."""

    seconds: float
    calls: int
    iqr_seconds: float  # interquartile range over blocks (0 with a single block)


def time_call(fn: Callable[[], Any], *, warmup: int = 1, calls: int | None = None,
              min_run_time: float = 0.5) -> Timing:
    """Time ``fn()`` after at least ``warmup`` untimed calls: exactly ``calls`` timed calls in one block when given
    (slow steps, where the count is the budget), else ``blocked_autorange`` for at least ``min_run_time`` s."""
    if calls is not None and calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    if calls is not None:
        # Timer.timeit makes max(calls // 100, 2) untimed calls of its own first: only the rest are made here.
        for _ in range(warmup - max(calls // 100, 2)):
            fn()
        measurement = timer.timeit(calls)
    else:
        for _ in range(warmup):
            fn()
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(seconds=measurement.median, calls=measurement.number_per_run * len(measurement.raw_times),
                  iqr_seconds=measurement.iqr)


def write_report(report: dict[str, Any], tool: str, out: str | Path | None = None,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Write ``report`` with the provenance block (machine, versions, commit, load average; taken now unless
    given) as JSON to ``out``, default ``artifacts/bench/<tool>-<UTC time>.json``; prints and returns the path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = Path(out) if out else DEFAULT_OUT_DIR / f"{tool}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"tool": tool, **report, "provenance": provenance or bench_provenance()}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


@dataclass(frozen=True)
class Column:
    """One column of a printed table: its header, the row key and a format spec (None prints as '-')."""

    header: str
    key: str
    spec: str = ""


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as a right-aligned plain-text table (what every bench prints)."""
    cells = [[c.header for c in columns]]
    cells += [["-" if row.get(c.key) is None else format(row[c.key], c.spec) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    print(format_table(rows, columns), flush=True)
