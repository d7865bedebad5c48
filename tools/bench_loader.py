"""Streaming loader throughput: see ``srdd_scale.cli.bench_loader`` (also installed as ``srdd-bench-loader``)."""
import sys

from srdd_scale.cli.bench_loader import main

if __name__ == "__main__":
    sys.exit(main())
