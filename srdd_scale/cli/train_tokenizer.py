"""Train the multi-scale residual VQ image tokenizer on any data source.

    python tools/train_tokenizer.py configs/tokenizer/shapes_64.yaml --output runs/tok_shapes64
    python tools/train_tokenizer.py configs/tokenizer/shapes_64.yaml tokenizer_train.max_minutes=2 --output runs/q
    torchrun --nproc_per_node=2 tools/train_tokenizer.py configs/tokenizer/var_256.yaml \\
        data.input=/data/images data.image_size=256 --output runs/tok_var256

Re-running with the same --output resumes from its latest complete checkpoint. The trained tokenizer
is written to OUTPUT/tokenizer (use it as tokenizer.checkpoint=OUTPUT/tokenizer); metrics.jsonl,
samples/recon_step_*.png and plots/psnr.png record per-scale held-out PSNR and codebook usage.
"""
from __future__ import annotations

import argparse
import json
import sys

from srdd_scale.cli import entry_point
from srdd_scale.config import add_config_args, config_from_args, parse_config_args
from srdd_scale.tokenizer.config import TokenizerRunConfig
from srdd_scale.tokenizer.train import train_tokenizer


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--output", help="run folder (created; resumed when it already holds checkpoints)")
    args = parse_config_args(parser, argv)
    cfg = config_from_args(args, TokenizerRunConfig)
    if not args.output:
        parser.error("--output DIR is required")
    final = train_tokenizer(cfg, args.output)
    if final:
        print(json.dumps({k: final[k] for k in ("eval/psnr", "eval/usage/all", "train_minutes", "tokenizer_path")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
