"""The prepared GPU check runs end to end on CPU at tiny sizes and writes every section's figures."""

import json
import os

import pytest

from srdd_scale.cli import bench_vs_var, gpu_check


def test_gpu_check_runs_on_cpu_at_tiny_sizes(tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    train = [r for r in report["train"] if "skipped" not in r]
    assert {(r["depth"], r["mask"]) for r in train} == {(d, m) for d in (2, 3) for m in gpu_check.MASKS}
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["peak_mib"] is not None for r in train)
    assert [r for r in report["train"] if "skipped" in r] == [{"compile": True,
                                                                "skipped": "regional compile is checked on CUDA only"}]
    assert {(r["depth"], r["mask"]) for r in report["sampling"]} == {(d, m) for d in (2, 3) for m in gpu_check.MASKS}
    assert all(r["batch_s"] > 0 for r in report["sampling"])
    assert "error" not in report["attention"]
    assert {layer["mask"] for layer in report["attention_shapes"]["layers"]} == {
        "markovian", "markovian_prev", "block_causal"}
    planner = report["planner"]
    assert planner["measured_gib"]["peak"] > 0
    assert abs(planner["planned_over_measured"] - 1) < 0.15
    assert report["vs_var"] == {"skipped": "no --var-root (a checkout of github.com/FoundationVision/VAR)"}


@pytest.mark.skipif(not os.environ.get("SRDD_VAR_ROOT"), reason="set SRDD_VAR_ROOT to a FoundationVision/VAR checkout")
def test_gpu_check_compares_with_var_when_given_a_checkout(tmp_path):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--sections", "vs_var", "--var-root",
                           os.environ["SRDD_VAR_ROOT"], "--out", str(out)]) == 0
    runs = json.loads(out.read_text())["vs_var"]["runs"]
    assert {(r["case"], r["impl"]) for r in runs} == {
        (case, impl) for case in gpu_check.VS_VAR_CASES for impl in bench_vs_var.CASES[case].impls}
    assert all(r["seconds"] > 0 for r in runs)
