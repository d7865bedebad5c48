"""Fashion-MNIST idx files -> image folders.

See ``srdd_scale.cli.import_fashion_mnist`` (also installed as ``srdd-import-fashion-mnist``).
"""
import sys

from srdd_scale.cli.import_fashion_mnist import main

if __name__ == "__main__":
    sys.exit(main())
