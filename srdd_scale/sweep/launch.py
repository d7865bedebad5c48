"""Launch sweep points with submitit (SLURM job arrays or local processes) and track their state on disk.

Per point, ``<sweep>/points/<name>/`` holds ``job.json`` (executor + job id, written at submission),
``error.txt`` (the traceback of a failed attempt) and ``result.json`` (written last, on success). The state
of a sweep is therefore readable by anyone, from any machine that sees the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import submitit

from srdd_scale.sweep.config import SweepConfig
from srdd_scale.sweep.grid import PARAM_CONVENTION, SweepPoint, flops_per_step, run_config, sweep_dir, tokens_per_step
from srdd_scale.sweep.results import RESULT_FILE, read_result, write_result
from srdd_scale.utils.logging import get_logger

JOB_FILE = "job.json"
ERROR_FILE = "error.txt"
# SLURM job states after which a job runs no more: a point still without result.json has failed.
SLURM_ENDED_STATES = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                       "PREEMPTED", "COMPLETED")

log = get_logger(__name__)


def point_dir(sweep: SweepConfig, point: SweepPoint) -> Path:
    return sweep_dir(sweep) / "points" / point.name


def _eval_losses(record: dict) -> dict[str, float]:
    """The eval callback's names (eval/loss, eval/loss_last) in scale_losses' names, so selectors match."""
    names = {"eval/loss": "loss/mean", "eval/loss_last": "loss/last"}
    return {ours: record[theirs] for theirs, ours in names.items() if theirs in record}


def build_result(point: SweepPoint, run_dir: Path, summary: dict, world_size: int) -> dict:
    """result.json content: N (convention named), D, C, final train/eval losses per scale, curve, hardware."""
    from srdd_scale.train.callbacks.loggers import read_metrics
    from srdd_scale.utils.rundir import machine_info

    records = read_metrics(run_dir)
    train_records = [r for r in records if "loss/mean" in r]
    eval_records = [r for r in records if "eval/loss" in r]
    final_train = {k: v for k, v in train_records[-1].items() if k.startswith("loss/")} if train_records else {}
    return {
        "point": point.name,
        "depth": point.depth,
        "mask": point.mask,
        "seed": point.seed,
        "steps": summary["step"],
        "params": point.params,
        "param_convention": PARAM_CONVENTION,
        "param_counts": dict(point.param_counts),
        "tokens": point.tokens,
        "flops": point.flops,
        "budget": point.budget,
        "final_train_loss": final_train,
        "final_eval_loss": _eval_losses(eval_records[-1]) if eval_records else {},
        # (step, tokens, FLOPs, train loss/mean) at every logged step: the compute frontier uses all of them.
        "curve": [[r["step"], r["step"] * tokens_per_step(point), r["step"] * flops_per_step(point), r["loss/mean"]]
                  for r in train_records],
        "wall_time_s": summary["wall_seconds"],
        "resumed_from_step": summary["start_step"],
        "run_dir": str(run_dir),
        "hardware": {**machine_info(), "world_size": world_size,
                     "slurm_job_id": os.environ.get("SLURM_JOB_ID")},
    }


class PointJob(submitit.helpers.Checkpointable):
    """Trains one point in the job's process(es); rank 0 writes result.json when the run has finished.

    Checkpointable: on preemption/time-out submitit requeues the same call, and the trainer resumes from the
    newest checkpoint in the run directory (keyed by the config hash, so the requeued call finds it).
    """

    def __call__(self, point: SweepPoint, folder: str) -> dict:
        from srdd_scale.train import run
        from srdd_scale.train.trainer import REQUEUE_EXIT_CODE
        from srdd_scale.utils.dist import dist_env_from_environ

        folder_path = Path(folder)
        env = dist_env_from_environ()
        try:
            summary = run(run_config(point.train_configs, point.overrides))
            if summary["exit_code"] == REQUEUE_EXIT_CODE:
                if "SLURM_JOB_ID" in os.environ:
                    # The trainer took the stop signal itself (and saved); hand it back to submitit's handler,
                    # restored by now, which checkpoints this call and requeues the job.
                    signal.raise_signal(signal.SIGUSR1)
                raise RuntimeError(f"point {point.name} stopped by a signal at step {summary['step']} of "
                                   f"{point.steps}; resubmit it (--resubmit-failed) to resume from its checkpoint")
        except Exception:
            if env.rank == 0:
                folder_path.mkdir(parents=True, exist_ok=True)
                (folder_path / ERROR_FILE).write_text(traceback.format_exc())
            raise
        if env.rank != 0:
            return summary
        result = build_result(point, Path(summary["run_dir"]), summary, env.world_size)
        (folder_path / ERROR_FILE).unlink(missing_ok=True)
        write_result(folder_path, result)
        return result


def slurm_reachable() -> bool:
    """True when a SLURM controller answers (not merely when the client binaries are installed)."""
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def resolve_kind(sweep: SweepConfig, kind: str | None) -> str:
    kind = kind or sweep.executor.kind
    if kind == "auto":
        return "slurm" if slurm_reachable() else "local"
    if kind == "slurm" and not slurm_reachable():
        raise RuntimeError("executor 'slurm' requested but no SLURM controller answers `sinfo`; "
                           "start one (.ci/slurm_up.sh) or use --executor local")
    return kind


def make_executor(sweep: SweepConfig, kind: str) -> submitit.AutoExecutor:
    cfg = sweep.executor
    executor = submitit.AutoExecutor(folder=sweep_dir(sweep).resolve() / "submitit" / "%j", cluster=kind)
    params = dict(timeout_min=cfg.timeout_min, nodes=cfg.nodes, tasks_per_node=cfg.tasks_per_node,
                  cpus_per_task=cfg.cpus_per_task, gpus_per_node=cfg.gpus_per_node, name=f"sweep-{sweep.name}",
                  slurm_array_parallelism=cfg.array_parallelism, slurm_signal_delay_s=cfg.signal_delay_s,
                  slurm_setup=list(cfg.setup))
    if cfg.partition:
        params["slurm_partition"] = cfg.partition
    if cfg.mem_gb:
        params["mem_gb"] = cfg.mem_gb
    executor.update_parameters(**params)
    return executor


# ---------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class PointState:
    point: SweepPoint
    state: str  # done | failed | running | pending (in a queue) | new (never submitted)
    detail: str  # job id / SLURM state / first line of the error
    result: dict | None


def _slurm_state(folder: Path, job_id: str) -> str:
    return submitit.SlurmJob(folder=folder, job_id=job_id).watcher.get_state(job_id, mode="force")


def point_state(sweep: SweepConfig, point: SweepPoint) -> PointState:
    folder = point_dir(sweep, point)
    if (folder / RESULT_FILE).exists():
        return PointState(point, "done", "", read_result(folder / RESULT_FILE))
    if (folder / ERROR_FILE).exists():
        lines = (folder / ERROR_FILE).read_text().strip().splitlines()
        return PointState(point, "failed", lines[-1] if lines else "", None)
    if not (folder / JOB_FILE).exists():
        return PointState(point, "new", "", None)
    job = json.loads((folder / JOB_FILE).read_text())
    if job["executor"] == "slurm":
        state = _slurm_state(Path(job["log_folder"]), job["job_id"])
        if state.split()[0] in SLURM_ENDED_STATES:  # COMPLETED without result.json: died after the trainer
            return PointState(point, "failed", f"slurm {job['job_id']}: {state}", None)
        return PointState(point, "pending" if state == "PENDING" else "running", f"slurm {job['job_id']}: {state}",
                          None)
    try:  # a local job's id is its process id
        os.kill(int(job["job_id"]), 0)
    except (ProcessLookupError, ValueError):
        return PointState(point, "failed", f"local pid {job['job_id']} is gone without a result", None)
    return PointState(point, "running", f"local pid {job['job_id']}", None)


def sweep_states(sweep: SweepConfig, points: list[SweepPoint]) -> list[PointState]:
    return [point_state(sweep, p) for p in points]


def format_status(states: list[PointState], loss_key: str = "loss/mean") -> str:
    header = f"{'point':<18} {'depth':>5} {'steps':>6} {'N':>10} {'D tokens':>10} {'C FLOPs':>10} {'state':>8} " \
             f"{'train loss':>10}  detail"
    rows = [header, "-" * len(header)]
    for s in states:
        p = s.point
        loss = s.result["final_train_loss"].get(loss_key) if s.result else None
        rows.append(f"{p.name:<18} {p.depth:>5} {p.steps:>6} {p.params:>10.3g} {p.tokens:>10.3g} {p.flops:>10.3g} "
                    f"{s.state:>8} {'' if loss is None else f'{loss:.4f}':>10}  {s.detail}")
    counts = {state: sum(s.state == state for s in states) for state in ("done", "running", "pending", "failed", "new")}
    rows.append(", ".join(f"{n} {state}" for state, n in counts.items() if n))
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------- launching


def to_launch(states: list[PointState], resubmit_failed: bool) -> list[SweepPoint]:
    """Never-submitted points, plus failed ones on request; done and in-flight points are left alone."""
    wanted = ("new", "failed") if resubmit_failed else ("new",)
    return [s.point for s in states if s.state in wanted]


def _record_submission(sweep: SweepConfig, point: SweepPoint, job, kind: str) -> None:
    folder = point_dir(sweep, point)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_FILE).unlink(missing_ok=True)
    (folder / JOB_FILE).write_text(json.dumps({"executor": kind, "job_id": str(job.job_id),
                                               "log_folder": str(job.paths.folder), "submitted": time.time()}))


def _wait(jobs: list) -> list[str]:
    """Block until the jobs end; returns one line per failed job (its error is also in the point's error.txt)."""
    failures = []
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # submitit re-raises the job's exception (or a FailedJobState): report, go on
            failures.append(f"job {job.job_id}: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}")
    return failures


def launch(sweep: SweepConfig, points: list[SweepPoint], kind: str, wait: bool = True) -> list[str]:
    """Submit ``points``; SLURM: one job array capped at ``array_parallelism``; local: chunks of that size.

    Returns the failures (empty when all succeeded, or when not waiting).
    """
    if not points:
        return []
    executor = make_executor(sweep, kind)
    folders = [str(point_dir(sweep, p).resolve()) for p in points]
    if kind == "slurm":
        with executor.batch():
            jobs = [executor.submit(PointJob(), p, f) for p, f in zip(points, folders)]
        for point, job in zip(points, jobs):
            _record_submission(sweep, point, job, kind)
        log.info("submitted %d points as SLURM array %s (at most %d at once)", len(jobs), jobs[0].job_id.split("_")[0],
                 sweep.executor.array_parallelism)
        return _wait(jobs) if wait else []
    # LocalExecutor has no array throttle: run chunks one after another to honour the concurrency cap.
    failures = []
    chunk = sweep.executor.array_parallelism
    for start in range(0, len(points), chunk):
        jobs = []
        for point, folder in zip(points[start:start + chunk], folders[start:start + chunk]):
            job = executor.submit(PointJob(), point, folder)
            _record_submission(sweep, point, job, kind)
            jobs.append(job)
        log.info("started %d local points (%d/%d)", len(jobs), start + len(jobs), len(points))
        failures += _wait(jobs)
    return failures
