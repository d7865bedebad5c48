"""Peak host RSS per rank of building and wrapping the model, whole against sharded construction.

See ``srdd_scale.cli.bench_build`` (also installed as ``srdd-bench-build``).
"""
import sys

from srdd_scale.cli.bench_build import main

if __name__ == "__main__":
    sys.exit(main())
