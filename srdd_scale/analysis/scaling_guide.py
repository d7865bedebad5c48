"""Scaling guide: parameters, FLOPs, per-GPU memory under full sharding, and VAR's batch/LR recipe per depth.

Everything is computed from configs (``flops.parameter_counts`` / ``flops.flops_per_image``), never measured,
so the d30/d36 rows cost nothing. The memory model is deliberately simple and stated in full in
``MEMORY_MODEL`` (rendered into docs/scaling_guide.md), so that a reader can check or change it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from srdd_scale.model.config import MASK_MODES, VAR_PATCH_NUMS_256, ModelConfig
from srdd_scale.model.flops import flops_per_image, parameter_counts

GUIDE_DEPTHS = (12, 16, 20, 24, 30, 36)
GUIDE_GPUS = (8, 32, 128)
GIB = 2**30

# Bytes of training state per parameter under ZeRO-3 / FSDP full sharding (all of it divided by the GPU count):
# bf16 compute copy 2 + fp32 master 4 + Adam m 4 + Adam v 4 + gradients 2 (bf16) or 4 (fp32 accumulation).
STATE_BYTES_BF16_GRADS = 16
STATE_BYTES_FP32_GRADS = 18
ACT_BYTES = 2  # activations kept in bf16 (autocast / FSDP MixedPrecisionPolicy param_dtype=bf16)
# Tensors one block saves for backward, in units of (tokens x width) elements, with a fused attention kernel
# (flash / memory-efficient / FlexAttention: no L x L score matrix is stored):
#   self-attn  8 = AdaLN-LN input 1 + modulated input 1 + q,k,v 3 + L2-normed q,k 2 + attention output 1
#   cross-attn 5 = LN input 1 + q input 1 + q 1 + attention output 1 + projection output 1
#   gates      2 = the two AdaLN-gated branch outputs
#   MLP       10 = LN/modulated input 1 + fc1 output 4 (GELU input) + GELU output 4 (fc2 input) + output 1
# (text keys/values, text_len x width per block, are added separately; they are small).
ACT_ELEMS_PER_TOKEN_PER_BLOCK = 25
# Logits: bf16 logits plus the fp32 softmax the cross-entropy backward needs, per token and vocabulary entry.
LOGIT_BYTES = 2 + 4

# VAR's recipe (docs/method.md §8.2): global batch and tblr; peak LR = tblr * global_batch / 256.
# d12 is not in VAR's table: it gets d16's settings. d36 is VAR's d36-s (512 px) row.
VAR_RECIPE = {12: (768, 1e-4), 16: (768, 1e-4), 20: (768, 1e-4), 24: (768, 8e-5), 30: (1024, 8e-5),
              36: (768, 8e-5)}

MEMORY_MODEL = f"""\
* **Sharded state** per GPU = P x b / N, with P = total parameters, N = GPUs and b =
  {STATE_BYTES_BF16_GRADS} bytes (bf16 params 2 + fp32 master 4 + Adam m 4 + Adam v 4 + bf16 grads 2) or
  {STATE_BYTES_FP32_GRADS} bytes (fp32 grads, e.g. FSDP2 with reduce_dtype=fp32 or DeepSpeed fp32 grad accumulation).
  The table uses {STATE_BYTES_FP32_GRADS} (conservative).
* **Gathered block**: full sharding all-gathers one block's bf16 params at a time, plus one prefetched, and
  holds its unsharded grads before reduce-scatter: 2 x 2 x P_block + 4 x P_block bytes
  (P_block = (core + text) / depth).
* **Activations** per image, {ACT_BYTES} bytes per element, L tokens per image (680 at 256 px), width C, depth d,
  text length T:
  * without activation checkpointing: d x (L x {ACT_ELEMS_PER_TOKEN_PER_BLOCK} x C + 2 x T x C) x {ACT_BYTES}
    (per-block saved tensors with a fused attention kernel, no L x L scores; breakdown in
    srdd_scale/analysis/scaling_guide.py);
  * with per-block activation checkpointing: d x L x C x {ACT_BYTES} (block inputs) + one block recomputed
    in backward, (L x {ACT_ELEMS_PER_TOKEN_PER_BLOCK} x C + 2 x T x C) x {ACT_BYTES};
  * plus the head's logits either way: L x V x {LOGIT_BYTES} bytes (bf16 logits + fp32 softmax for the CE
    backward).
* **Micro-batch** = global batch / N (no gradient accumulation). Not counted: CUDA context and allocator
  fragmentation (budget ~10%), the frozen text encoder and the image tokenizer's codebook (small).
