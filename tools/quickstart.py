"""The whole pipeline on synthetic shapes: see ``srdd_scale.cli.quickstart`` (also installed as ``srdd-quickstart``)."""
import sys

from srdd_scale.cli.quickstart import main

if __name__ == "__main__":
    sys.exit(main())
