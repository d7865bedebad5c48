"""The micro-batch loop never reads a value back to the host: counted with a TorchDispatchMode (``.item()``,
``float()``, ``bool()`` and ``nonzero`` all reach ``_local_scalar_dense``/``nonzero``) plus ``Tensor.tolist``,
which reads memory without dispatching. The step's read-backs come after the loop."""

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
def test_micro_batch_loop_has_no_host_sync(backend, monkeypatch, train_assets, run_tmp):
    from srdd_scale.train.trainer import Trainer
    from srdd_scale.utils.dist import destroy_distributed, device_for, init_distributed

    one_rank_env(monkeypatch)
    cfg = one_rank_config(train_assets, run_tmp / "out", backend, **{"parallel.micro_batch_size": 2})
    counter = SyncCounter()
    original_tolist = torch.Tensor.tolist

    def counted_tolist(tensor):
        counter.syncs.append("Tensor.tolist")
        return original_tolist(tensor)

    original_micro_step = Trainer._micro_step

    def counted_micro_step(self, batch, micro):
        with counter, monkeypatch.context() as patch:
            patch.setattr(torch.Tensor, "tolist", counted_tolist)
            return original_micro_step(self, batch, micro)

    monkeypatch.setattr(Trainer, "_micro_step", counted_micro_step)
    env = init_distributed()
    try:
        trainer = Trainer(cfg, env, device_for(env))
        batches = trainer.micro_batches()
        reports = [trainer.train_step(batches) for _ in range(2)]
    finally:
        trainer = None
        destroy_distributed()
    assert trainer is None and counter.syncs == []
    assert all(torch.isfinite(torch.tensor(r.metrics["loss"])) for r in reports)
    assert {"loss/mean", "acc/last", "loss/scale_3"} <= set(reports[-1].metrics)
