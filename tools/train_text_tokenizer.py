"""Train a sentencepiece caption tokenizer.

See ``srdd_scale.cli.train_text_tokenizer`` (also installed as ``srdd-train-text-tokenizer``).
"""
import sys

from srdd_scale.cli.train_text_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
