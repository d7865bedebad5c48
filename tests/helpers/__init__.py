"""Helpers shared by several test folders, imported as ``tests.helpers.<module>`` (never loaded by file path).

pytest's ``pythonpath = ["."]`` puts the repository root on sys.path, so ``tests`` resolves as a namespace
package while the test files themselves stay in importlib mode.
"""
