"""Train the image tokenizer: see ``srdd_scale.cli.train_tokenizer`` (also installed as ``srdd-train-tokenizer``)."""
import sys

from srdd_scale.cli.train_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