"""


@dataclass(frozen=True)
class GuideSettings:
    """Inputs of the guide: the 256 px VAR schedule and the text side of our default large config."""

    depths: tuple[int, ...] = GUIDE_DEPTHS
    gpus: tuple[int, ...] = GUIDE_GPUS
    patch_nums: tuple[int, ...] = VAR_PATCH_NUMS_256
    vocab_size: int = 4096  # VAR's codebook
    latent_dim: int = 32  # VAR's Cvae
    text_dim: int = 384  # MiniLM token states (configs/text/minilm.yaml)
    text_len: int = 32  # caption tokens (configs/text/minilm.yaml max_length)
    gpu_memory_gib: float = 80.0  # H100 80 GB, for the "largest micro-batch that fits" column


def var_recipe(depth: int) -> dict[str, float]:
    """Global batch, tblr and peak LR from VAR's table (docs/method.md §8.2)."""
    if depth not in VAR_RECIPE:
        raise KeyError(f"depth {depth}: VAR's recipe covers depths {sorted(VAR_RECIPE)}")
    batch, tblr = VAR_RECIPE[depth]
    return {"global_batch": batch, "tblr": tblr, "peak_lr": tblr * batch / 256}


def activation_bytes_per_image(cfg: ModelConfig, settings: GuideSettings, checkpointing: bool) -> float:
    """Activation memory of one image in one forward+backward (formula in MEMORY_MODEL)."""
    tokens = sum(p * p for p in settings.patch_nums)
    width = cfg.embed_dim
    block = (tokens * ACT_ELEMS_PER_TOKEN_PER_BLOCK * width + 2 * settings.text_len * width) * ACT_BYTES
    blocks = cfg.depth * tokens * width * ACT_BYTES + block if checkpointing else cfg.depth * block
    return float(blocks + tokens * settings.vocab_size * LOGIT_BYTES)


