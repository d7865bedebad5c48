"""Run integrity with real files damaged as bit rot, a full disk, an interrupted copy and a hostile colleague
would damage them: verified checkpoints, the divergence guard, no code execution from run folders.

Runs train in this process on one rank (real backends, real DCP/DeepSpeed files); what needs two ranks is in
test_distributed_training.py.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from srdd_scale.train import checkpoint as ckpt
from srdd_scale.train.callbacks import read_metrics
from srdd_scale.train.trainer import FAILURE_EXIT_CODE, run
from tests.helpers.training import (
    Ranks, base_overrides, launch_ok, one_rank_config, one_rank_env, only_run_dir,
)


class Payload:
    """Unpickling this creates ``marker``: the proof that a loader executed code from a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def one_rank_run(monkeypatch, assets, out: Path, backend: str, stop: int | None = None, **extra):
    """Train in this process; returns (summary, run_dir)."""
    one_rank_env(monkeypatch)
    summary = run(one_rank_config(assets, out, backend, **extra), stop_at_step=stop)
    return summary, only_run_dir(out)


def rehash(folder: Path) -> None:
    """What a hostile writer does after planting a file: record the new hashes in COMPLETE."""
    meta = json.loads((folder / ckpt.COMPLETE).read_text())
    meta["files"] = ckpt.hash_share(folder, 0, 1)
    (folder / ckpt.COMPLETE).write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------ verification


def written_checkpoint(tmp_path: Path, step: int = 2) -> Path:
    folder = ckpt.step_dir(tmp_path, step)
    ckpt.prepare_step_dir(folder)
    (folder / "dcp").mkdir()
    (folder / "dcp" / "__0_0.distcp").write_bytes(os.urandom(4096))
    (folder / "dcp" / "__1_0.distcp").write_bytes(os.urandom(4096))
    (folder / "rank_00000.pt").write_bytes(os.urandom(100))
    files = {**ckpt.hash_share(folder, 0, 2), **ckpt.hash_share(folder, 1, 2)}  # two ranks' shares
    ckpt.mark_complete(folder, ckpt.CheckpointMeta(step=step, backend="ddp", world_size=2, zero_stage=2,
                                                   config_hash="abc", hash_algorithm=ckpt.HASH_ALGORITHM, files=files))
    return folder


@pytest.mark.parametrize("damage, message", [
    ("flip", r"dcp/__1_0.distcp: content hash differs"),
    ("truncate", r"dcp/__0_0.distcp: 4000 bytes, COMPLETE recorded 4096"),
    ("missing", r"dcp/__1_0.distcp: missing"),
    ("stale", r"dcp/__2_0.distcp: not recorded in COMPLETE"),
    ("legacy", r"records no file hashes"),
])
def test_verification_names_the_damaged_file(tmp_path, damage, message):
    folder = written_checkpoint(tmp_path)
    for rank in (0, 1):
        ckpt.verify_share(folder, ckpt.read_meta(folder), rank, 2)
    if damage == "flip":
        path = folder / "dcp" / "__1_0.distcp"
        data = bytearray(path.read_bytes())
        data[1000] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path = folder / "dcp" / "__0_0.distcp"
        path.write_bytes(path.read_bytes()[:4000])
    elif damage == "missing":
        (folder / "dcp" / "__1_0.distcp").unlink()
    elif damage == "stale":  # a marker from an earlier, smaller write left beside a newer payload
        (folder / "dcp" / "__2_0.distcp").write_bytes(b"x")
    else:
        meta = json.loads((folder / ckpt.COMPLETE).read_text())
        (folder / ckpt.COMPLETE).write_text(json.dumps({k: meta[k] for k in list(meta)[:5]}))
    with pytest.raises(ckpt.CheckpointVerificationError, match=message):
        ckpt.verify_share(folder, ckpt.read_meta(folder))  # one process checks every file (export)


def test_prune_keeps_the_verified_checkpoint(tmp_path):
    for step in (2, 4, 6):
        written_checkpoint(tmp_path, step)
    verified = ckpt.step_dir(tmp_path, 4)  # say 6 is a newer, damaged one that resume skipped
    ckpt.prune(tmp_path, keep_last=1, verified=verified)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000004", "step_00000006"]


# ------------------------------------------------------------------------------------------ no code execution


def test_dcp_metadata_and_rank_state_refuse_planted_pickles(tmp_path):
    import torch.distributed.checkpoint as dcp

    from srdd_scale.train.backends.dcp import read_weights
    from srdd_scale.train.safe_load import UnsafePickleError

    marker = tmp_path / "marker"
    dcp.save({"model": {"w": torch.ones(3)}}, checkpoint_id=str(tmp_path / "dcp"), no_dist=True)
    assert read_weights(tmp_path, ema=False)["w"].tolist() == [1.0, 1.0, 1.0]
    (tmp_path / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UnsafePickleError, match=r"\.metadata: refers to posix.system"):
        read_weights(tmp_path, ema=False)
    torch.save({"rng": Payload(marker)}, tmp_path / "rank_00000.pt")
    with pytest.raises(UnsafePickleError, match=r"rank_00000.pt: refused to unpickle .*GLOBAL posix.system"):
        ckpt.load_rank_state(tmp_path, 0)
    assert not marker.exists()


