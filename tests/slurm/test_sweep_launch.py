"""A real sweep of 4 tiny points (depth x token budget) through submitit: local processes and a real SLURM
job array; each point trains with the real trainer, writes result.json, and the fits + plots come out."""

from __future__ import annotations

import json

import matplotlib.image
import pytest
import yaml

from srdd_scale.cli.sweep import main as sweep_main

from .conftest import needs_slurm, trainer_overrides

pytestmark = pytest.mark.slow  # real ranks / trained runs: tens of seconds each

TOKENS_PER_STEP = 8 * (1 + 4 + 16 + 64)  # global batch 8 x tokens per image of patch_nums (1, 2, 4, 8)


def _sweep_yaml(tmp_path, assets, kind: str) -> str:
    overrides = [o for o in trainer_overrides(assets, tmp_path) if not o.startswith(("model.width", "model.num_heads"))]
    sweep = {
        "name": f"tiny-{kind}",
        "output_dir": str(tmp_path / "sweeps"),
        "train_overrides": overrides + ["train.checkpoint_every=0", "logging.log_every=2"],
        "mode": "grid",
        "depths": [1, 2],
        "tokens": [6 * TOKENS_PER_STEP, 12 * TOKENS_PER_STEP],
        "schedule": "wsd",
        "executor": {"kind": kind, "array_parallelism": 2, "cpus_per_task": 1, "timeout_min": 20},
        "fit": {"num_bootstrap": 5},
    }
    path = tmp_path / f"sweep_{kind}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return str(path)


def _run_and_check(tmp_path, assets, kind: str, capsys) -> None:
    config = _sweep_yaml(tmp_path, assets, kind)
    assert sweep_main([config, "--executor", kind]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "4 to launch" in out and "4 done" in out
    folder = tmp_path / "sweeps" / f"tiny-{kind}"
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("points/*/result.json"))]
    assert [r["point"] for r in results] == ["d1-D4.1e03", "d1-D8.2e03", "d2-D4.1e03", "d2-D8.2e03"]
    for r in results:
        assert r["param_convention"] == "core" and r["params"] > 0
        assert r["steps"] in (6, 12) and r["tokens"] == r["steps"] * TOKENS_PER_STEP
        assert r["flops"] > 0 and r["wall_time_s"] > 0
        assert {"loss/mean", "loss/last", "loss/scale_0"} <= set(r["final_train_loss"])
        assert r["curve"][-1][0] == r["steps"]
        assert r["hardware"]["cpu_count"] >= 1
    assert results[2]["params"] > results[0]["params"]  # deeper is bigger
    fits = json.loads((folder / "analysis" / "fits.json").read_text())
    assert fits["power_law_compute"]["num_points"] >= 4  # frontier over the logged curves of all 4 runs
    assert "at least 3 points, got 2" in fits["skipped"]["power_law_params"]  # 2 sizes, each at its best
    for path in fits["plots"].values():
        assert matplotlib.image.imread(path).ndim == 3
    # A second run finds every result and launches nothing.
    assert sweep_main([config, "--executor", kind]) == 0
    assert "0 to launch" in capsys.readouterr().out
    assert sweep_main(["status", config]) == 0
    assert capsys.readouterr().out.count(" done ") == 4


def test_local_sweep_trains_points_and_fits(train_assets, run_tmp, monkeypatch, capsys):
    monkeypatch.setenv("TMPDIR", str(run_tmp))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _run_and_check(run_tmp, train_assets, "local", capsys)


@pytest.mark.slurm
@needs_slurm
def test_slurm_array_sweep_trains_points_and_fits(train_assets, run_tmp, monkeypatch, capsys):
    monkeypatch.setenv("TMPDIR", str(run_tmp))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _run_and_check(run_tmp, train_assets, "slurm", capsys)


def test_failed_point_is_resubmitted_only_on_request(train_assets, run_tmp, monkeypatch, capsys):
    monkeypatch.setenv("TMPDIR", str(run_tmp))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = _sweep_yaml(run_tmp, train_assets, "local")
    one_point = ["depths=[1]", f"tokens=[{6 * TOKENS_PER_STEP}]"]
    missing = f"--train=data.train_path={run_tmp / 'no-such-shards'}"
    assert sweep_main([config, *one_point, missing]) == 1
    out = capsys.readouterr()
    assert "1 failed" in out.out and "not every point is done" in out.err
    error = (run_tmp / "sweeps" / "tiny-local" / "points" / "d1-D4.1e03" / "error.txt").read_text()
    assert "no-such-shards" in error
    assert sweep_main([config, *one_point]) == 1  # failed points stay failed unless asked
    assert "0 to launch" in capsys.readouterr().out
    # Resubmitted with the data fixed: it trains; with one run only the compute law (over its curve) is fitted.
    assert sweep_main([config, *one_point, "--resubmit-failed"]) == 0
    out = capsys.readouterr().out
    assert "1 to launch" in out and "1 done" in out
    assert "skipped power_law_params: power law in params needs at least 3 points, got 1" in out
    assert not (run_tmp / "sweeps" / "tiny-local" / "points" / "d1-D4.1e03" / "error.txt").exists()
