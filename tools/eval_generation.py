"""FID + IS of a class-conditional checkpoint, or a CFG sweep: see ``srdd_scale.cli.eval_generation`` (also
installed as ``srdd-eval-generation``)."""
import sys

from srdd_scale.cli.eval_generation import main

if __name__ == "__main__":
    sys.exit(main())
