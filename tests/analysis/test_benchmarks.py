"""bench_loader measures what it says; bench_all runs a bench tool, collects its JSON and writes the table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from srdd_scale.analysis.benchmarks import BENCHES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_loader_reads_every_full_batch(tmp_path):
    out = tmp_path / "loader.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "bench_loader.py"), "--samples", "200", "--batch-size", "32",
                    "--workers", "0", "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["samples"] == (200 // 32 - 1) * 32  # drop_last; the first batch is the timed-apart warm-up
    assert row["tokens_per_sample"] == 680 and row["samples_per_s"] > 0
    assert report["provenance"]["git_commit"] and report["provenance"]["libraries"]["torch"]


@pytest.mark.slow
def test_bench_all_collects_and_renders(tmp_path):
    md = tmp_path / "benchmarks.md"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_all.py"), "--only", "loader", "--results-dir",
                           str(tmp_path / "results"), "--markdown", str(md)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results_file,) = (tmp_path / "results").glob("*.json")
    collected = json.loads(results_file.read_text())
    assert list(collected["benches"]) == ["loader"]
    assert collected["benches"]["loader"]["result"]["tool"] == "bench_loader"
    assert collected["provenance"]["machine"]["cpu_count"] >= 1
    text = md.read_text()
    assert "| loader | 0 workers, batch 64, 680 tokens/sample |" in text and "| loader | 2 workers" in text


def test_bench_all_rejects_unknown_names():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_all.py"), "--only", "loader,nope"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "nope" in proc.stderr


def test_every_planned_bench_tool_exists_and_writes_through_the_kit():
    for bench in BENCHES:
        assert (ROOT / "tools" / f"{bench.tool}.py").is_file(), bench.tool  # the shim the docs name
        source = (ROOT / "srdd_scale" / "cli" / f"{bench.tool}.py").read_text()
        assert '"--out"' in source and "write_report(" in source, f"{bench.tool} does not write through the kit"
