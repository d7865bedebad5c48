"""Train an SRDD transformer: see ``srdd_scale.cli.train`` (also installed as ``srdd-train``)."""
import sys

from srdd_scale.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
