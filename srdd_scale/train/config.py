"""Typed configs of the trainer: optimisation (TrainConfig), parallelism (ParallelConfig), logging (LoggingConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from srdd_scale.config import require


@dataclass(frozen=True)
class TrainConfig:
    """What to optimise and how long; VAR's defaults (docs/method.md §8.2). Loss/CFG-dropout live in ModelConfig."""

    seed: int = 0  # seeds model init (same on every rank), shuffling, conditioning dropout and sampling
    total_steps: int = 1000  # optimizer steps of the whole run (resume continues up to this)
    global_batch_size: int = 256  # images per optimizer step over all ranks (fixed; micro x accum x world)
    base_lr: float = 1e-4  # VAR's tblr: peak LR = base_lr * global_batch_size / 256 when scale_lr_with_batch
    scale_lr_with_batch: bool = True  # apply VAR's linear LR rule (docs/method.md §8.2)
    weight_decay: float = 0.05  # AdamW decay on matrices only (no 1-D params, embeddings, per-head scales)
    betas: tuple[float, ...] = (0.9, 0.95)  # AdamW betas (VAR)
    eps: float = 1e-8  # AdamW epsilon
    schedule: Literal["cosine", "lin0", "wsd", "constant"] = "lin0"  # LR shape after warmup
    warmup_steps: int = 100  # linear warmup length in steps
    warmup_start_factor: float = 0.005  # LR at step 0 as a fraction of peak (VAR's wp0)
    final_lr_factor: float = 0.1  # LR at the last step as a fraction of peak (VAR's wpe)
    lin0_flat_fraction: float = 0.05  # lin0: share of post-warmup steps kept at peak before the linear decay
    wsd_decay_fraction: float = 0.2  # wsd: share of all steps spent in the final decay
    grad_clip: float = 2.0  # max global grad norm (0 disables clipping)
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"  # autocast dtype of the transformer (fp16 uses a scaler)
    activation_checkpointing: bool = False  # recompute each block in backward to save memory
    compile: bool = False  # torch.compile each block
    ema_decay: float = 0.0  # EMA of weights (0 disables; needs full parameters, so not with ZeRO-3)
    non_finite: Literal["skip", "stop"] = "skip"  # on a NaN/inf loss: skip the step (counted) or stop the run
    max_consecutive_skips: int = 20  # stop the run (exit 3, no requeue) after this many skipped steps in a row
    max_skip_fraction: float = 0.1  # ... or once more than this share of all steps was skipped (checked from
    #                                 step max_consecutive_skips on)
    loss_spike_factor: float = 0.0  # roll back to the last verified checkpoint when a step's loss exceeds this
    #                                 x the running median, skipping the batches since (0 disables)
    loss_spike_window: int = 50  # steps in the running median of the spike guard (it acts once this many are seen)
    checkpoint_every: int = 500  # save every N steps (plus at the end and on a stop signal; 0: only those)
    keep_last: int = 3  # complete checkpoints kept (older ones are deleted)
    resume: Literal["auto", "never"] = "auto"  # auto: continue from the newest complete checkpoint in the run dir
    init_from: str = ""  # exported folder (tools/export_hf.py) whose weights start the run; "" = fresh init
    distill_from: str = ""  # teacher export for scale distillation (train/distill.py); "" = plain CE
    distill_weight: float = 0.5  # share of the teacher KL in the loss (the rest is CE on the codes)
    distill_temperature: float = 1.0  # softmax temperature of teacher and student in the KL
    eval_every: int = 0  # held-out eval loss every N steps (0 disables)
    eval_batches: int = 4  # micro-batches per rank in each eval
    sample_every: int = 0  # sample grid for sample_prompts every N steps (0 disables)
    sample_prompts: tuple[str, ...] = ("a red circle", "a blue square")  # fixed prompts of the sample grids
    sample_class_ids: tuple[int, ...] = ()  # fixed classes of the sample grids for class-conditional models

    def validate(self) -> None:
        require(self.seed >= 0, "train.seed", self.seed, "an int >= 0")
        require(self.total_steps > 0, "train.total_steps", self.total_steps, "a positive int")
        require(0 <= self.distill_weight <= 1, "train.distill_weight", self.distill_weight, "a float in [0, 1]")
        require(self.distill_temperature > 0, "train.distill_temperature", self.distill_temperature, "a float > 0")
        require(self.global_batch_size > 0, "train.global_batch_size", self.global_batch_size, "a positive int")
        require(self.base_lr > 0, "train.base_lr", self.base_lr, "a positive float")
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a float >= 0 (0 disables)")
        require(self.eps > 0, "train.eps", self.eps, "a positive float (AdamW epsilon)")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "train.betas", self.betas,
                 "two floats in [0, 1)")
        require(0 <= self.warmup_steps <= self.total_steps, "train.warmup_steps", self.warmup_steps,
                 f"an int in [0, train.total_steps={self.total_steps}]")
        require(0 < self.warmup_start_factor <= 1, "train.warmup_start_factor", self.warmup_start_factor,
                 "a float in (0, 1]")
        require(0 <= self.final_lr_factor <= 1, "train.final_lr_factor", self.final_lr_factor, "a float in [0, 1]")
        require(0 <= self.lin0_flat_fraction < 1, "train.lin0_flat_fraction", self.lin0_flat_fraction,
                 "a float in [0, 1)")
        require(0 < self.wsd_decay_fraction <= 1, "train.wsd_decay_fraction", self.wsd_decay_fraction,
                 "a float in (0, 1]")
        require(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "a float >= 0 (0 disables)")
        require(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "a float in [0, 1) (0 disables)")
        for key in ("checkpoint_every", "eval_every", "sample_every"):
            value = getattr(self, key)
            require(value >= 0, f"train.{key}", value, "an int >= 0 (0 disables)")
        require(all(c >= 0 for c in self.sample_class_ids), "train.sample_class_ids", self.sample_class_ids,
                "class ids >= 0")
        require(self.keep_last >= 1, "train.keep_last", self.keep_last, "an int >= 1")
        require(self.max_consecutive_skips >= 1, "train.max_consecutive_skips", self.max_consecutive_skips,
                "an int >= 1")
        require(0 < self.max_skip_fraction <= 1, "train.max_skip_fraction", self.max_skip_fraction,
                "a float in (0, 1]")
        require(self.loss_spike_factor == 0 or self.loss_spike_factor > 1, "train.loss_spike_factor",
                self.loss_spike_factor, "0 (off) or a float > 1")
        require(self.loss_spike_window >= 2, "train.loss_spike_window", self.loss_spike_window, "an int >= 2")
        require(self.eval_batches >= 1, "train.eval_batches", self.eval_batches, "an int >= 1")


