"""Time every self-attention call a forward makes, per shape and backend: the measurements behind
``model.attention_impl=auto`` (transformer.resolve_attention_impl).

For each mask and scale, the call the ``sdpa`` path makes (that scale's queries over the keys of the scales it may
see, masks.first_key_scales) is timed under SDPA's math backend and under torch's fused choice, forward and
backward (``--forward-only`` for sampling). Per mask it then sums the layer three ways: every scale on one backend,
every scale on the faster backend for its shape (a per-shape choice), and one masked call over all L keys (VAR's
way: math materialises the L x L scores, the fused kernel takes the boolean mask). The per-shape sum against the
one-backend sums says whether choosing per shape buys anything on this device. FlexAttention is not timed here: on
CUDA it only runs compiled, which the GPU check's training section measures.

    srdd-bench-attention --depth 16 --batch-size 4 --out artifacts/bench/attention-d16.json
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from srdd_scale.analysis.bench_kit import Column, print_table, time_call, write_report
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_float, positive_int, positive_int_list
from srdd_scale.model.blocks import attention
from srdd_scale.model.config import MASK_MODES, VAR_PATCH_NUMS_256
from srdd_scale.model.masks import attention_allowed, first_key_scales

HEAD_DIM = 64  # VAR's width rule: 64 x depth channels over depth heads
IMPLS = ("math", "sdpa")
SHAPE_COLUMNS = (Column("mask", "mask"), Column("scale", "scale"), Column("queries", "queries"),
                 Column("keys", "keys"), Column("math us", "math_us", ".0f"), Column("sdpa us", "sdpa_us", ".0f"),
                 Column("faster", "faster"))
LAYER_COLUMNS = (Column("mask", "mask"), Column("per scale, math ms", "math_ms", ".2f"),
                 Column("per scale, sdpa ms", "sdpa_ms", ".2f"), Column("per shape ms", "per_shape_ms", ".2f"),
                 Column("one masked call, math ms", "masked_math_ms", ".2f"),
                 Column("one masked call, sdpa ms", "masked_sdpa_ms", ".2f"))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=positive_int, default=16, help="heads = depth, head width 64")
    parser.add_argument("--patch-nums", type=positive_int_list, default=VAR_PATCH_NUMS_256)
    parser.add_argument("--batch-size", type=positive_int, default=4,
                        help="rows per call (sampling with CFG: twice the images)")
    parser.add_argument("--masks", type=lambda s: tuple(s.split(",")), default=MASK_MODES)
    parser.add_argument("--forward-only", action="store_true", help="time forward only (sampling)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--min-run-time", type=positive_float, default=0.2,
                        help="seconds of timed calls per measurement")
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_attention-<time>.json)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.masks if m not in MASK_MODES]
    if unknown or len(set(args.masks)) != len(args.masks):
        parser.error(f"--masks {','.join(args.masks)}: expected distinct names from {', '.join(MASK_MODES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here")
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    return args


def _call_seconds(impl: str, queries: int, keys: int, mask: torch.Tensor | None, args: argparse.Namespace,
                  device: torch.device, dtype: torch.dtype) -> float:
    """Median seconds of one attention call of this shape (and its backward unless --forward-only), on
    [B, H, N, D] views of [B, N, H, D] tensors: the layout the model's head split hands to SDPA."""
    generator = torch.Generator().manual_seed(0)

    def heads_view(tokens: int) -> torch.Tensor:
        t = torch.randn(args.batch_size, tokens, args.depth, HEAD_DIM, generator=generator).to(device, dtype)
        return t.requires_grad_(not args.forward_only).transpose(1, 2)

    q, k, v = heads_view(queries), heads_view(keys), heads_view(keys)
    grad = heads_view(queries).detach()

    def run() -> None:
        if args.forward_only:
            with torch.no_grad():
                attention(q, k, v, mask, impl)
        else:
            torch.autograd.grad(attention(q, k, v, mask, impl), (q, k, v), grad)

    # "sdpa" with a mask: pin the fused kernels so that the masked call cannot fall back to math silently.
    fused_only = sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                              SDPBackend.CUDNN_ATTENTION]) if impl == "sdpa" and mask is not None else nullcontext()
    with fused_only:
        return time_call(run, warmup=2, min_run_time=args.min_run_time).seconds


def measure(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """(per-shape rows, per-mask layer sums) for the calls one layer makes under each mask."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    sizes = [p * p for p in args.patch_nums]
    shapes, layers = [], []
    for mask in args.masks:
        rows = []
        for scale, first in enumerate(first_key_scales(tuple(args.patch_nums), mask)):
            queries, keys = sizes[scale], sum(sizes[first : scale + 1])
            times = {impl: _call_seconds(impl, queries, keys, None, args, device, dtype) for impl in IMPLS}
            rows.append({"mask": mask, "scale": scale, "queries": queries, "keys": keys,
                         **{f"{impl}_us": s * 1e6 for impl, s in times.items()},
                         "faster": min(times, key=times.get)})
        allowed = attention_allowed(tuple(args.patch_nums), mask).to(device)
        masked = {impl: _call_seconds(impl, sum(sizes), sum(sizes), allowed, args, device, dtype) for impl in IMPLS}
        layers.append({"mask": mask,
                       **{f"{impl}_ms": sum(r[f"{impl}_us"] for r in rows) / 1e3 for impl in IMPLS},
                       "per_shape_ms": sum(min(r[f"{impl}_us"] for impl in IMPLS) for r in rows) / 1e3,
                       **{f"masked_{impl}_ms": s * 1e3 for impl, s in masked.items()}})
        shapes += rows
    return shapes, layers


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    shapes, layers = measure(args)
    print(f"device={args.device} dtype={args.dtype} depth={args.depth} batch={args.batch_size} "
          f"patch_nums={list(args.patch_nums)} {'forward' if args.forward_only else 'forward + backward'}")
    print_table(shapes, SHAPE_COLUMNS)
    print_table(layers, LAYER_COLUMNS)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()}
    write_report({"settings": settings, "shapes": shapes, "layers": layers}, "bench_attention", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
