"""Checkpoint hash cost (sha256 vs xxh3) and its share of a save.

See ``srdd_scale.cli.bench_checkpoint`` (also installed as ``srdd-bench-checkpoint``).
"""
import sys

from srdd_scale.cli.bench_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
