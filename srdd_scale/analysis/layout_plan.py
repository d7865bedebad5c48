"""Per-rank memory of one training step: planned from the real model and the real FSDP2 wrapping under torch's
fake process group and fake tensors, or measured the same way in a real process group.

Both sides count memory with torch's ``FSDPMemTracker`` (a dispatch mode that sees every tensor the step
allocates, by role), so a plan and a measurement differ only by what the fake process group and fake tensors
change. The tracked step is a steady-state one: both do one untracked step first, which creates the optimizer
state (and, under fake tensors, fills the fake-kernel caches: a cache miss keeps temporaries alive longer).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from srdd_scale.model import build_model
from srdd_scale.model.transformer import deferred_init
from srdd_scale.train.backends import plan_batch
from srdd_scale.utils.dist import DistEnv

GIB = 2**30
# Attention kernels the plan runs on CPU: "fused" stands in for a GPU's flash / memory-efficient / Flex kernel
# (only the output and log-sum-exp are saved for backward); "math" is what CPU training runs (the L x L
# probabilities are saved).
ATTENTION_KERNELS = {"fused": [SDPBackend.FLASH_ATTENTION], "math": [SDPBackend.MATH]}


@dataclass(frozen=True)
class StepMemory:
    """Bytes one rank holds at the step's peak, grouped from the tracker's categories."""

    params: int  # sharded fp32 parameters + gathered (unsharded) compute copies + buffers
    grads: int  # sharded + unsharded gradients
    optimizer_state: int
    activations: int  # saved activations, temporaries and the micro-batch's inputs
    comm_buffers: int  # all-gather and reduce-scatter buffers
    peak: int
    micro_batch: int

    sharded: dict = dataclasses.field(default_factory=dict)  # the part of params/grads/optimizer_state in shards

    def gib(self) -> dict[str, float]:
        return {k: (v / GIB if k != "micro_batch" else v) for k, v in dataclasses.asdict(self).items()
                if k != "sharded"}


_GROUPS = {
    "params": ("Sharded Param", "Unsharded Param", "Buffer", "Parameter"),
    "grads": ("Sharded Grad", "Unsharded Grad", "Gradient"),
    "optimizer_state": ("OptState", "Optstate"),
    "activations": ("Activation", "Temp", "Inputs"),
    "comm_buffers": ("All Gather", "Reduce Scatter"),
}


def _grouped(snapshot: dict[str, int], micro_batch: int) -> StepMemory:
    by_name = {str(getattr(key, "value", key)): value for key, value in snapshot.items()}
    groups = {field: sum(by_name.get(name, 0) for name in names) for field, names in _GROUPS.items()}
    sharded = {"params": by_name.get("Sharded Param", 0), "grads": by_name.get("Sharded Grad", 0),
               "optimizer_state": groups["optimizer_state"]}
    return StepMemory(**groups, peak=by_name["Total"], micro_batch=micro_batch, sharded=sharded)


def text_width(cfg: Any) -> int | None:
    """Width of the frozen text encoder's states (None without cross-attention); builds the encoder once."""
    if not cfg.model.cross_attn:
        return None
    from srdd_scale.text import FrozenTextEncoder

    return FrozenTextEncoder(cfg.text).dim


def build_meta_model(cfg: Any, text_dim: int | None) -> nn.Module:
    """The training model of ``cfg`` with every parameter on ``meta`` (no memory, no init values)."""
    tok = cfg.tokenizer
    with torch.device("meta"), deferred_init():
        return build_model(cfg.model, tuple(tok.patch_nums), tok.vocab_size, tok.latent_dim, text_dim)


