"""Pretokenize throughput: see ``srdd_scale.cli.bench_pretokenize`` (also installed as ``srdd-bench-pretokenize``)."""
import sys

from srdd_scale.cli.bench_pretokenize import main

if __name__ == "__main__":
    sys.exit(main())
