"""Trainer throughput and MFU per backend.

See ``srdd_scale.cli.bench_train`` (also installed as ``srdd-bench-train``).
"""
import sys

from srdd_scale.cli.bench_train import main

if __name__ == "__main__":
    sys.exit(main())
