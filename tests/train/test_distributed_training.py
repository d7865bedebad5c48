"""2 real ranks (gloo, CPU) through tools/train.py: every backend learns, resumes exactly after a SIGKILL,
agrees with the others, and writes checkpoints that the real libraries consolidate into the plain model."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from srdd_scale.train.callbacks import read_metrics
from srdd_scale.train.checkpoint import complete_checkpoints, step_dir

BACKENDS = {  # test id -> extra overrides
    "ddp": {"parallel.backend": "ddp", "train.eval_every": 3, "train.sample_every": 3,
            "logging.wandb_mode": "offline"},
    "fsdp": {"parallel.backend": "fsdp"},
    "zero1": {"parallel.backend": "deepspeed", "parallel.zero_stage": 1},
    "zero2": {"parallel.backend": "deepspeed", "parallel.zero_stage": 2},
    "zero3": {"parallel.backend": "deepspeed", "parallel.zero_stage": 3},
}
COMMON = {"train.scale_lr_with_batch": "false"}


def overrides_for(launch, assets, out: Path, name: str) -> list[str]:
    extra = dict(BACKENDS[name])
    return launch.base_overrides(assets, out, extra.pop("parallel.backend"), **COMMON, **extra)


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir)]


@pytest.fixture(scope="session")
def deepspeed_ops_built():
    """Build DeepSpeed's CPU comm op once in this process, so two ranks never race to JIT-compile it."""
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    ShareMemCommBuilder().load()


@pytest.fixture(scope="module")
def reference(train_assets, tmp_path_factory, deepspeed_ops_built, trainer_launch):
    """Uninterrupted 6-step run per backend, launched once and shared by the tests below."""
    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            tmp = tmp_path_factory.mktemp(f"reference_{name}")
            trainer_launch.launch_ok(overrides_for(trainer_launch, train_assets, tmp / "out", name), tmp)
            runs[name] = trainer_launch.only_run_dir(tmp / "out")
        return runs[name]

    return get


@pytest.mark.world_size(2)
@pytest.mark.parametrize("name", list(BACKENDS))
def test_learns_and_resumes_exactly_after_sigkill(name, train_assets, reference, run_tmp, trainer_launch):
    ref_losses = losses(reference(name))
    assert len(ref_losses) == 6 and ref_losses[-1] < ref_losses[0] - 0.1, ref_losses

    out = run_tmp / "out"
    overrides = overrides_for(trainer_launch, train_assets, out, name)
    ranks = trainer_launch.Ranks(overrides, run_tmp)
    ranks.wait_for_checkpoint(out)
    ranks.kill(signal.SIGKILL)
    ranks.wait()
    run_dir = trainer_launch.only_run_dir(out)
    assert not (step_dir(run_dir / "checkpoints", 6) / "COMPLETE").exists(), "the run finished before the kill"

    trainer_launch.launch_ok(overrides, run_tmp)
    assert losses(run_dir) == ref_losses  # bitwise: fp32 on CPU resumes exactly


@pytest.mark.world_size(2)
def test_first_step_loss_identical_across_backends(reference):
    first = {name: losses(reference(name))[0] for name in BACKENDS}
    assert len(set(first.values())) == 1, first


@pytest.mark.world_size(2)
def test_sharded_checkpoints_consolidate_into_the_plain_model(reference):
    """FSDP's DCP and ZeRO-3's shards give the plain model's state dict, equal to the DDP run's final weights."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    ddp_final = complete_checkpoints(reference("ddp") / "checkpoints")[-1][1]
    plain = torch.load(ddp_final / "model_optim.pt", weights_only=True)["model"]

    fsdp_final = complete_checkpoints(reference("fsdp") / "checkpoints")[-1][1]
    dcp_to_torch_save(fsdp_final / "dcp", fsdp_final / "full.pt")
    from_fsdp = torch.load(fsdp_final / "full.pt", weights_only=True)["model"]

    zero3_final = complete_checkpoints(reference("zero3") / "checkpoints")[-1][1]
    from_zero3 = get_fp32_state_dict_from_zero_checkpoint(str(zero3_final / "deepspeed"), tag="state")

    for name, state in (("fsdp", from_fsdp), ("zero3", from_zero3)):
        assert set(state) == set(plain), name
        for key, value in plain.items():
            torch.testing.assert_close(state[key].float(), value.float(), atol=1e-5, rtol=1e-4, msg=f"{name} {key}")


@pytest.mark.world_size(2)
def test_ddp_run_writes_eval_samples_and_offline_wandb(reference):
    run_dir = reference("ddp")
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    eval_records = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in eval_records] == [3, 6] and eval_records[1]["eval/loss"] < eval_records[0]["eval/loss"]
    for key in ("loss/scale_0", "acc/scale_3", "lr", "grad_norm", "perf/tokens_per_s", "perf/mfu",
                "perf/images_per_s", "perf/peak_memory_gib"):
        assert all(key in r for r in records), key
    pngs = sorted((run_dir / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["step_00000003.png", "step_00000006.png"]
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    history = next(offline.glob("*.wandb")).read_bytes()
    assert b"eval/loss" in history and b"perf/mfu" in history and b"loss/scale_3" in history
    assert len(list(offline.glob("files/media/images/*.png"))) == 2
    assert (run_dir / "config.yaml").is_file() and (run_dir / "provenance.json").is_file()
