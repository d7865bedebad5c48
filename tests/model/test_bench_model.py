"""tools/bench_model.py runs end to end at a toy size and writes its JSON (numbers are not asserted)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_model_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_model.py"), "--depths", "1", "--patch-nums", "1,2,4",
           "--batch-size", "2", "--steps", "1", "--warmup", "0", "--text-len", "3", "--text-dim", "8",
           "--vocab-size", "32", "--masks", "block_causal", "--sample-masks", "markovian", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    kinds = [(r["kind"], r["mask"]) for r in record["results"]]
    assert kinds == [("train", "block_causal"), ("sample", "markovian")]
    assert all(r["peak_mib"] > 0 for r in record["results"])
    assert all(r.get("tokens_per_s", r.get("images_per_s")) > 0 for r in record["results"])
    assert record["provenance"]["libraries"]["torch"]
    assert "block_causal" in proc.stdout
