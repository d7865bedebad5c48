"""Sample or edit images with an export: see ``srdd_scale.cli.sample`` (also installed as ``srdd-sample``)."""
import sys

from srdd_scale.cli.sample import main

if __name__ == "__main__":
    sys.exit(main())
