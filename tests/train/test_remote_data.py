"""2 real ranks train from shards in object storage (a real S3 API: moto's server), are SIGKILLed mid-epoch
and resume with the loss sequence of an uninterrupted run on the same shards read from a local folder."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from srdd_scale.train.callbacks import read_metrics
from srdd_scale.train.checkpoint import COMPLETE, step_dir
from tests.helpers.training import Ranks, base_overrides, launch_ok, only_run_dir


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir)]


@pytest.mark.slow
@pytest.mark.world_size(2)
def test_remote_shards_resume_after_sigkill_with_the_local_loss_sequence(s3_server, train_assets, run_tmp):
    bucket = s3_server.bucket()
    for split in ("train", "heldout"):
        s3_server.upload_folder(Path(train_assets[split]), f"s3://{bucket}/{split}")
    common = {"train.scale_lr_with_batch": "false", "train.eval_every": 3}
    local_out, remote_out = run_tmp / "local", run_tmp / "remote"
    launch_ok(base_overrides(train_assets, local_out, "ddp", **common), run_tmp / "tmp-local")
    reference = _losses(only_run_dir(local_out))
    assert len(reference) == 6

    remote = base_overrides(train_assets, remote_out, "ddp", **common, **{
        "data.train_path": f"s3://{bucket}/train", "data.heldout_path": f"s3://{bucket}/heldout"})
    ranks = Ranks(remote, run_tmp / "tmp-remote")
    ranks.wait_for_checkpoint(remote_out)
    ranks.kill(signal.SIGKILL)
    ranks.wait()
    run_dir = only_run_dir(remote_out)
    assert not (step_dir(run_dir / "checkpoints", 6) / COMPLETE).exists(), "the run finished before the kill"
    resumed = Ranks(remote, run_tmp / "tmp-remote")
    assert resumed.wait() == [0, 0], resumed.output()
    assert _losses(run_dir) == reference  # fp32 DDP on CPU: bitwise, through the kill and the remote reads
