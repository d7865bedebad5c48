"""Plan per-GPU memory of a training step under a fake process group.

See ``srdd_scale.cli.plan_layout`` (also installed as ``srdd-plan-layout``).
"""
import sys

from srdd_scale.cli.plan_layout import main

if __name__ == "__main__":
    sys.exit(main())
