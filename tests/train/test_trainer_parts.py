"""The trainer's pieces without launching ranks: config checks, batch plan, param groups, checkpoint layout."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from srdd_scale.config import ConfigError, build
from srdd_scale.model import ModelConfig, build_model
from srdd_scale.train import checkpoint as ckpt
from srdd_scale.train.backends import plan_batch
from srdd_scale.train.config import LoggingConfig, ParallelConfig, TrainConfig
from srdd_scale.train.optim import build_optimizer, no_decay_names


def test_config_errors_name_the_key_and_expectation():
    with pytest.raises(ConfigError, match=r"train.warmup_steps.*\[0, train.total_steps=10\]"):
        build(TrainConfig, {"total_steps": 10, "warmup_steps": 20}).validate()
    with pytest.raises(ConfigError, match=r"parallel.zero_stage: got 4, expected 1, 2 or 3"):
        build(ParallelConfig, {"zero_stage": 4}).validate()
    with pytest.raises(ConfigError, match="parallel.offload_params"):
        build(ParallelConfig, {"zero_stage": 2, "offload_params": True}).validate()
    with pytest.raises(ConfigError, match="logging.wandb_mode"):
        build(LoggingConfig, {"wandb_mode": "sometimes"}, "logging")


def test_global_batch_fixed_micro_and_accumulation_derived():
    train = TrainConfig(global_batch_size=64)
    plan = plan_batch(train, ParallelConfig(micro_batch_size=4), world_size=2)
    assert (plan.micro_batch_size, plan.grad_accum_steps) == (4, 8)
    plan = plan_batch(train, ParallelConfig(), world_size=8)
    assert (plan.micro_batch_size, plan.grad_accum_steps) == (8, 1)
    with pytest.raises(ConfigError, match="train.global_batch_size=64 is not a multiple"):
        plan_batch(train, ParallelConfig(micro_batch_size=5), world_size=2)


def test_no_weight_decay_on_vectors_embeddings_and_head_scales():
    model = build_model(ModelConfig(depth=2, width=64, num_heads=2, num_classes=3, cross_attn=False),
                        (1, 2, 4), vocab_size=16, latent_dim=4, text_dim=None)
    plain = no_decay_names(model)
    for name, param in model.named_parameters():
        if param.ndim < 2 or name.startswith(("pos_", "lvl_embed", "class_emb", "scale_embed")):
            assert name in plain, name
    assert "blocks.0.attn.proj.weight" not in plain and "head.out.weight" not in plain
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.05), plain, lr=1e-3)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert all(p.ndim >= 2 for p in decay["params"])


def test_checkpoint_discovery_ignores_incomplete_and_prunes(tmp_path):
    meta = dict(backend="ddp", world_size=2, zero_stage=2, config_hash="abc")
    for step in (2, 4, 6, 8):
        folder = ckpt.step_dir(tmp_path, step)
        ckpt.prepare_step_dir(folder)
        if step != 8:  # step 8 was interrupted mid-write
            ckpt.mark_complete(folder, ckpt.CheckpointMeta(step=step, **meta))
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path)] == [2, 4, 6]
    assert ckpt.read_meta(ckpt.step_dir(tmp_path, 6)).step == 6
    ckpt.prune(tmp_path, keep_last=2, verified=ckpt.step_dir(tmp_path, 6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000004", "step_00000006", "step_00000008"]


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    ckpt.save_rank_state(tmp_path, 3, {"rng": ckpt.rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(ckpt.load_rank_state(tmp_path, 3)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert ckpt.load_rank_state(tmp_path, 4) is None


def test_ranks_come_from_torchrun_else_slurm(monkeypatch):
    from srdd_scale.utils.dist import dist_env_from_environ

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    env = dist_env_from_environ()
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (5, 8, 1, 4)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert dist_env_from_environ().rank == 2 and dist_env_from_environ().world_size == 4


def test_deepspeed_json_is_derived_from_our_config():
    from srdd_scale.train.backends.deepspeed import deepspeed_config

    train = TrainConfig(global_batch_size=64, grad_clip=1.5, precision="bf16")
    parallel = ParallelConfig(backend="deepspeed", zero_stage=3, micro_batch_size=4, offload_optimizer=True,
                              offload_params=True)
    ds = deepspeed_config(train, parallel, plan_batch(train, parallel, 2), torch.device("cpu"))
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
        64, 4, 8)
    assert ds["gradient_clipping"] == 1.5 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
