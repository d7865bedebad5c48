"""An optimizer step never reads a value back to the host, micro-batch loop, clipping, all-reduce and guarded update
included; the host reads the values once, on the steps that log. Counted with a TorchDispatchMode (``.item()``,
``float()``, ``bool()`` and ``nonzero`` all reach ``_local_scalar_dense``/``nonzero``) plus ``Tensor.tolist``,
which reads memory without dispatching."""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers.training import one_rank_config, one_rank_env

pytestmark = pytest.mark.slow  # builds the trainer and runs two steps

SYNC_OPS = (torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero, torch.ops.aten.is_nonzero)


class SyncCounter(TorchDispatchMode):
    """Records every op that needs a device value on the host while active, and every ``tolist``."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in SYNC_OPS:
            self.syncs.append(f"{func} at {''.join(traceback.format_stack(limit=6)[:-1])}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["ddp", "fsdp"])
def test_steps_read_back_once_and_only_when_they_log(backend, monkeypatch, train_assets, run_tmp):
    from srdd_scale.train.trainer import Trainer
    from srdd_scale.utils.dist import destroy_distributed, device_for, init_distributed

    one_rank_env(monkeypatch)
    overrides = {"parallel.micro_batch_size": 2, "logging.log_every": 3, "train.checkpoint_every": 0}
    cfg = one_rank_config(train_assets, run_tmp / "out", backend, **overrides)
    counter = SyncCounter()
    original_tolist = torch.Tensor.tolist

    def counted_tolist(tensor):
        counter.syncs.append("Tensor.tolist")
        return original_tolist(tensor)

    def counted(method):
        def wrapper(self, *args):
            with counter, monkeypatch.context() as patch:
                patch.setattr(torch.Tensor, "tolist", counted_tolist)
                return method(self, *args)
        return wrapper

    monkeypatch.setattr(Trainer, "train_step", counted(Trainer.train_step))
    env = init_distributed()
    try:
        trainer = Trainer(cfg, env, device_for(env))
        source = trainer.micro_batches()  # fetched up front: the loader's own host work is not the step's
        batches = iter([next(source) for _ in range(3 * trainer.plan.grad_accum_steps)])
        due = []
        for _ in range(3):
            trainer.train_step(batches)
            due.append(trainer.reads_back())
        step_syncs = list(counter.syncs)
        settle = counted(Trainer.settle)
        report, spike = settle(trainer)
    finally:
        trainer = None
        destroy_distributed()
    assert trainer is None and step_syncs == []  # three steps of four accumulated micro-batches each
    assert due == [False, False, True]  # logging.log_every=3, nothing else due before
    assert counter.syncs == ["Tensor.tolist"]  # the three steps' values in one transfer
    assert spike is None and report.step == 3 and report.log and report.settled
    assert torch.isfinite(torch.tensor(report.metrics["loss"]))
    assert {"loss/mean", "acc/last", "loss/scale_3", "grad_norm"} <= set(report.metrics)