@dataclass(frozen=True)
class ParallelConfig:
    """How the unmodified model is spread over ranks; the model file never sees any of this."""

    backend: Literal["ddp", "fsdp", "deepspeed"] = "ddp"  # data-parallel wrapper
    micro_batch_size: int = 0  # images per rank per forward (0: global_batch_size / world_size, no accumulation)
    fsdp_reshard_after_forward: bool = True  # FSDP2: free gathered block params after forward (ZeRO-3 like)
    fsdp_cpu_offload: bool = False  # FSDP2: keep sharded params/grads/optimizer state on CPU
    zero_stage: int = 2  # DeepSpeed ZeRO stage (1, 2 or 3)
    offload_optimizer: bool = False  # DeepSpeed: optimizer state on CPU
    offload_params: bool = False  # DeepSpeed: parameters on CPU (ZeRO-3 only)
    timeout_minutes: int = 30  # collective timeout of the process group

    def validate(self) -> None:
        require(self.micro_batch_size >= 0, "parallel.micro_batch_size", self.micro_batch_size,
                 "an int >= 0 (0 derives it from the world size)")
        require(self.zero_stage in (1, 2, 3), "parallel.zero_stage", self.zero_stage, "1, 2 or 3")
        require(not self.offload_params or self.zero_stage == 3, "parallel.offload_params",
                 self.offload_params, "false unless parallel.zero_stage=3 (DeepSpeed offloads params only in ZeRO-3)")
        require(self.timeout_minutes > 0, "parallel.timeout_minutes", self.timeout_minutes, "a positive int")


@dataclass(frozen=True)
class LoggingConfig:
    """Where a run writes and how it reports."""

    output_dir: str = "runs"  # parent of the run directories
    run_name: str = "run"  # run directory is <output_dir>/<run_name>-<config hash>
    log_every: int = 10  # console/metrics.jsonl/wandb every N steps
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online iff WANDB_API_KEY is set
    wandb_project: str = "srdd-scale"  # wandb project name
    wandb_entity: Optional[str] = None  # wandb team/user (None: the default of the API key)
    peak_flops: float = 0.0  # peak FLOP/s per device for MFU (0: look the device up in the table)
    progress_bar: bool = True  # tqdm bar on rank 0

    def validate(self) -> None:
        require(self.log_every >= 1, "logging.log_every", self.log_every, "an int >= 1")
        require(self.peak_flops >= 0, "logging.peak_flops", self.peak_flops, "a float >= 0 (0: device table)")
        require(bool(self.run_name.strip()) and "/" not in self.run_name, "logging.run_name", self.run_name,
                 "a non-empty name without '/'")