def synthetic_batch(cfg: Any, model: nn.Module, micro_batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Model inputs and targets of the shapes a loader batch produces (values do not matter for memory)."""
    tokens, first = model.seq_len, model.first_len
    batch = {"teacher_inputs": torch.randn(micro_batch, tokens - first, model.latent_dim, device=device),
             "targets": torch.randint(0, model.vocab_size, (micro_batch, tokens), device=device)}
    if model.text_dim is not None:
        batch["text_states"] = torch.randn(micro_batch, cfg.text.max_length, model.text_dim, device=device)
        batch["text_mask"] = torch.ones(micro_batch, cfg.text.max_length, dtype=torch.bool, device=device)
    if cfg.model.num_classes > 0:
        batch["class_ids"] = torch.randint(0, cfg.model.num_classes, (micro_batch,), device=device)
    return batch


def _train_step(backend, batch: dict[str, torch.Tensor], precision: str) -> None:
    """Forward, loss, backward and update of one micro-batch through the backend, as the trainer drives it.

    The loss is the token cross-entropy on fp32 logits that ``scale_losses`` computes (its metrics need real
    values, which fake tensors do not have; they run under no_grad and add no saved tensors).
    """
    device_type = batch["targets"].device.type
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    inputs = {k: v for k, v in batch.items() if k != "targets"}
    with backend.micro_step_context(True):
        with torch.autocast(device_type, dtype=dtype, enabled=precision != "fp32"):
            logits = backend.model(**inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["targets"].flatten())
        backend.backward(loss)
    backend.step(~torch.isfinite(loss.detach()))


def _tracked_step(backend, batch: dict[str, torch.Tensor], precision: str, kernel: str) -> StepMemory:
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    tracker = FSDPMemTracker(backend.model, backend.optimizer)
    tracker.track_inputs(tuple(batch.values()))
    device = batch["targets"].device
    with tracker, sdpa_kernel(ATTENTION_KERNELS[kernel]):
        _train_step(backend, batch, precision)
    peak = tracker.get_tracker_snapshot("peak")
    return _grouped(peak.get(device, peak.get(torch.device(device.type), {"Total": 0})),
                    batch["targets"].shape[0])


def _fsdp_backend(cfg: Any, model: nn.Module, env: DistEnv, device: torch.device, micro_batch: int,
                  backend_cls: type | None = None):
    from srdd_scale.train.backends.fsdp import FSDPBackend

    global_batch = micro_batch * env.world_size
    train = dataclasses.replace(cfg.train, global_batch_size=global_batch)
    parallel = dataclasses.replace(cfg.parallel, backend="fsdp", micro_batch_size=micro_batch)
    return (backend_cls or FSDPBackend)(model, cfg.train.base_lr, env, device, train, parallel,
                                        plan_batch(train, parallel, env.world_size), Path(tempfile.gettempdir()))


def _fake_materialising_backend(fake_mode) -> type:
    """The real FSDPBackend, except that its meta-built shards become fake tensors instead of initial values."""
    from srdd_scale.train.backends.fsdp import FSDPBackend

    class FakeShardsFSDPBackend(FSDPBackend):
        def materialise(self, model: nn.Module) -> None:
            with fake_mode:
                model.to_empty(device=self.device)
                model.reset_buffers()

    return FakeShardsFSDPBackend


def plan_step(cfg: Any, world_size: int, micro_batch: int, kernel: str = "fused",
              text_dim: int | None = None) -> StepMemory:
    """Planned per-rank memory of one FSDP2 step of ``micro_batch`` images on ``world_size`` ranks.

    Runs in this process alone: a fake process group of ``world_size`` ranks (collectives return tensors of
    the right shapes and do nothing) and fake tensors (shapes, dtypes and devices, no storage).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("plan_step needs a process without a process group (it creates a fake one)")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        device = torch.device("cpu")
        model = build_meta_model(cfg, text_dim if text_dim is not None else text_width(cfg))
        env = DistEnv(rank=0, world_size=world_size, local_rank=0, local_world_size=min(world_size, 8))
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        backend = _fsdp_backend(cfg, model, env, device, micro_batch, _fake_materialising_backend(fake_mode))
        with fake_mode:
            batch = synthetic_batch(cfg, model, micro_batch, device)
            with sdpa_kernel(ATTENTION_KERNELS[kernel]):
                _train_step(backend, batch, cfg.train.precision)
            return _tracked_step(backend, batch, cfg.train.precision, kernel)
    finally:
        dist.destroy_process_group()


def measure_step(cfg: Any, env: DistEnv, device: torch.device, micro_batch: int, kernel: str = "math",
                 text_dim: int | None = None) -> StepMemory:
    """Measured per-rank memory of the same step in the real process group this rank has joined.

    The model is built as the trainer builds it; one untracked step creates the optimizer state first.
    """
    torch.manual_seed(cfg.train.seed)
    tok = cfg.tokenizer
    model = build_model(cfg.model, tuple(tok.patch_nums), tok.vocab_size, tok.latent_dim,
                        text_dim if text_dim is not None else text_width(cfg))
    backend = _fsdp_backend(cfg, model, env, device, micro_batch)
    batch = synthetic_batch(cfg, backend.module, micro_batch, device)
    with sdpa_kernel(ATTENTION_KERNELS[kernel]):
        _train_step(backend, batch, cfg.train.precision)
    return _tracked_step(backend, batch, cfg.train.precision, kernel)


def largest_micro_batch(first: StepMemory, second: StepMemory, budget_bytes: float) -> int:
    """Largest micro-batch whose peak fits ``budget_bytes``, from two plans: memory is linear in the batch
    (activations grow per image; parameters, gradients, optimizer state and buffers do not)."""
    per_image = (second.peak - first.peak) / (second.micro_batch - first.micro_batch)
    fixed = first.peak - per_image * first.micro_batch
    if fixed + per_image > budget_bytes:
        return 0
    return int(math.floor((budget_bytes - fixed) / per_image)) if per_image > 0 else 10**9


def model_counts(model: nn.Module) -> dict[str, int]:
    """What DeepSpeed's ZeRO-3 estimator takes from a model: total parameters and the largest module's own."""
    return {"params_total": sum(p.numel() for p in model.parameters()),
            "largest_layer_params": max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())}


