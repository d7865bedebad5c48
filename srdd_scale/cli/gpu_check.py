"""The prepared check of one GPU (< 8 minutes on an H100/H200): one JSON with every figure issue 16 asks for.

    srdd-gpu-check --out artifacts/bench/gpu_check.json     # on the GPU machine
    srdd-gpu-check --device cpu --tiny --out /tmp/gc.json   # the same code on tiny sizes (tested in CI)

Sections: bf16 training steps at d16 and d24, markovian and block_causal, regional compile off and on (tokens/s,
MFU against the device's peak, peak memory); forward/backward equality of the attention paths
(``model.attention_impl``, skipped where this branch has none); bench_attention's per-shape timings of every
self-attention call (math vs fused SDPA, per mask); sampling latency and peak memory at d16 and d30,
batch 32, markovian (no self-attention KV cache) and block_causal (VAR's KV cache); the layout planner's peak
against the peak measured for the same FSDP2 step on this device; with ``--var-root``, bench_vs_var's training,
sampling and encode cases against the official VAR code (bf16 on CUDA). Imports neither DeepSpeed, streaming nor
submitit, so it runs on a bare torch install.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any

import torch

from srdd_scale.cli import bench_model
from srdd_scale.model import ModelConfig, build_model
from srdd_scale.model.config import VAR_PATCH_NUMS_256
from srdd_scale.train.callbacks.hardware import device_peak_flops
from srdd_scale.utils.rundir import bench_provenance
from srdd_scale.cli import entry_point


@dataclasses.dataclass(frozen=True)
class CheckSizes:
    """Depths, schedule and batches of one check: the real one, or --tiny for CPU tests."""

    train_depths: tuple[int, ...] = (16, 24)
    sample_depths: tuple[int, ...] = (16, 30)
    plan_depth: int = 16
    patch_nums: tuple[int, ...] = VAR_PATCH_NUMS_256
    vocab_size: int = 4096
    text_dim: int = 384
    train_batch: int = 16
    sample_batch: int = 32
    steps: int = 5
    warmup: int = 2
    attention_run_time: float = 0.1  # seconds of timed calls per attention shape and backend


TINY = CheckSizes(train_depths=(2, 3), sample_depths=(2, 3), plan_depth=2, patch_nums=(1, 2, 3, 4), vocab_size=64,
                  text_dim=32, train_batch=2, sample_batch=2, steps=1, warmup=1, attention_run_time=0.001)
MASKS = ("markovian", "block_causal")


def _bench_args(sizes: CheckSizes, batch: int, compile_blocks: bool) -> argparse.Namespace:
    return bench_model.parse_args([
        "--patch-nums", ",".join(map(str, sizes.patch_nums)), "--batch-size", str(batch),
        "--vocab-size", str(sizes.vocab_size), "--text-dim", str(sizes.text_dim), "--steps", str(sizes.steps),
        "--warmup", str(sizes.warmup), *(["--compile"] if compile_blocks else []),
    ])


def train_steps(sizes: CheckSizes, device: torch.device) -> list[dict]:
    """bench_model's bf16 training step per depth, mask and compile setting, with MFU."""
    peak = device_peak_flops(device, "bf16")
    results = []
    for compile_blocks in (False, True):
        if compile_blocks and device.type != "cuda":
            results.append({"compile": True, "skipped": "regional compile is checked on CUDA only"})
            continue
        args = _bench_args(sizes, sizes.train_batch, compile_blocks)
        tokenizer = bench_model.make_tokenizer(args, device)
        for depth in sizes.train_depths:
            for mask in MASKS:
                result = bench_model.run_job(args, tokenizer, device, "train", depth, mask)
                result["mfu"] = result["tflops_per_s"] * 1e12 / peak if peak else None
                results.append(result)
    return results


def sampling(sizes: CheckSizes, device: torch.device) -> list[dict]:
    """bench_model's sampling latency and peak memory per depth and mask."""
    args = _bench_args(sizes, sizes.sample_batch, False)
    tokenizer = bench_model.make_tokenizer(args, device)
    results = []
    for depth in sizes.sample_depths:
        for mask in MASKS:
            results.append(bench_model.run_job(args, tokenizer, device, "sample", depth, mask))
    return results


def attention_paths(sizes: CheckSizes, device: torch.device) -> dict[str, Any]:
    """Logits and gradients of every ``model.attention_impl`` against the first one, per mask."""
    hints = typing.get_type_hints(ModelConfig)
    if "attention_impl" not in hints:
        return {"skipped": "model.attention_impl is not on this branch (one attention path only)"}
    impls = [v for v in typing.get_args(hints["attention_impl"]) if v != "auto"]
    depth, batch, text_len = sizes.train_depths[0], 2, 8
    tokens = sum(p * p for p in sizes.patch_nums)
    results: dict[str, Any] = {}
    for mask in ("markovian", "markovian_prev", "block_causal"):
        generator = torch.Generator().manual_seed(0)
        inputs = (torch.randn(batch, tokens - sizes.patch_nums[0] ** 2, 32, generator=generator).to(device),
                  torch.randn(batch, text_len, sizes.text_dim, generator=generator).to(device))
        reference = None
        for impl in impls:
            torch.manual_seed(0)
            model = build_model(ModelConfig(depth=depth, mask=mask, attention_impl=impl), sizes.patch_nums,
                                sizes.vocab_size, 32, sizes.text_dim).to(device)
            try:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = model(*inputs)
                logits.float().square().mean().backward()
            except (NotImplementedError, RuntimeError) as err:  # e.g. FlexAttention has no CPU backward
                results[f"{mask}/{impl}"] = {"skipped": str(err).splitlines()[0][:200]}
                continue
            grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
            if reference is None:
                reference = (impl, logits.detach().float(), grads)
                continue
            results[f"{mask}/{impl}"] = {
                "against": reference[0],
                "logits_max_abs_diff": float((logits.detach().float() - reference[1]).abs().max()),
                "grads_max_abs_diff": float((grads - reference[2]).abs().max()),
                "grads_rel_diff": float((grads - reference[2]).norm() / reference[2].norm()),
            }
    return results


