"""Train a sentencepiece caption tokenizer on a corpus' captions (the same sources pretokenize reads).

    python tools/train_text_tokenizer.py --output artifacts/text/shapes_spm          # synthetic shapes
    python tools/train_text_tokenizer.py --input 'shards/*.tar' --output tok/web_spm --vocab-size 8000

Then pass ``text.tokenizer=<output>.model`` to tools/pretokenize.py and training.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_int
from srdd_scale.config import ConfigError, add_config_args, config_from_args, parse_config_args
from srdd_scale.data.pretokenize import PretokenizeConfig
from srdd_scale.data.sources import iter_captions
from srdd_scale.run_config import RunConfig
from srdd_scale.text import load_text_tokenizer, train_sentencepiece


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--input", help="image folder, .tar shard(s) or glob (sets data.input)")
    parser.add_argument("--output", required=True, help="model prefix: writes OUTPUT.model and OUTPUT.vocab")
    parser.add_argument("--vocab-size", type=positive_int, help="target vocabulary (default: text.vocab_size)")
    parser.add_argument("--max-captions", type=positive_int, default=1_000_000, help="captions read from the corpus")
    parser.add_argument("--seed", type=int, default=0, help="sentencepiece sampling seed")
    args = parse_config_args(parser, argv)
    if args.input:
        args.config_args.append(f"data.input={args.input}")
    # The run's own YAML (RunConfig: data/text/tokenizer plus the sections training reads) works here too.
    run = config_from_args(args, RunConfig)
    cfg = PretokenizeConfig(data=run.data, text=run.text, tokenizer=run.tokenizer)
    # Captions only: synthetic images are drawn at the smallest size since their pixels are not used.
    data = dataclasses.replace(cfg.data, image_size=16) if not cfg.data.input else cfg.data
    try:
        path = train_sentencepiece(iter_captions(data, limit=args.max_captions), args.output,
                                   args.vocab_size or cfg.text.vocab_size, seed=args.seed)
    except (ConfigError, ValueError) as err:
        sys.exit(f"error: {err}")
    tokenizer = load_text_tokenizer(dataclasses.replace(cfg.text, tokenizer=str(path)))
    print(f"wrote {path} ({tokenizer.vocab_size} pieces, identity {tokenizer.identity()[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