def memory_per_gpu(counts: dict[str, int], cfg: ModelConfig, settings: GuideSettings, gpus: int,
                   micro_batch: int) -> dict[str, float]:
    """Per-GPU memory in GiB under full sharding on `gpus` GPUs at `micro_batch` images per GPU."""
    block_params = counts["core"] / cfg.depth + counts["text"] / cfg.depth
    gathered = (2 * 2 + 4) * block_params
    state = counts["total"] * STATE_BYTES_FP32_GRADS / gpus
    act = {ac: activation_bytes_per_image(cfg, settings, ac) for ac in (False, True)}
    budget = settings.gpu_memory_gib * GIB - state - gathered
    return {
        "state_gib": state / GIB,
        "state_bf16_grads_gib": counts["total"] * STATE_BYTES_BF16_GRADS / gpus / GIB,
        "gathered_block_gib": gathered / GIB,
        "micro_batch": micro_batch,
        "total_no_ac_gib": (state + gathered + micro_batch * act[False]) / GIB,
        "total_ac_gib": (state + gathered + micro_batch * act[True]) / GIB,
        "max_micro_batch_no_ac": max(0, int(budget // act[False])),
        "max_micro_batch_ac": max(0, int(budget // act[True])),
    }


def guide_row(depth: int, settings: GuideSettings) -> dict:
    """Every number of one depth's row (JSON-ready)."""
    cfg = ModelConfig(depth=depth)
    counts = parameter_counts(cfg, settings.patch_nums, settings.vocab_size, settings.latent_dim, settings.text_dim)
    flops = {mode: flops_per_image(cfg, settings.patch_nums, mode, settings.text_len, True, settings.vocab_size,
                                   settings.latent_dim, settings.text_dim) for mode in MASK_MODES}
    recipe = var_recipe(depth)
    memory = {}
    for gpus in settings.gpus:
        micro = max(1, recipe["global_batch"] // gpus)
        memory[str(gpus)] = memory_per_gpu(counts, cfg, settings, gpus, micro)
    return {
        "depth": depth, "width": cfg.embed_dim, "heads": cfg.heads, "params": counts,
        "flops_per_image_train": flops,
        "activation_gib_per_image": {"no_ac": activation_bytes_per_image(cfg, settings, False) / GIB,
                                     "ac": activation_bytes_per_image(cfg, settings, True) / GIB},
        "recipe": recipe, "memory": memory,
    }


def scaling_guide(settings: GuideSettings = GuideSettings()) -> dict:
    """The whole guide as a JSON-ready dict."""
    return {"settings": asdict(settings), "memory_model": MEMORY_MODEL,
            "rows": [guide_row(d, settings) for d in settings.depths]}


def _m(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _planned_memory_section(layout_plan: dict) -> list[str]:
    from srdd_scale.analysis.layout_plan import render_plan_table

    cells = sorted(layout_plan["cells"], key=lambda c: (c["patch_nums"][-1], c["depth"], c["world_size"]))
    return [
        "", "## Memory per GPU under FSDP2 full sharding (planned)", "",
        "From `srdd-plan-layout --grid` (docs/layout_plan.json): the real model built on `meta`, wrapped by the "
        "project's FSDPBackend (bf16 params, fp32 reduction, activation checkpointing, `fully_shard` per block and "
        "root) under torch's fake process group, one steady-state forward + backward + AdamW step of a micro-batch "
        "(global batch / ranks, at least 1) on fake tensors under torch's `FSDPMemTracker`; attention through a "
        "fused kernel as on a GPU. GiB per rank at the step's peak. Each schedule is planned at one world size; "
        "cells marked * rescale that plan (sharded parameters, gradients and optimizer state x planned ranks / "
        "ranks; activations by the planned memory per image). `max micro-batch` fits "
        f"{layout_plan['gpu_memory_gib']:.0f} GiB (activations / micro-batch per image: an upper bound). Validated "
        "against a real 2-rank FSDP2 step on CPU (tests/train/test_layout_plan.py: within 15%). DeepSpeed's column "
        "is its own ZeRO-3 model-state estimate (`estimate_zero3_model_states_mem_needs`, no offload), which counts "
        "no activations.", "",
        render_plan_table(cells), "",
        "### Memory model", "",
        "Not counted: CUDA context and allocator fragmentation (budget ~10%), the frozen text encoder, the image "
        "tokenizer's codebook and the data loader.",
    ]


def render_markdown(guide: dict, layout_plan: dict | None = None) -> str:
    """docs/scaling_guide.md from the guide dict; the memory section from the layout planner's grid when given
    (else from the formula in MEMORY_MODEL)."""
    s, rows = guide["settings"], guide["rows"]
    masks = list(rows[0]["flops_per_image_train"])
    tokens = sum(p * p for p in s["patch_nums"])
    out = [
        "# Scaling guide (256 px)", "",
        "Generated by `python tools/scaling_guide.py` (do not edit by hand; the JSON beside it has every number).",
        f"Schedule `patch_nums={list(s['patch_nums'])}` ({tokens} tokens per image), vocabulary {s['vocab_size']}, "
        f"latent {s['latent_dim']}, text cross-attention on {s['text_len']} tokens of width {s['text_dim']} "
        "(MiniLM). Width = 64 x depth, heads = depth (docs/method.md §8.1).", "",
        "## Parameters and FLOPs", "",
        "Parameters from `srdd_scale.model.flops.parameter_counts`. **core** is VAR's convention (the image "
        "transformer blocks without the text parts, ~18 d w^2 = 73728 d^3, the N of VAR's scaling laws); "
        "**total** adds text cross-attention/projections, embeddings and the head. FLOPs per image are "
        "forward + backward (3x forward, 2 FLOPs per multiply-add) from `flops_per_image`, counting only the "
        "attention pairs each mask allows.", "",
        "| depth | width | core params | total params | " + " | ".join(f"train GFLOP/img {m}" for m in masks)
        + " |",
        "|" + "---|" * (4 + len(masks)),
    ]
    for r in rows:
        flops = " | ".join(f"{r['flops_per_image_train'][m] / 1e9:.1f}" for m in masks)
        out.append(f"| d{r['depth']} | {r['width']} | {_m(r['params']['core'])} | {_m(r['params']['total'])} | "
                   f"{flops} |")
    out += ["", "## Recommended batch and learning rate", "",
            "VAR's recipe (docs/method.md §8.2): peak LR = tblr x global batch / 256, AdamW (0.9, 0.95), wd 0.05, "
            "`lin0` schedule. d12 is not in VAR's table and takes d16's values; d36 is VAR's d36-s row (512 px).",
            "", "| depth | global batch | tblr (`train.base_lr`) | peak LR |", "|---|---|---|---|"]
    for r in rows:
        rec = r["recipe"]
        out.append(f"| d{r['depth']} | {rec['global_batch']} | {rec['tblr']:.0e} | {rec['peak_lr']:.1e} |")
    if layout_plan is not None:
        return "\n".join(out + _planned_memory_section(layout_plan))
    out += ["", "## Memory per GPU under ZeRO-3 / FSDP full sharding", "",
            "Computed, not measured (formula below). Micro-batch = global batch / GPUs; GiB per GPU. "
            "`AC` = per-block activation checkpointing (`train.activation_checkpointing=true`). "
            f"`max mb` = largest micro-batch that fits {s['gpu_memory_gib']:.0f} GiB.", "",
            "| depth | GPUs | sharded state | micro-batch | total, no AC | total, AC | max mb no AC | max mb AC |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for gpus, m in r["memory"].items():
            out.append(f"| d{r['depth']} | {gpus} | {m['state_gib']:.2f} | {m['micro_batch']} | "
                       f"{m['total_no_ac_gib']:.1f} | {m['total_ac_gib']:.1f} | {m['max_micro_batch_no_ac']} | "
                       f"{m['max_micro_batch_ac']} |")
    out += ["", "Activation memory per image (GiB): " + ", ".join(
        f"d{r['depth']} {r['activation_gib_per_image']['no_ac']:.2f} / {r['activation_gib_per_image']['ac']:.2f} AC"
        for r in rows) + ".", "",
        "Where *total* exceeds the GPU, use activation checkpointing, more GPUs, or gradient accumulation "
        "(`parallel.micro_batch_size` below global batch / GPUs).", "",
        "### Memory model", "", guide["memory_model"]]
    return "\n".join(out)
