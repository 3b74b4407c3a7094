"""Benchmark: D-RR and DSGD in decentjax against the authors'-style NumPy code.

Command::

  python -m decentjax.launch.bench_drr [--quick] [--reps 5] [--devices 1]

This script is now the ``numpy_drr`` comparison of the benchmark suite
(:mod:`launch.benchmarks.numpy_drr`: ℓ2 logistic regression, d = 785, n = 16 .. 1024,
lazy Metropolis exponential graph, equal work checked after one epoch from the same
permutations, and the per-agent NumPy loop for n ≤ 64); it takes the suite's flags and
is the same as ``python -m decentjax.launch.benchmarks --only numpy_drr``.
"""

from __future__ import annotations

import sys

from decentjax.launch.benchmarks.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["--only", "numpy_drr", *sys.argv[1:]]))
