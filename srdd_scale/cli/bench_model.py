"""Benchmark the SRDD transformer: training-step tokens/s and peak memory per mask mode and depth, and
sampling images/s and peak memory for markovian vs block_causal, in one run. Prints a table, writes JSON.

Defaults depend on the device: on CPU a small schedule and tiny depths (whole run < 2 min on 2 cores);
on CUDA VAR's 256 px schedule, d12/d16, bf16 autocast. Weights and inputs are random (speed only).
Peak memory covers building the model, optimizer state, warmup and the timed iterations: on CUDA
torch.cuda.max_memory_allocated minus what was allocated before; on CPU each measurement runs in a fresh
subprocess (freed memory stays in the allocator, so in-process RSS would depend on the order) and reports
the peak RSS (VmHWM, reset through /proc/self/clear_refs) minus the RSS before the model was built.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys

import torch

from srdd_scale.analysis.bench_kit import Column, print_table, time_call, write_report
from srdd_scale.cli import entry_point, tool_command
from srdd_scale.cli.args import non_negative_int, positive_int, positive_int_list
from srdd_scale.model import ModelConfig, SamplingConfig, build_model
from srdd_scale.model.config import MASK_MODES as MASKS, VAR_PATCH_NUMS_256
from srdd_scale.model.flops import flops_per_image
from srdd_scale.model.loss import scale_losses
from srdd_scale.model.sampler import sample
from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer, split_codes
from srdd_scale.utils.peak_memory import PeakMemory

COLUMNS = (Column("kind", "kind"), Column("depth", "depth"), Column("mask", "mask"),
           Column("throughput", "throughput"), Column("TFLOP/s", "tflops_per_s", ".3f"),
           Column("peak MiB", "peak_mib", ".1f"))


def _names(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    unknown = [n for n in names if n not in MASKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mask mode(s) {unknown}; expected some of {', '.join(MASKS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=positive_int_list, default=(12, 16) if cuda else (2, 4))
    parser.add_argument("--patch-nums", type=positive_int_list,
                        default=VAR_PATCH_NUMS_256 if cuda else (1, 2, 3, 4, 6, 8))
    parser.add_argument("--masks", type=_names, default=MASKS, help="mask modes for the training bench")
    parser.add_argument("--sample-masks", type=_names, default=("markovian", "block_causal"),
                        help="mask modes for the sampling bench")
    parser.add_argument("--batch-size", type=positive_int, default=32 if cuda else 8,
                        help="training and sampling batch")
    parser.add_argument("--text-len", type=positive_int, default=32, help="caption tokens per image (random states)")
    parser.add_argument("--text-dim", type=positive_int, default=384, help="text encoder width (MiniLM: 384)")
    parser.add_argument("--vocab-size", type=positive_int, default=4096)
    parser.add_argument("--steps", type=positive_int, default=10 if cuda else 2, help="timed iterations per setting")
    parser.add_argument("--warmup", type=non_negative_int, default=3 if cuda else 1)
    parser.add_argument("--sample-depth", type=positive_int, default=None,
                        help="depth for the sampling bench (default: last)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block of the training bench")
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_model-<utc time>.json)")
    parser.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: one 'kind:depth:mask' (CPU)
    return parser.parse_args(argv)




def bench_training(args, tokenizer, device, depth: int, mask: str) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=depth, mask=mask), args.patch_nums, args.vocab_size,
                        tokenizer.latent_dim, args.text_dim).to(device).train()
    if args.compile:
        for block in model.blocks:
            block.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    seq_len = sum(p * p for p in args.patch_nums)
    codes = torch.randint(0, args.vocab_size, (args.batch_size, seq_len), device=device)
    with torch.no_grad():
        teacher_inputs = tokenizer.teacher_forcing_inputs(split_codes(codes, args.patch_nums))
    text_states = torch.randn(args.batch_size, args.text_len, args.text_dim, device=device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    def step() -> None:
        with autocast:
            logits = model(teacher_inputs, text_states, None)
        loss, _ = scale_losses(logits, codes, args.patch_nums)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_s = time_call(step, warmup=args.warmup, calls=args.steps).seconds
    flops = flops_per_image(model.cfg, args.patch_nums, mask, args.text_len, True, args.vocab_size,
                            tokenizer.latent_dim, args.text_dim)
    return {
        "kind": "train", "depth": depth, "mask": mask, "compile": args.compile,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": args.batch_size * seq_len / step_s,
        "step_s": step_s, "tflops_per_s": flops * args.batch_size / step_s / 1e12,
    }


def bench_sampling(args, tokenizer, device, depth: int, mask: str) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=depth, mask=mask), args.patch_nums, args.vocab_size,
                        tokenizer.latent_dim, args.text_dim).to(device).eval()
    text_states = torch.randn(args.batch_size, args.text_len, args.text_dim, device=device)
    cfg = SamplingConfig(top_k=min(900, args.vocab_size))  # VAR's FID setting: cfg 1.5 (doubled batch)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    def run() -> None:
        with autocast:
            sample(model, tokenizer, text_states=text_states, cfg=cfg,
                   generator=torch.Generator(device=device).manual_seed(0))

    batch_s = time_call(run, warmup=args.warmup, calls=args.steps).seconds
    return {"kind": "sample", "depth": depth, "mask": mask, "images_per_s": args.batch_size / batch_s,
            "batch_s": batch_s}


def make_tokenizer(args, device: torch.device):
    """A random tokenizer of the right grid: only its codebook/Phi (teacher inputs, next_scale_input) run."""
    latent = args.patch_nums[-1]
    if device.type == "cuda":
        cfg = TokenizerConfig(patch_nums=args.patch_nums, vocab_size=args.vocab_size, image_size=16 * latent)
    else:
        cfg = TokenizerConfig(image_size=4 * latent, ch=8, ch_mult=(1, 1, 2), num_res_blocks=1,
                              vocab_size=args.vocab_size, patch_nums=args.patch_nums, norm_groups=4)
    return build_tokenizer(cfg).to(device).eval()


def run_job(args, tokenizer, device: torch.device, kind: str, depth: int, mask: str) -> dict:
    bench = bench_training if kind == "train" else bench_sampling
    with PeakMemory(device) as memory:
        result = bench(args, tokenizer, device, depth, mask)
    return {**result, "peak_mib": memory.mib}


def run_in_subprocess(job: tuple[str, int, str], argv: list[str]) -> dict:
    cmd = [*tool_command("bench_model"), *argv, "--job", ":".join(map(str, job))]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench job {job} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@entry_point
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    jobs = [("train", d, m) for d in args.depths for m in args.masks]
    jobs += [("sample", args.sample_depth or args.depths[-1], m) for m in args.sample_masks]
    if args.job is not None:  # child process of a CPU run: one measurement, printed as JSON
        kind, depth, mask = args.job.split(":")
        print(json.dumps(run_job(args, make_tokenizer(args, device), device, kind, int(depth), mask)))
        return 0
    if device.type == "cuda":
        tokenizer = make_tokenizer(args, device)
        results = [run_job(args, tokenizer, device, *job) for job in jobs]
    else:
        results = [run_in_subprocess(job, argv) for job in jobs]

    print(f"device={device} patch_nums={list(args.patch_nums)} batch={args.batch_size} text_len={args.text_len}")
    print_table([{**r, "throughput": f"{r['tokens_per_s']:.0f} tok/s" if r["kind"] == "train"
                  else f"{r['images_per_s']:.2f} img/s"} for r in results], COLUMNS)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()}
    write_report({"settings": settings, "device": str(device), "results": results}, "bench_model", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
