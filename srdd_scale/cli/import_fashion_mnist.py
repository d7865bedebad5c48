"""Write Fashion-MNIST (real 28x28 greyscale photos of clothes) as image folders every tool can read.

    apt-get install -y dataset-fashion-mnist        # the original idx files, 31 MB
    python tools/import_fashion_mnist.py --output data/fashion_mnist --train-limit 20000
    python tools/train_tokenizer.py configs/tokenizer/fashion_64.yaml --output runs/tok_fashion

Writes OUTPUT/train and OUTPUT/test, each with PNGs and captions.jsonl ("a photo of a sneaker").
"""
from __future__ import annotations

import argparse
import sys

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_int
from srdd_scale.data.fashion_mnist import DEFAULT_ROOT, write_split_folder


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="folder holding the four idx .gz files")
    parser.add_argument("--output", required=True, help="writes OUTPUT/train and OUTPUT/test")
    parser.add_argument("--train-limit", type=positive_int, help="first N training images (default: all 60000)")
    parser.add_argument("--test-limit", type=positive_int, help="first N test images (default: all 10000)")
    args = parser.parse_args(argv)
    try:
        for split, limit in (("train", args.train_limit), ("test", args.test_limit)):
            count = write_split_folder(args.root, split, f"{args.output}/{split}", limit)
            print(f"{split}: {count} images -> {args.output}/{split}")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