@pytest.mark.slow  # trains a tiny model
@pytest.mark.parametrize("stage", [1, 3])
def test_deepspeed_files_refuse_planted_pickles_on_resume_and_export(stage, train_assets, run_tmp):
    """ZeRO-1/2 keep one model-states file, ZeRO-3 one per rank: both are read with weights_only=True. DeepSpeed
    keeps process-wide state, so each run is its own process."""
    from srdd_scale.export.checkpoints import read_model_state
    from srdd_scale.train.backends.deepspeed import DS_FOLDER, DS_TAG, DeepSpeedBackend
    from srdd_scale.train.safe_load import UnsafePickleError

    overrides = base_overrides(train_assets, run_tmp / "out", "deepspeed", **{
        "parallel.zero_stage": stage, "train.total_steps": 4, "train.checkpoint_every": 2, "train.eval_every": 0,
        "parallel.micro_batch_size": 8})
    launch_ok(overrides, run_tmp, world=1, args=("--stop-at-step", "2"))
    folder = ckpt.complete_checkpoints(only_run_dir(run_tmp / "out") / "checkpoints")[-1][1]
    template = DeepSpeedBackend.read_weights(folder, ema=False)  # the clean folder reads, weights-only
    assert template and all(torch.isfinite(v).all() for v in template.values())
    marker = run_tmp / "marker"
    (model_states,) = (folder / DS_FOLDER / DS_TAG).glob("*model_states.pt")
    state = torch.load(model_states, weights_only=False)  # the test's own file
    torch.save({**state, "planted": Payload(marker)}, model_states)
    rehash(folder)
    with pytest.raises(UnsafePickleError, match="refused to unpickle .*GLOBAL posix.system"):
        read_model_state(folder, template)
    ranks = Ranks(overrides, run_tmp, world=1)
    assert ranks.wait() == [FAILURE_EXIT_CODE], ranks.output()
    assert "refused to unpickle" in ranks.output() and "Refusing to resume" in ranks.output()
    assert not marker.exists()