def attention_shapes(sizes: CheckSizes, device: torch.device) -> dict[str, Any]:
    """bench_attention's per-shape timings (math vs fused SDPA, and one masked call) at the first training depth and
    batch, in bf16 on CUDA: the data behind model.attention_impl=auto on this device."""
    from srdd_scale.cli import bench_attention  # noqa: PLC0415

    args = bench_attention.parse_args([
        "--depth", str(sizes.train_depths[0]), "--patch-nums", ",".join(map(str, sizes.patch_nums)),
        "--batch-size", str(sizes.train_batch), "--device", str(device),
        "--min-run-time", str(sizes.attention_run_time)])
    shapes, layers = bench_attention.measure(args)
    return {"depth": args.depth, "batch": args.batch_size, "dtype": args.dtype, "shapes": shapes, "layers": layers}


def planner_against_measured(sizes: CheckSizes, device: torch.device) -> dict[str, Any]:
    """The planned peak of one FSDP2 step on 1 rank next to the peak measured for it here."""
    from srdd_scale.analysis.layout_plan import measure_step, plan_step
    from srdd_scale.run_config import RunConfig
    from srdd_scale.utils.dist import destroy_distributed, init_distributed

    latent = sizes.patch_nums[-1]
    cfg = RunConfig.load([], [
        f"model.depth={sizes.plan_depth}", f"tokenizer.patch_nums=[{','.join(map(str, sizes.patch_nums))}]",
        f"tokenizer.image_size={16 * latent}", f"tokenizer.vocab_size={sizes.vocab_size}",
        "parallel.backend=fsdp", "train.precision=bf16", "train.activation_checkpointing=true",
        f"train.global_batch_size={sizes.train_batch}"])
    kernel = "fused" if device.type == "cuda" else "math"
    started = time.perf_counter()
    planned = plan_step(cfg, 1, sizes.train_batch, kernel, text_dim=sizes.text_dim)
    plan_seconds = time.perf_counter() - started
    env = init_distributed()
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        measured = measure_step(cfg, env, device, sizes.train_batch, kernel, text_dim=sizes.text_dim)
        allocator_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    finally:
        destroy_distributed()
    return {"depth": sizes.plan_depth, "micro_batch": sizes.train_batch, "kernel": kernel,
            "planned_gib": planned.gib(), "measured_gib": measured.gib(),
            "measured_allocator_peak_gib": allocator_peak, "planned_over_measured": planned.peak / measured.peak,
            "plan_seconds": plan_seconds}


VS_VAR_CASES = ("train_d16", "sample_d16_b8", "vqvae_encode")


def against_var(sizes: CheckSizes, device: torch.device, var_root: str | None) -> dict[str, Any]:
    """tools/bench_vs_var.py's cases on this device (bf16 autocast on CUDA) against a checkout of the official VAR
    code: issue 20's GPU ratios. In this process, one case after another: CUDA's peak counters reset per case."""
    from srdd_scale.cli import bench_vs_var  # noqa: PLC0415

    if var_root is None:
        return {"skipped": "no --var-root (a checkout of github.com/FoundationVision/VAR)"}
    dtype = "bf16" if device.type == "cuda" else "fp32"
    runs = [bench_vs_var.run_case(case, impl, device, dtype, var_root=var_root, tiny=sizes == TINY, steps=sizes.steps)
            for case in VS_VAR_CASES for impl in bench_vs_var.CASES[case].impls]
    best = bench_vs_var.best_of(runs)
    return {"runs": runs, "table": bench_vs_var.render_table(best, f"{device.type}, {dtype}, one round")}


SECTIONS = {"train": train_steps, "attention": attention_paths, "attention_shapes": attention_shapes,
            "sampling": sampling, "planner": planner_against_measured, "vs_var": against_var}


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU test of the same code)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of the sections")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--var-root", default=None, help="a FoundationVision/VAR checkout for the vs_var section")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = TINY if args.tiny else CheckSizes()
    report: dict[str, Any] = {"provenance": bench_provenance(), "device": str(device), "tiny": args.tiny,
                              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "sizes": dataclasses.asdict(sizes)}
    for name in args.sections.split(","):
        started = time.perf_counter()
        try:
            extra = (args.var_root,) if name == "vs_var" else ()
            report[name] = SECTIONS[name](sizes, device, *extra)
        except Exception as err:  # one failing section must not lose the others' figures
            report[name] = {"error": f"{type(err).__name__}: {err}"}
        report[f"{name}_seconds"] = time.perf_counter() - started
        Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
