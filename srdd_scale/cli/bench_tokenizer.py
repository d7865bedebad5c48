"""Benchmark the image tokenizer: encode and decode images/s per config and batch size. Prints a table, writes JSON.

    python tools/bench_tokenizer.py --out artifacts/bench/bench_tokenizer.json
    python tools/bench_tokenizer.py --configs configs/tokenizer/shapes_64.yaml --batch-sizes 1,16,64

Weights are random (speed does not depend on them); `--checkpoint` benchmarks a saved tokenizer instead.
On CPU the VAR 256 px config is measured at small batches only (it takes seconds per image on 2 cores).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from srdd_scale.config import load_config
from srdd_scale.tokenizer import build_tokenizer, load_tokenizer
from srdd_scale.tokenizer.config import TokenizerRunConfig
from srdd_scale.utils.rundir import PROJECT_ROOT as ROOT, bench_provenance

DEFAULT_CONFIGS = ("configs/tokenizer/shapes_64.yaml", "configs/tokenizer/var_256.yaml")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated tokenizer YAMLs")
    parser.add_argument("--checkpoint", default=None, help="benchmark this saved tokenizer instead of --configs")
    parser.add_argument("--batch-sizes", type=_ints, default=_ints("1,16,64,256" if cuda else "1,8,32"),
                        help="batch sizes for configs up to 64 px")
    parser.add_argument("--large-batch-sizes", type=_ints, default=_ints("1,8,32" if cuda else "1,2"),
                        help="batch sizes for configs above 64 px (VAR 256)")
    parser.add_argument("--repeats", type=int, default=5 if cuda else 2, help="timed calls per measurement")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16" if cuda else "fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="JSON path (default artifacts/bench/bench_tokenizer-<time>.json)")
    return parser.parse_args(argv)


def _timed(fn, repeats: int, device: torch.device) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench_one(name: str, tokenizer, batch_sizes, repeats: int, device: torch.device, precision: str) -> list[dict]:
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    rows = []
    generator = torch.Generator().manual_seed(0)
    for batch in batch_sizes:
        images = (torch.rand(batch, 3, tokenizer.image_size, tokenizer.image_size, generator=generator) * 2 - 1
                  ).to(device)
        with autocast:
            indices = tokenizer.encode(images)
            encode_s = _timed(lambda: tokenizer.encode(images), repeats, device)
            decode_s = _timed(lambda: tokenizer.decode(indices), repeats, device)
        rows.append({"config": name, "image_size": tokenizer.image_size, "batch_size": batch,
                     "tokens_per_image": tokenizer.tokens_per_image,
                     "params_m": round(sum(p.numel() for p in tokenizer.parameters()) / 1e6, 2),
                     "encode_images_per_s": batch / encode_s, "decode_images_per_s": batch / decode_s})
        print(f"{name:>28} {tokenizer.image_size:>5} {batch:>6} {rows[-1]['encode_images_per_s']:>12.3g} "
              f"{rows[-1]['decode_images_per_s']:>12.3g}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.checkpoint:
        tokenizers = [(Path(args.checkpoint).name, load_tokenizer(args.checkpoint))]
    else:
        torch.manual_seed(0)
        tokenizers = [(Path(p).stem, build_tokenizer(load_config([ROOT / p], [], TokenizerRunConfig).tokenizer))
                      for p in args.configs.split(",")]
    print(f"{'config':>28} {'px':>5} {'batch':>6} {'encode img/s':>12} {'decode img/s':>12}")
    rows = []
    for name, tokenizer in tokenizers:
        tokenizer = tokenizer.to(device).eval()
        sizes = args.batch_sizes if tokenizer.image_size <= 64 else args.large_batch_sizes
        rows += bench_one(name, tokenizer, sizes, args.repeats, device, args.precision)
    report = {"bench": "tokenizer", "device": str(device), "precision": args.precision,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
              "repeats": args.repeats, "results": rows, "provenance": bench_provenance()}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or ROOT / "artifacts" / "bench" / f"bench_tokenizer-{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
