"""Benchmarks of msprior: each figure a ratio to a reference run in the same process.

Run ``python bench/run.py`` from the repository root (see ``bench/README.md``).
"""
