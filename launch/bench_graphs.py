"""Benchmark: building a graph and its mixing matrix at scale, on the host (issue 15).

Command (one graph per process, so the peak RSS is this graph's)::

  /usr/bin/time -v python -m decentjax.launch.bench_graphs ring 100000
  /usr/bin/time -v python -m decentjax.launch.bench_graphs geometric 100000 --degree 14
  /usr/bin/time -v python -m decentjax.launch.bench_graphs ring 1000000

Prints the seconds spent building the graph, its Metropolis–Hastings weights with
:func:`core.weights.check_mixing_matrix`, and :func:`core.weights.spectral_gap`, and
the peak RSS. The random geometric graph's radius is ``sqrt(degree / (pi n))``, which
gives mean degree ``degree`` away from the border of the unit square; it must be above
about ``ln n`` for the graph to be connected (about 11.5 at n = 100,000).
"""

from __future__ import annotations

import argparse
import math
import resource
import time

from decentjax.core import topology, weights


def main(argv: list[str] | None = None) -> None:
    """Builds one graph, weights and checks it, computes its gap, and prints the costs.

    Args:
      argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", choices=["ring", "geometric"])
    parser.add_argument("n", type=int)
    parser.add_argument("--degree", type=float, default=14.0, help="geometric: mean degree")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.graph == "ring":
        a = topology.ring(args.n)
    else:
        radius = math.sqrt(args.degree / (math.pi * args.n))
        a = topology.random_geometric(args.n, radius, seed=args.seed)
    built = time.perf_counter()
    w = weights.check_mixing_matrix(weights.metropolis_hastings(a))
    checked = time.perf_counter()
    gap = weights.spectral_gap(w)
    done = time.perf_counter()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.graph} n={args.n} mean_degree={a.nnz / args.n:.2f} build={built - start:.2f}s "
        f"weights+check={checked - built:.2f}s gap={gap:.4g} ({done - checked:.2f}s) "
        f"total={done - start:.2f}s peak_rss={rss_mb:.0f}MB"
    )


if __name__ == "__main__":
    main()
