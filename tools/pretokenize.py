"""Images + captions -> MDS shards: see ``srdd_scale.cli.pretokenize`` (also installed as ``srdd-pretokenize``)."""
import sys

from srdd_scale.cli.pretokenize import main

if __name__ == "__main__":
    sys.exit(main())
