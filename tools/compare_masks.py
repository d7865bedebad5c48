"""SRDD vs VAR masks at equal budget.

See ``srdd_scale.cli.compare_masks`` (also installed as ``srdd-compare-masks``).
"""
import sys

from srdd_scale.cli.compare_masks import main

if __name__ == "__main__":
    sys.exit(main())
