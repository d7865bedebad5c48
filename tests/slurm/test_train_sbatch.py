"""`sbatch slurm/train_d30.sh` on a real SLURM with a tiny CPU override (d4, 2 tasks via srun): it trains to
the end, and a job stopped mid-run by the preemption signal requeues itself, resumes from its checkpoint and
ends at the same final step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, needs_slurm, trainer_overrides

pytestmark = [pytest.mark.slow, pytest.mark.slurm, needs_slurm]


def _sbatch(tmp_path: Path, overrides: list[str]) -> tuple[str, Path]:
    log = tmp_path / "slurm-%j.out"
    env = dict(os.environ, SRDD_PYTHON=sys.executable, TMPDIR=str(tmp_path), WANDB_SILENT="true")
    out = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1",
         "--time=20", f"--chdir={ROOT}", f"--output={log}", "slurm/train_d30.sh", *overrides],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    job_id = out.strip().split(";")[0]
    return job_id, Path(str(log).replace("%j", job_id))


def _job_field(job_id: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    match = re.search(rf"\b{field}=(\S+)", out)
    return match.group(1) if match else ""


def _wait_for(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}; job log:\n{log.read_text()[-5000:] if log.exists() else '(none)'}")


def _wait_until_ended(job_id: str, log: Path, timeout: float = 420) -> str:
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    _wait_for(lambda: _job_field(job_id, "JobState") in ended, timeout, f"job {job_id} to end", log)
    return _job_field(job_id, "JobState")


def _summaries(log: Path) -> list[dict]:
    """The trainer's final JSON line of every attempt (tools/train.py prints it on rank 0)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"run_dir"')]


def _overrides(assets, tmp_path: Path, steps: int) -> list[str]:
    return trainer_overrides(assets, tmp_path / "runs", **{
        "model.depth": 4, "model.width": 64, "model.num_heads": 2, "parallel.backend": "fsdp",
        "train.total_steps": steps, "train.checkpoint_every": 4, "logging.log_every": 2,
        "logging.run_name": "d4-slurm",
    })


def _final_step(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["step"]


def test_sbatch_train_d30_tiny_completes(train_assets, run_tmp):
    job_id, log = _sbatch(run_tmp, _overrides(train_assets, run_tmp, steps=24))
    state = _wait_until_ended(job_id, log)
    text = log.read_text()
    assert state == "COMPLETED", text[-5000:]
    assert "model:\n  depth: 4" in text  # resolved config printed (d30 defaults overridden)
    assert "master localhost:" in text and "2 task(s)" in text
    [summary] = _summaries(log)
    run_dir = Path(summary["run_dir"])
    assert f"run dir: {run_dir}" in text
    assert summary["step"] == 24 and summary["start_step"] == 0
    assert _final_step(run_dir) == 24
    assert (run_dir / "checkpoints" / "step_00000024" / "COMPLETE").exists()


def test_preempted_job_requeues_and_resumes_to_the_same_final_step(train_assets, run_tmp):
    steps = 24
    job_id, log = _sbatch(run_tmp, _overrides(train_assets, run_tmp, steps=steps))
    checkpoints = run_tmp / "runs"
    _wait_for(lambda: any(checkpoints.glob("d4-slurm-*/checkpoints/step_00000004/COMPLETE")), 300,
              "a checkpoint at step 4", log)
    # What --signal=B:USR1@300 does before the time limit: USR1 to the batch shell, which forwards it.
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    # SLURM holds a requeued job for ~2 min (BeginTime) before it may start again; lift the hold.
    _wait_for(lambda: _job_field(job_id, "Restarts") == "1" and _job_field(job_id, "JobState") == "PENDING", 300,
              "the job to be requeued", log)
    # Lifting it while the node still tears down the first run once got the restart killed with it
    # (proctrack/linuxproc, no cgroups): wait until no node is COMPLETING, plus a margin.
    def node_idle() -> bool:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout
        return "comp" not in states.lower()

    _wait_for(node_idle, 120, "the node to finish the first run", log)
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
    state = _wait_until_ended(job_id, log)
    text = log.read_text()
    assert state == "COMPLETED", text[-5000:]
    assert "scontrol requeue" in text and "(restart 1)" in text
    first, second = _summaries(log)
    assert first["exit_code"] == 124 and 4 <= first["step"] < steps
    assert second["start_step"] == first["step"]  # resumed from the checkpoint the stop signal wrote
    assert second["step"] == steps and second["run_dir"] == first["run_dir"]
    assert _final_step(Path(second["run_dir"])) == steps
