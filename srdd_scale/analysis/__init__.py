"""Derived numbers and comparisons on top of the model/train packages: scaling guide, mask comparison, benchmarks."""
