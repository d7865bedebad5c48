"""2 real ranks (gloo, CPU) through tools/train.py, as ``srun`` starts them: every backend learns, survives a
SIGKILL (and a broken newest checkpoint) with a bitwise-identical fp32 loss sequence, agrees with DDP step for
step, and writes checkpoints that the real libraries consolidate into the plain model."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from srdd_scale.train.callbacks import read_metrics
from srdd_scale.train.checkpoint import COMPLETE, complete_checkpoints, step_dir
from srdd_scale.train.trainer import REQUEUE_EXIT_CODE
from tests.helpers.training import Ranks, base_overrides, launch_ok, only_run_dir

pytestmark = pytest.mark.slow  # real ranks / trained runs: tens of seconds each

BACKENDS = {  # test id -> backend overrides
    "ddp": {"parallel.backend": "ddp"},
    "fsdp": {"parallel.backend": "fsdp"},
    "zero1": {"parallel.backend": "deepspeed", "parallel.zero_stage": 1},
    "zero2": {"parallel.backend": "deepspeed", "parallel.zero_stage": 2},
    "zero3": {"parallel.backend": "deepspeed", "parallel.zero_stage": 3},
}
# Same gradient summation order as DDP in fp32. ZeRO-1 sums like DDP too, but the fused AdamW kernel runs on its
# flat partitions, whose boundaries move a few elements between the kernel's vector body and scalar tail: measured
# equal to DDP for 5 steps, then 4e-8 apart at step 6 (the same with and without the kill, so its resume is exact).
BITWISE_LIKE_DDP = ("ddp", "fsdp")
# the reference run also evaluates, samples and logs to wandb: the others show that none of it perturbs training
OBSERVED = {"train.eval_every": 3, "train.sample_every": 3, "logging.wandb_mode": "offline"}


def overrides_for(assets, out: Path, name: str, **extra) -> list[str]:
    values = {**BACKENDS[name], "train.scale_lr_with_batch": "false", **extra}
    return base_overrides(assets, out, values.pop("parallel.backend"), **values)


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir)]


def plain_weights(checkpoint: Path, name: str) -> dict[str, torch.Tensor]:
    """The plain model's state dict from a backend's native checkpoint, via the real libraries' tools."""
    if name in ("ddp", "fsdp"):  # one DCP family
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        dcp_to_torch_save(checkpoint / "dcp", checkpoint / "full.pt")
        return torch.load(checkpoint / "full.pt", weights_only=True)["model"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint / "deepspeed"), tag="state")


def plant_broken_checkpoint(run_dir: Path) -> None:
    """A newer checkpoint that claims to be complete but whose payload is garbage: resume must skip it."""
    step, newest = complete_checkpoints(run_dir / "checkpoints")[-1]
    broken = step_dir(run_dir / "checkpoints", 5)  # checkpoint_every=2 never writes step 5 itself
    shutil.copytree(newest, broken)
    for path in broken.rglob("*"):
        if path.is_file() and path.name != COMPLETE and not path.name.startswith("rank_"):
            path.write_bytes(b"not a checkpoint")
    meta = json.loads((broken / COMPLETE).read_text())
    (broken / COMPLETE).write_text(json.dumps({**meta, "step": 5}))


@pytest.fixture(scope="session")
def deepspeed_ops_built():
    """Build DeepSpeed's CPU comm op once in this process, so two ranks never race to JIT-compile it."""
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    ShareMemCommBuilder().load()


@pytest.fixture(scope="module")
def reference(train_assets, tmp_path_factory, deepspeed_ops_built) -> Path:
    """One uninterrupted 6-step DDP run that every backend's resumed run must reproduce exactly."""
    tmp = tmp_path_factory.mktemp("reference")
    launch_ok(overrides_for(train_assets, tmp / "out", "ddp", **OBSERVED), tmp)
    return only_run_dir(tmp / "out")


