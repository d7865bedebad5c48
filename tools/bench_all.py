"""Every benchmark at one size, one results JSON and docs/benchmarks.md.

See ``srdd_scale.cli.bench_all`` (also installed as ``srdd-bench``).
"""
import sys

from srdd_scale.cli.bench_all import main

if __name__ == "__main__":
    sys.exit(main())
