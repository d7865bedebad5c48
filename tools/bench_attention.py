"""Per-shape attention backend timings (the measurements behind model.attention_impl=auto).

See ``srdd_scale.cli.bench_attention`` (also installed as ``srdd-bench-attention``).
"""
import sys

from srdd_scale.cli.bench_attention import main

if __name__ == "__main__":
    sys.exit(main())
