"""Pretokenize throughput (images/s written) for the small shapes config and VAR's 256 px config.

    python tools/bench_pretokenize.py [--small-images 512] [--var-images 64] [--device cpu] [--out out.json]

small: 64 px synthetic shapes through configs/tokenizer/shapes_64.yaml (tools/pretokenize.py's default).
var256: JPEG files (400x300, so decoding, EXIF, resize 1.125x and crop all run) in an image folder through
configs/tokenizer/var_256.yaml, VAR's architecture (ch 160, 4096 codes, 680 tokens). Both use random
weights: the speed does not depend on them. Timing starts after the streaming/transformers imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

from srdd_scale.analysis.bench_kit import Column, print_table, write_report
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import non_negative_int, positive_int
from srdd_scale.config import load_config
from srdd_scale.data.config import DataConfig
from srdd_scale.data.pretokenize import PretokenizeConfig, pretokenize_part
from srdd_scale.data.shapes import generate_shape_sample
from srdd_scale.text import TextConfig, load_text_tokenizer, train_sentencepiece
from srdd_scale.tokenizer import TokenizerConfig, build_tokenizer
from srdd_scale.tokenizer.config import TokenizerRunConfig
from srdd_scale.utils.rundir import PROJECT_ROOT

CONFIGS = PROJECT_ROOT / "configs" / "tokenizer"
COLUMNS = (Column("config", "config"), Column("px", "image_size"), Column("tokens", "tokens_per_image"),
           Column("images", "written"), Column("seconds", "seconds", ".1f"), Column("images/s", "images_per_s", ".2f"),
           Column("decode workers", "decode_workers"), Column("encode threads", "encode_threads"))


def _tokenizer_config(name: str) -> TokenizerConfig:
    return load_config([CONFIGS / name], [], cls=TokenizerRunConfig).tokenizer


def _jpeg_folder(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        sample = generate_shape_sample(i, "train", 0, 300)
        image = sample.image.resize((400, 300))
        image.save(root / f"{i:06d}.jpg", quality=90)
        (root / f"{i:06d}.txt").write_text(sample.caption)


def _run(name: str, cfg: PretokenizeConfig, tokenizer_cfg: TokenizerConfig, text_tokenizer, output: Path,
         device: str) -> dict:
    torch.manual_seed(0)
    tokenizer = build_tokenizer(tokenizer_cfg)
    stats = pretokenize_part(cfg, output, tokenizer, text_tokenizer, device=device)
    return {"config": name, "image_size": tokenizer.image_size, "tokens_per_image": tokenizer.tokens_per_image,
            "tokenizer_params_M": round(sum(p.numel() for p in tokenizer.parameters()) / 1e6, 2)} | stats


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-images", type=positive_int, default=512)
    parser.add_argument("--var-images", type=positive_int, default=64)
    parser.add_argument("--decode-workers", type=non_negative_int, default=1)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None,
                        help="JSON path (default artifacts/bench/bench_pretokenize-<time>.json)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        captions = (generate_shape_sample(i, "train", 0, 16).caption for i in range(1000))
        text_cfg = TextConfig(tokenizer=str(train_sentencepiece(captions, tmp / "spm", 512)))
        text_tokenizer = load_text_tokenizer(text_cfg)
        data = DataConfig(decode_workers=args.decode_workers, encode_batch_size=args.batch_size)
        results = []
        small = PretokenizeConfig(data=dataclasses.replace(data, image_size=64,
                                                           synthetic_train_samples=args.small_images), text=text_cfg)
        results.append(_run("small", small, _tokenizer_config("shapes_64.yaml"), text_tokenizer, tmp / "small",
                            args.device))
        _jpeg_folder(tmp / "jpegs", args.var_images)
        var = PretokenizeConfig(data=dataclasses.replace(data, image_size=256, input=str(tmp / "jpegs")),
                                text=text_cfg)
        results.append(_run("var256", var, _tokenizer_config("var_256.yaml"), text_tokenizer, tmp / "var256",
                            args.device))

    print_table(results, COLUMNS)
    write_report({"device": args.device, "torch_threads": torch.get_num_threads(), "results": results},
                 "bench_pretokenize", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
