"""Image tokenizer encode/decode speed.

See ``srdd_scale.cli.bench_tokenizer`` (also installed as ``srdd-bench-tokenizer``).
"""
import sys

from srdd_scale.cli.bench_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
