"""DeepSpeed ZeRO 1/2/3: the JSON config is generated from ours (and saved in the run dir); native checkpoints.

A torch AdamW is handed to DeepSpeed so that no C++ optimizer (FusedAdam/CPUAdam) has to be compiled.
"""

from __future__ import annotations

import contextlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from srdd_scale.config import ConfigError
from srdd_scale.model.transformer import deferred_init
from srdd_scale.train.backends.base import Backend, BatchPlan
from srdd_scale.train.config import ParallelConfig, TrainConfig
from srdd_scale.train.optim import plain_name
from srdd_scale.train.safe_load import refuse_unpickling, weights_only_loads

DS_FOLDER = "deepspeed"
DS_TAG = "state"
CONFIG_FILE = "deepspeed_config.json"


def deepspeed_config(train: TrainConfig, parallel: ParallelConfig, plan: BatchPlan, device: torch.device
                     ) -> dict[str, Any]:
    """DeepSpeed's JSON, derived from TrainConfig/ParallelConfig/BatchPlan (never written by hand)."""
    zero: dict[str, Any] = {"stage": parallel.zero_stage}
    if parallel.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device.type == "cuda"}
    if parallel.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": device.type == "cuda"}
    return {
        "train_batch_size": plan.global_batch_size,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.grad_accum_steps,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": train.precision == "bf16", "check_grad_overflow": True},
        "fp16": {"enabled": train.precision == "fp16", "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _cast_floating_inputs(dtype: torch.dtype):
    def hook(module, args, kwargs):
        def cast(value):
            return value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value

        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


def deepspeed_state_types() -> list[type]:
    """The non-torch types DeepSpeed pickles into its state files (0.19: loss scalers, the ZeRO stage enum, the
    ZeRO-1/2 fragment addresses); with these allowed, its files load with ``weights_only=True`` and nothing else
    in them can run."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


@contextlib.contextmanager
def safe_deepspeed_loads(folder: Path):
    """DeepSpeed's loaders call ``torch.load(weights_only=False)``: force weights-only with DeepSpeed's types."""
    try:
        with weights_only_loads(deepspeed_state_types()):
            yield
    except pickle.UnpicklingError as err:
        raise refuse_unpickling(err, Path(folder) / DS_FOLDER / DS_TAG) from None


def _precision_dtype(train: TrainConfig) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train.precision, torch.float32)


@torch.no_grad()
def fill_partitions(model: nn.Module) -> None:
    """Initial values for a model built under ``deepspeed.zero.Init`` (built with init deferred).

    One parameter is gathered at a time; rank 0 writes the full value from ``initial_parameter`` (the same
    (seed, name) draws as a single-process build) and DeepSpeed re-partitions it on leaving the context.
    """
    from deepspeed.runtime.zero.partition_parameters import GatheredParameters

    for name, param in model.named_parameters():
        with GatheredParameters([param], modifier_rank=0):
            if dist.get_rank() == 0:
                param.copy_(model.initial_parameter(plain_name(name)))
    model.reset_buffers()


def persistent_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The buffers ``state_dict`` would hold (index tables rebuilt from the config are registered non-persistent)."""
    return [(f"{prefix}.{name}" if prefix else name, buf)
            for prefix, module in model.named_modules() for name, buf in module.named_buffers(recurse=False)
            if name not in module._non_persistent_buffers_set]


def is_partitioned(model: nn.Module) -> bool:
    """Whether ``model`` was built under ``deepspeed.zero.Init`` (its parameters carry ZeRO-3 partition ids)."""
    return any(hasattr(param, "ds_id") for param in model.parameters())


class DeepSpeedBackend(Backend):
    name = "deepspeed"
    checkpoint_format = "deepspeed"

    @classmethod
    def construction(cls, parallel, train) -> contextlib.AbstractContextManager:
        """ZeRO-3: each module's parameters are partitioned as soon as it is built (``deepspeed.zero.Init``), so no
        rank ever holds the whole model; ``wrap`` then fills the partitions. ZeRO-1/2 keep full parameters."""
        if parallel.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        stack = contextlib.ExitStack()
        # the precision goes in through a config: DeepSpeed 0.19 ignores ``dtype=`` on an accelerator without fp16
        # (CPU) and builds bf16; F.linear is left unpatched so the layers compute as under every other backend
        init_config = {"train_micro_batch_size_per_gpu": 1,
                       "zero_optimization": {"stage": 3, "memory_efficient_linear": False},
                       "bf16": {"enabled": train.precision == "bf16"}, "fp16": {"enabled": train.precision == "fp16"}}
        stack.enter_context(deepspeed.zero.Init(config_dict_or_path=init_config))
        stack.enter_context(deferred_init())
        return stack

    def check_config(self) -> None:
        if self.train_cfg.non_finite == "skip" and self.train_cfg.precision != "fp16":
            raise ConfigError(
                f"train.non_finite: got 'skip' with parallel.backend='deepspeed' and train.precision="
                f"'{self.train_cfg.precision}', expected 'stop' (DeepSpeed applies the update inside the last "
                f"micro-step, before the loss can be checked; only its fp16 loss scaler skips bad steps)"
            )
        if self.train_cfg.ema_decay and self.parallel_cfg.zero_stage == 3:
            raise ConfigError("train.ema_decay: got a non-zero decay with parallel.zero_stage=3, expected 0 "
                              "(ZeRO-3 never holds full parameters; use stage 1/2 or fsdp for EMA)")

    def wrap(self, model, new_optimizer):
        import deepspeed

        if self.train_cfg.precision != "fp32":
            # DeepSpeed stores bf16/fp16 weights; cast float inputs to match (FSDP2's mp_policy does this itself)
            model.register_forward_pre_hook(_cast_floating_inputs(_precision_dtype(self.train_cfg)),
                                            with_kwargs=True)
        if is_partitioned(model):
            fill_partitions(model)
        self.ds_config = deepspeed_config(self.train_cfg, self.parallel_cfg, self.plan, self.device)
        if self.env.is_main:
            (self.run_dir / CONFIG_FILE).write_text(json.dumps(self.ds_config, indent=2))
        self._client_optimizer = new_optimizer()
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=self._client_optimizer, config=self.ds_config, dist_init_required=False
        )
        self._skipped_seen = engine.skipped_steps
        return engine, optimizer

    @property
    def module(self) -> nn.Module:
        return self.model.module

    def set_lr(self, lr: float) -> None:
        # ZeRO wrappers share the client optimizer's param-group dicts
        for group in self._client_optimizer.param_groups:
            group["lr"] = lr

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)  # DeepSpeed divides by gradient_accumulation_steps itself
        self.model.step()  # no-op update except at the accumulation boundary

    def step(self, loss_not_finite: torch.Tensor) -> torch.Tensor:
        # the update already happened in the boundary micro-step's engine.step(), with the LR set before it;
        # DeepSpeed drops an update whose grad norm is not finite (the ZeRO optimizers' overflow check, which the
        # bf16 section of our config keeps on; it reads the flag back itself) and counts it in skipped_steps
        skipped = self.model.skipped_steps != self._skipped_seen
        self._skipped_seen = self.model.skipped_steps
        norm = self.model.get_global_grad_norm()
        norm = float("nan") if skipped or norm is None else float(norm)
        return torch.tensor(norm, device=self.device)

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        self.model.save_checkpoint(str(Path(folder) / DS_FOLDER), tag=DS_TAG, client_state={"extra": extra},
                                   save_latest=False)
        dist.barrier()

    def load(self, folder: Path, meta: Any, extra_template: dict[str, Any]) -> dict[str, Any]:
        if meta.world_size != self.env.world_size or meta.zero_stage != self.parallel_cfg.zero_stage:
            source = Path(folder) / DS_FOLDER / DS_TAG
            raise RuntimeError(
                f"checkpoint {folder} was written by DeepSpeed ZeRO-{meta.zero_stage} on {meta.world_size} ranks; "
                f"this job runs ZeRO-{self.parallel_cfg.zero_stage} on {self.env.world_size}. DeepSpeed's native "
                f"checkpoints resume only on the same layout: relaunch with {meta.world_size} ranks and "
                f"parallel.zero_stage={meta.zero_stage}, or consolidate the weights with `python -m "
                f"deepspeed.utils.zero_to_fp32 {source.parent} OUT --tag {DS_TAG}` and start a new run from them"
            )
        with safe_deepspeed_loads(folder):
            _, client_state = self.model.load_checkpoint(
                str(Path(folder) / DS_FOLDER), tag=DS_TAG, load_optimizer_states=True,
                load_lr_scheduler_states=False,
            )
        if client_state is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {folder}")
        self._skipped_seen = self.model.skipped_steps
        return client_state["extra"]

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        if self.parallel_cfg.zero_stage == 3:
            from deepspeed.runtime.zero.partition_parameters import GatheredParameters

            state = {}
            for name, param in self.module.named_parameters():
                with GatheredParameters([param], modifier_rank=None):
                    if self.env.is_main:
                        state[plain_name(name)] = param.detach().to("cpu", torch.float32).clone()
            if self.env.is_main:
                for name, buf in persistent_buffers(self.module):
                    state[plain_name(name)] = buf.detach().to("cpu", torch.float32)
            return state
        if not self.env.is_main:
            return {}
        # ZeRO 1/2 keep full (possibly bf16) params in the module; the fp32 masters live in the optimizer shards
        return {k: v.detach().to("cpu", torch.float32) for k, v in self.module.state_dict().items()}

    @staticmethod
    def read_weights(folder: Path, ema: bool) -> dict[str, torch.Tensor]:
        """fp32 masters of every rank merged by DeepSpeed's zero_to_fp32; the EMA from the client state."""
        with safe_deepspeed_loads(folder):
            if ema:  # the trainer's client_state sits in DeepSpeed's rank-0 model-states file
                path = Path(folder) / DS_FOLDER / DS_TAG / "mp_rank_00_model_states.pt"
                return torch.load(path, map_location="cpu", weights_only=True).get("extra", {}).get("ema", {})
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            return get_fp32_state_dict_from_zero_checkpoint(str(Path(folder) / DS_FOLDER), tag=DS_TAG)
