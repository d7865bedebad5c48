"""Speed and memory against the official VAR code.

See ``srdd_scale.cli.bench_vs_var`` (also installed as ``srdd-bench-vs-var``).
"""
import sys

from srdd_scale.cli.bench_vs_var import main

if __name__ == "__main__":
    sys.exit(main())