@pytest.mark.slow  # trains a tiny model
def test_resume_refuses_a_planted_dcp_metadata_and_falls_back_over_a_damaged_one(monkeypatch, train_assets, run_tmp):
    out = run_tmp / "out"
    summary, run_dir = one_rank_run(monkeypatch, train_assets, out, "fsdp", stop=4)
    assert summary["exit_code"] == 0
    (step2, older), (step4, newest) = ckpt.complete_checkpoints(run_dir / "checkpoints")
    # bit rot in the newest: resume names the file, falls back to step 2 and trains on to 4 again
    distcp = next((newest / "dcp").glob("*.distcp"))
    data = bytearray(distcp.read_bytes())
    data[len(data) // 2] ^= 0xFF
    distcp.write_bytes(bytes(data))
    (run_dir / "metrics.jsonl").unlink()
    summary, _ = one_rank_run(monkeypatch, train_assets, out, "fsdp", stop=4)
    assert summary["exit_code"] == 0 and summary["start_step"] == 2
    assert [r["step"] for r in read_metrics(run_dir)] == [3, 4]
    # a hostile colleague plants a payload and rewrites the hashes: refused, never executed, no fallback
    marker = run_tmp / "marker"
    newest = ckpt.complete_checkpoints(run_dir / "checkpoints")[-1][1]
    (newest / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    rehash(newest)
    summary, _ = one_rank_run(monkeypatch, train_assets, out, "fsdp", stop=4)
    assert summary["exit_code"] == FAILURE_EXIT_CODE, summary
    assert "refers to posix.system" in summary["error"] and "Refusing to resume" in summary["error"]
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ divergence guard


@pytest.mark.slow  # trains a tiny model
def test_divergence_guard_stops_with_the_failure_code(monkeypatch, train_assets, run_tmp, caplog):
    summary, run_dir = one_rank_run(monkeypatch, train_assets, run_tmp / "out", "ddp", **{
        "train.base_lr": 1e9, "train.warmup_steps": 0, "train.total_steps": 40, "train.max_consecutive_skips": 3,
        "train.max_skip_fraction": 1.0, "train.non_finite": "skip"})
    assert summary["exit_code"] == FAILURE_EXIT_CODE
    assert "training diverged: 3 consecutive skipped steps (train.max_consecutive_skips=3)" in summary["error"]
    assert "train.base_lr" in summary["error"] and "verified checkpoint" in summary["error"]
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert max(steps) < 40


def plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


@pytest.mark.slow  # trains a tiny model
@pytest.mark.parametrize("backend", ["ddp", "fsdp"])
def test_non_finite_grad_norm_is_never_applied(backend, monkeypatch, train_assets, run_tmp):
    """A finite loss whose gradients hold an inf: the update is dropped and counted, the weights stay as they were."""
    from srdd_scale.train.trainer import Trainer
    from srdd_scale.utils.dist import destroy_distributed, device_for, init_distributed

    one_rank_env(monkeypatch)
    cfg = one_rank_config(train_assets, run_tmp / "out", backend)
    env = init_distributed()
    try:
        trainer = Trainer(cfg, env, device_for(env))
        module = trainer.backend.module
        before = {k: plain(v.detach()).clone() for k, v in module.state_dict().items()}
        def poison(module, args, logits) -> None:  # the logits' gradient becomes inf; the loss stays finite
            logits.register_hook(lambda grad: grad * float("inf"))

        module.register_forward_hook(poison)
        trainer.train_step(trainer.micro_batches())
        report, _ = trainer.settle()
        assert torch.isfinite(torch.tensor(report.metrics["loss"]))
        assert not torch.isfinite(torch.tensor(report.metrics["grad_norm"]))
        assert trainer.non_finite_skips == 1 and trainer.consecutive_skips == 1
        after = module.state_dict()
        for key, value in before.items():
            assert torch.equal(plain(after[key].detach()), value), key
    finally:
        trainer = None
        destroy_distributed()


@pytest.mark.slow  # trains a tiny model
def test_loss_spike_rolls_back_and_skips_the_window(monkeypatch, train_assets, run_tmp):
    """Inject a 100x loss at step 5 of 8: the run reloads step 4, skips step 5's batches and finishes."""
    from srdd_scale.train.task import SRDDTask

    original = SRDDTask.loss_summary
    calls = {"n": 0}

    def spiking_loss(self, model, batch, cond_drop):
        loss, summary = original(self, model, batch, cond_drop)
        calls["n"] += 1
        return (loss * 100 if calls["n"] == 5 else loss), summary  # one micro-batch per step: step 5

    monkeypatch.setattr(SRDDTask, "loss_summary", spiking_loss)
    summary, run_dir = one_rank_run(monkeypatch, train_assets, run_tmp / "out", "ddp", **{
        "train.total_steps": 8, "train.loss_spike_factor": 5.0, "train.loss_spike_window": 3})
    assert summary["exit_code"] == 0 and summary["step"] == 8
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 6, 7, 8]  # step 5 rolled back, its batches skipped
    assert records[-1]["train/spike_rollbacks"] == 1 and records[-1]["train/non_finite_skips"] == 1
    assert max(r["loss"] for r in records) < 10


# ------------------------------------------------------------------------------------------ readable faults


def _mount(*args: str) -> bool:
    import subprocess

    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.mark.slow  # trains a tiny model
def test_full_disk_and_read_only_checkpoint_folder_stop_with_one_line(monkeypatch, train_assets, run_tmp):
    """The checkpoints live on a small tmpfs: filled up, then remounted read-only. Each save fails with the path
    and the remedy, step 2 stays verified, nothing is pruned."""
    from srdd_scale.utils.rundir import run_dir_for

    one_rank_env(monkeypatch)
    cfg = one_rank_config(train_assets, run_tmp / "out", "ddp")
    root = run_dir_for(cfg, run_tmp / "out") / "checkpoints"
    root.mkdir(parents=True)
    if not _mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): the full-disk case is untested")
    try:
        assert run(cfg, stop_at_step=2)["exit_code"] == 0
        with pytest.raises(OSError, match="No space left"), open(root / "filler", "wb") as filler:
            while True:  # take every free byte
                filler.write(b"\0" * (1 << 16))
                filler.flush()
        summary = run(cfg)
        assert summary["exit_code"] == FAILURE_EXIT_CODE, summary
        assert "could not write checkpoint" in summary["error"] and "is full" in summary["error"]
        assert f"the last verified checkpoint is {root / 'step_00000002'}" in summary["error"]
        (root / "filler").unlink()
        assert _mount("-o", "remount,ro", str(root))
        summary = run(cfg)
        assert summary["exit_code"] == FAILURE_EXIT_CODE, summary
        assert "Read-only file system" in summary["error"] and "not writable" in summary["error"]
        assert [s for s, _ in ckpt.complete_checkpoints(root)] == [2]
        ckpt.verify_share(root / "step_00000002", ckpt.read_meta(root / "step_00000002"))
    finally:
        _mount("-o", "remount,rw", str(root))
        import subprocess

        subprocess.run(["umount", str(root)], check=False)