@pytest.mark.world_size(2)
@pytest.mark.parametrize("name", list(BACKENDS))
def test_learns_and_resumes_exactly_after_sigkill(name, train_assets, reference, run_tmp):
    ref_losses = losses(reference)
    assert len(ref_losses) == 6 and ref_losses[-1] < ref_losses[0] - 0.1, ref_losses

    out = run_tmp / "out"
    overrides = overrides_for(train_assets, out, name)
    ranks = Ranks(overrides, run_tmp)
    ranks.wait_for_checkpoint(out)
    ranks.kill(signal.SIGKILL)
    ranks.wait()
    run_dir = only_run_dir(out)
    assert not (step_dir(run_dir / "checkpoints", 6) / COMPLETE).exists(), "the run finished before the kill"
    if name in ("ddp", "fsdp"):
        plant_broken_checkpoint(run_dir)

    resumed = Ranks(overrides, run_tmp)
    assert resumed.wait() == [0, 0], resumed.output()
    if name in ("ddp", "fsdp"):
        assert "step_00000005 could not be loaded" in resumed.output()
        assert "COMPLETE recorded" in resumed.output()  # verification names the damaged file
    resumed_losses = losses(run_dir)
    assert resumed_losses[0] == ref_losses[0]  # same seed, fp32: the first-step loss is identical everywhere
    if name in BITWISE_LIKE_DDP:  # fp32 on CPU: bitwise the reference's losses through the kill and resume
        assert resumed_losses == ref_losses
    else:  # ZeRO-2/3 reduce every micro-batch's gradients separately, so their sums round differently
        assert resumed_losses == pytest.approx(ref_losses, rel=1e-6, abs=0)
    final = complete_checkpoints(run_dir / "checkpoints")[-1][1]
    weights = plain_weights(final, name)
    expected = plain_weights(complete_checkpoints(reference / "checkpoints")[-1][1], "ddp")
    assert set(weights) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(weights[key].float(), value, atol=1e-6, rtol=1e-5, msg=key)


@pytest.mark.world_size(2)
def test_sigterm_saves_requeues_and_resumes_on_another_world_size(train_assets, run_tmp):
    """SIGTERM on one rank only: both agree at a step boundary, save, exit 124; FSDP then resumes on 1 rank."""
    out = run_tmp / "out"
    overrides = overrides_for(train_assets, out, "fsdp", **{"train.total_steps": 400})
    ranks = Ranks(overrides, run_tmp)
    ranks.wait_for_checkpoint(out)
    ranks.procs[0].send_signal(signal.SIGTERM)
    assert ranks.wait() == [REQUEUE_EXIT_CODE] * 2, ranks.output()
    run_dir = only_run_dir(out)
    stopped_at = read_metrics(run_dir)[-1]["step"]
    assert 2 <= stopped_at < 400
    assert complete_checkpoints(run_dir / "checkpoints")[-1][0] == stopped_at

    launch_ok(overrides, run_tmp, world=1, args=("--stop-at-step", str(stopped_at + 2)))
    records = read_metrics(run_dir)
    assert [r["step"] for r in records][-3:] == [stopped_at, stopped_at + 1, stopped_at + 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)


@pytest.mark.world_size(2)
def test_reference_run_writes_eval_samples_and_offline_wandb(reference):
    records = read_metrics(reference)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    eval_records = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in eval_records] == [3, 6] and eval_records[1]["eval/loss"] < eval_records[0]["eval/loss"]
    for key in ("loss/scale_0", "acc/scale_3", "lr", "grad_norm", "perf/tokens_per_s", "perf/mfu",
                "perf/images_per_s", "perf/peak_memory_gib"):
        assert all(key in r for r in records), key
    pngs = sorted((reference / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["step_00000003.png", "step_00000006.png"]
    (offline,) = (reference / "wandb").glob("offline-run-*")
    history = next(offline.glob("*.wandb")).read_bytes()
    assert b"eval/loss" in history and b"perf/mfu" in history and b"loss/scale_3" in history
    assert len(list(offline.glob("files/media/images/*.png"))) == 2
    assert (reference / "config.yaml").is_file() and (reference / "provenance.json").is_file()


@pytest.mark.world_size(2)
def test_resume_switches_between_ddp_and_fsdp_bitwise(train_assets, reference, run_tmp):
    """DDP steps 1-2, FSDP steps 3-4, DDP steps 5-6 through their shared DCP checkpoints: the reference's losses."""
    from srdd_scale.run_config import RunConfig
    from srdd_scale.utils.rundir import run_dir_for

    out = run_tmp / "out"
    previous = None
    for leg, (name, stop) in enumerate((("ddp", 2), ("fsdp", 4), ("ddp", 6))):
        overrides = overrides_for(train_assets, out / str(leg), name)
        run_dir = run_dir_for(RunConfig.load([], overrides), out / str(leg))
        if previous is not None:  # the run folder (config hash) names the backend: carry the run over
            shutil.copytree(previous, run_dir)
        launch_ok(overrides, run_tmp, args=("--stop-at-step", str(stop)))
        assert complete_checkpoints(run_dir / "checkpoints")[-1][0] == stop
        previous = run_dir
    assert losses(previous) == losses(reference)
