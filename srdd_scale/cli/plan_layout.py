"""Plan per-GPU memory of an FSDP2 training step by running the real model and wrapping under a fake process group.

    srdd-plan-layout configs/model/d30.yaml train.activation_checkpointing=true --world-size 32 --gpu-memory-gib 80
    srdd-plan-layout --grid                 # d16-d36 x 8-1024 ranks + one 512 px row -> docs/layout_plan.json
    torchrun --nproc_per_node=2 -m srdd_scale.cli.plan_layout CONFIG --measure --micro-batch 4   # measured

One CPU process, no GPU: the model is built on ``meta``, wrapped by the project's FSDPBackend (activation
checkpointing, ``fully_shard`` per block and root) under torch's fake process group, and one forward + backward +
optimizer step runs on fake tensors under torch's FSDPMemTracker (srdd_scale/analysis/layout_plan.py).
Each plan takes about a minute at d16 on one core, longer at larger depths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from srdd_scale.config import add_config_args, config_from_args, parse_config_args
from srdd_scale.analysis.layout_plan import (
    GIB, StepMemory, build_meta_model, deepspeed_zero3_estimate, largest_micro_batch, model_counts, plan_step,
    render_plan_table, text_width)
from srdd_scale.run_config import RunConfig
from srdd_scale.cli import entry_point

ROOT = Path(__file__).resolve().parents[2]
GRID_DEPTHS = (16, 20, 24, 30, 36)
GRID_WORLD_SIZES = (8, 32, 128, 1024)
GPUS_PER_NODE = 8  # for DeepSpeed's estimator, which splits CPU memory by node
# VAR's 512 px schedule (d36-s): 13 scales, 2240 tokens on a 32 x 32 latent
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
GRID_BASE = ["configs/train/fsdp.yaml", "configs/text/minilm.yaml"]
GRID_OVERRIDES = ["train.activation_checkpointing=true"]


def plan_cell(cfg: Any, world_size: int, gpu_memory_gib: float, micro_batch: int | None, kernel: str,
              per_image: str = "plan") -> dict[str, Any]:
    """Plan at the configured micro-batch; the memory per extra image comes from a second plan with one image
    more (``per_image="plan"``) or, at half the cost, from the planned activations / micro-batch (an upper
    bound: part of the activations is per step, not per image)."""
    text_dim = text_width(cfg)
    micro = micro_batch or cfg.parallel.micro_batch_size or max(1, cfg.train.global_batch_size // world_size)
    at_micro = plan_step(cfg, world_size, micro, kernel, text_dim)
    if per_image == "plan":
        per_image_bytes = plan_step(cfg, world_size, micro + 1, kernel, text_dim).peak - at_micro.peak
    else:
        per_image_bytes = at_micro.activations / micro
    plus_one = StepMemory(**{**at_micro.__dict__, "peak": int(at_micro.peak + per_image_bytes),
                             "micro_batch": micro + 1})
    counts = model_counts(build_meta_model(cfg, text_dim))
    return {
        "depth": cfg.model.depth, "patch_nums": list(cfg.tokenizer.patch_nums), "world_size": world_size,
        "activation_checkpointing": cfg.train.activation_checkpointing, "kernel": kernel, **counts,
        "planned_gib": at_micro.gib(), "sharded_gib": {k: v / GIB for k, v in at_micro.sharded.items()},
        "per_image_gib": per_image_bytes / GIB,
        "max_micro_batch": largest_micro_batch(at_micro, plus_one, gpu_memory_gib * GIB),
        "gpu_memory_gib": gpu_memory_gib,
        "deepspeed_zero3": deepspeed_zero3_estimate(counts, world_size, GPUS_PER_NODE),
    }


def grid_config(depth: int, patch_nums: tuple[int, ...] | None = None) -> Any:
    """The grid's config of one depth: VAR's global batch, FSDP2 bf16, MiniLM text, activation checkpointing."""
    from srdd_scale.analysis.scaling_guide import var_recipe

    overrides = GRID_OVERRIDES + [f"model.depth={depth}",
                                  f"train.global_batch_size={var_recipe(depth)['global_batch']}"]
    if patch_nums:
        overrides += ["tokenizer.image_size=512", f"tokenizer.patch_nums=[{','.join(map(str, patch_nums))}]"]
    return RunConfig.load([str(ROOT / p) for p in GRID_BASE] + [str(ROOT / f"configs/model/d{depth}.yaml")],
                          overrides)


def rescaled_cell(planned: dict, world_size: int, micro_batch: int) -> dict:
    """Another world size from one plan's categories: sharded parameters, gradients and optimizer state scale
    with 1/ranks; gathered blocks, communication buffers and the fixed part of activations do not; activations
    grow by the planned per-image amount. (The step's peak comes at the same point: sharded state is constant.)"""
    g, n0 = planned["planned_gib"], planned["world_size"]
    sharded = planned["sharded_gib"]
    shrink = {k: v * (n0 / world_size - 1) for k, v in sharded.items()}
    extra_images = (micro_batch - g["micro_batch"]) * planned["per_image_gib"]
    cell = {**planned, "world_size": world_size, "source": f"rescaled from the {n0}-rank plan",
            "deepspeed_zero3": deepspeed_zero3_estimate(planned, world_size, GPUS_PER_NODE)}
    cell["planned_gib"] = {**g, "micro_batch": micro_batch, "params": g["params"] + shrink["params"],
                           "grads": g["grads"] + shrink["grads"],
                           "optimizer_state": g["optimizer_state"] + shrink["optimizer_state"],
                           "activations": g["activations"] + extra_images,
                           "peak": g["peak"] + sum(shrink.values()) + extra_images}
    fixed = cell["planned_gib"]["peak"] - micro_batch * planned["per_image_gib"]
    cell["max_micro_batch"] = max(0, int((planned["gpu_memory_gib"] - fixed) // planned["per_image_gib"]))
    return cell


def run_grid(out_json: Path, gpu_memory_gib: float, kernel: str, depths: tuple[int, ...],
             world_sizes: tuple[int, ...], plan_world_size: int) -> list[dict]:
    """Each schedule planned once at ``plan_world_size`` ranks; the other world sizes rescaled from that plan
    (one plan costs minutes of CPU at d30; a full grid of plans would take hours on a shared 2-core machine)."""
    cells: list[dict] = []
    schedules = [(d, None) for d in depths] + [(depths[0], PATCH_NUMS_512)]
    for depth, patch_nums in schedules:
        cfg = grid_config(depth, patch_nums)
        micro = {n: max(1, cfg.train.global_batch_size // n) for n in world_sizes}
        planned = plan_cell(cfg, plan_world_size, gpu_memory_gib, micro.get(plan_world_size), kernel,
                            per_image="activations")
        planned["source"] = "planned"
        for world_size in world_sizes if patch_nums is None else (plan_world_size,):
            cells.append(planned if world_size == plan_world_size else rescaled_cell(planned, world_size,
                                                                                      micro[world_size]))
        print(json.dumps(planned), flush=True)
        out_json.write_text(json.dumps({"kernel": kernel, "gpu_memory_gib": gpu_memory_gib, "cells": cells},
                                       indent=1) + "\n")
    return cells


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--world-size", type=_ints, default=(8,), help="ranks to plan for (comma-separated)")
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory per GPU for the max micro-batch")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="images per rank (default: parallel.micro_batch_size, else global batch / ranks)")
    parser.add_argument("--kernel", choices=("fused", "math"), default="fused",
                        help="attention kernel: fused stands in for a GPU's flash/Flex kernel; math = CPU training")
    parser.add_argument("--per-image", choices=("plan", "activations"), default="plan",
                        help="memory per extra image: from a second plan (exact) or activations / micro-batch (half "
                             "the time, an upper bound)")
    parser.add_argument("--measure", action="store_true",
                        help="measure the step in the real process group this process joins (torchrun) instead")
    parser.add_argument("--grid", action="store_true", help="plan the d16-d36 x 8-1024 ranks grid of the docs")
    parser.add_argument("--depths", type=_ints, default=GRID_DEPTHS, help="--grid depths")
    parser.add_argument("--plan-world-size", type=int, default=32, help="--grid: the world size really planned")
    parser.add_argument("--out", default=None, help="JSON output (--grid default: docs/layout_plan.json)")
    args = parse_config_args(parser, argv)
    if args.grid:
        out = Path(args.out or ROOT / "docs" / "layout_plan.json")
        cells = run_grid(out, args.gpu_memory_gib, args.kernel, args.depths, args.world_size
                         if args.world_size != (8,) else GRID_WORLD_SIZES, args.plan_world_size)
        print(render_plan_table(cells))
        return 0
    cfg = config_from_args(args, RunConfig)
    if args.measure:
        return _measure(cfg, args)
    cells = [plan_cell(cfg, n, args.gpu_memory_gib, args.micro_batch, args.kernel, args.per_image)
             for n in args.world_size]
    if args.out:
        Path(args.out).write_text(json.dumps(cells, indent=1) + "\n")
    print(json.dumps(cells, indent=1))
    print(render_plan_table(cells))
    return 0


def _measure(cfg: Any, args: argparse.Namespace) -> int:
    from srdd_scale.analysis.layout_plan import measure_step
    from srdd_scale.utils.dist import destroy_distributed, device_for, init_distributed

    env = init_distributed()
    try:
        micro = args.micro_batch or cfg.parallel.micro_batch_size or max(1, cfg.train.global_batch_size
                                                                          // env.world_size)
        measured = measure_step(cfg, env, device_for(env), micro, args.kernel)
    finally:
        destroy_distributed()
    result = {"rank": env.rank, "world_size": env.world_size, "measured_gib": measured.gib()}
    if args.out:
        Path(args.out).with_suffix(f".rank{env.rank}.json").write_text(json.dumps(result) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