def deepspeed_zero3_estimate(counts: dict[str, int], world_size: int, gpus_per_node: int) -> dict[str, float] | None:
    """DeepSpeed's own ZeRO-3 model-state estimate (no offload, ``zero.Init``) in GiB per GPU, beside ours;
    None where DeepSpeed is not installed. (``..._all_live`` counts the same from a model, but dedups shared
    parameters by data_ptr, which is 0 for every meta tensor.)"""
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    except ImportError:
        return None
    nodes = max(1, world_size // gpus_per_node)
    _, gpu_bytes, largest_layer_bytes = estimate_zero3_model_states_mem_needs(
        counts["params_total"], counts["largest_layer_params"], num_gpus_per_node=min(world_size, gpus_per_node),
        num_nodes=nodes, cpu_offload=False, cpu_offload_params=False, zero_init=True)
    return {"model_states_gib": gpu_bytes / GIB, "largest_layer_gib": largest_layer_bytes / GIB}


def render_plan_table(cells: list[dict]) -> str:
    """Markdown of planned cells (the memory table of docs/scaling_guide.md); * marks rescaled cells."""
    lines = ["| depth | px | ranks | params | micro-batch | params GiB | grads GiB | optim GiB | activations GiB | "
             "comm GiB | **peak GiB** | max micro-batch | DeepSpeed ZeRO-3 states GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        g = c["planned_gib"]
        px = 16 * c["patch_nums"][-1]
        ds = f"{c['deepspeed_zero3']['model_states_gib']:.2f}" if c["deepspeed_zero3"] else "-"
        lines.append(
            f"| d{c['depth']} | {px} | {c['world_size']} | {c['params_total'] / 1e9:.2f}B | {g['micro_batch']} | "
            f"{g['params']:.2f} | {g['grads']:.2f} | {g['optimizer_state']:.2f} | {g['activations']:.2f} | "
            f"{g['comm_buffers']:.2f} | **{g['peak']:.2f}**{'' if c.get('source', 'planned') == 'planned' else ' *'}"
            f" | {c['max_micro_batch']} | {ds} |")
    return "\n".join(lines)
