"""Transformer train-step and sampling speed per mask.

See ``srdd_scale.cli.bench_model`` (also installed as ``srdd-bench-model``).
"""
import sys

from srdd_scale.cli.bench_model import main

if __name__ == "__main__":
    sys.exit(main())
