"""Thread settings vs a busy core, tokenizer and trainer.

See ``srdd_scale.cli.bench_threads`` (also ``srdd-bench-threads``).
"""
import sys

from srdd_scale.cli.bench_threads import main

if __name__ == "__main__":
    sys.exit(main())
