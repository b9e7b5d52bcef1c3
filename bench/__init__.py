"""Benchmarks of expertd: ``python -m bench.run`` (or ``make bench``) writes bench/RESULTS.md.

The runner itself never imports TensorFlow: every measured program (servers,
stages, load generators, the in-process reference) runs in its own process.
"""
