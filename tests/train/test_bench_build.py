"""tools/bench_build.py runs its 2-rank jobs at a toy size and writes one row per rank and construction."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_bench_build_reports_each_rank_for_both_constructions(tmp_path):
    out = tmp_path / "build.json"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_build.py"), "model.depth=2", "model.width=64",
           "model.num_heads=2", "--cases", "fsdp", "--port", "29671", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [(r["construction"], r["rank"]) for r in rows] == [("whole", 0), ("whole", 1), ("backend", 0),
                                                              ("backend", 1)]
    assert all(r["build_gib"] >= 0 and r["build_and_wrap_gib"] >= r["build_gib"] for r in rows)
    assert len({round(r["params_m"], 6) for r in rows}) == 1  # the same model either way
    assert "build+wrap GiB" in proc.stdout
