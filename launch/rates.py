r"""Empirical convergence rates: the slope of log(error) against log(epoch).

A method with error :math:`\mathcal O(T^{-p})` shows a straight line of slope
:math:`-p` on a log-log plot once its transient is over. :func:`fit_rate` fits that
slope by least squares over a window of epochs (by default the second half of the
run). The RR papers' rates, for comparison: D-RR, GT-RR and ED-RR with a decaying
step on a strongly convex (PL) problem :math:`\mathcal O(1/T^2)` in
:math:`\frac1n\sum_i\|x_i-x^*\|^2`; DSGD with i.i.d. sampling :math:`\mathcal O(1/T)`;
nonconvex with a tuned constant step :math:`\mathcal O(T^{-2/3})` in
:math:`\min_t\|\nabla f(\bar x_t)\|^2`.

Command (rates of every run of a finished experiment)::

  python -m decentjax.launch.rates /tmp/quickstart/metrics.jsonl --metric dist_to_opt
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from collections.abc import Sequence

import numpy as np
from etils import epath


def fit_rate(
    epochs: Sequence[float],
    values: Sequence[float],
    *,
    start: float | None = None,
    end: float | None = None,
) -> float:
    """Slope of ``log(values)`` against ``log(epochs)`` over ``start <= epochs <= end``.

    Args:
      epochs: epoch numbers (epoch 0 and non-positive values are skipped).
      values: the metric at those epochs (non-positive or non-finite values are
        skipped).
      start: first epoch of the window; default half of the last epoch.
      end: last epoch of the window; default the last epoch.

    Returns:
      The fitted slope, or NaN when fewer than three points are usable.
    """
    e = np.asarray(epochs, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if e.shape != v.shape:
        raise ValueError(f"epochs and values differ in shape: {e.shape} vs {v.shape}.")
    start = 0.5 * float(np.max(e, initial=0.0)) if start is None else start
    end = float(np.max(e, initial=0.0)) if end is None else end
    keep = (e > 0) & (e >= start) & (e <= end) & np.isfinite(v) & (v > 0)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(np.log(e[keep]), np.log(v[keep]), 1)[0])


def history_rate(
    history: list[dict[str, float]],
    metric: str,
    start: float | None = None,
    end: float | None = None,
) -> float:
    """:func:`fit_rate` of ``metric`` over a run's per-epoch history."""
    epochs = [row["epoch"] for row in history]
    return fit_rate(epochs, [row[metric] for row in history], start=start, end=end)


def bytes_to_reach(
    history: list[dict[str, float]], metric: str, target: float, x: str = "bytes_sent"
) -> float:
    """Bytes one agent had sent when ``metric`` first fell to ``target`` (inf: never).

    ``x="sim_time"`` gives the simulated time instead (any cumulative row key).
    """
    for row in history:
        if row[metric] <= target:
            return row[x]
    return math.inf


def main(argv: Sequence[str] | None = None) -> None:
    """Prints the fitted rate of every (topology, algorithm) run in a metrics file."""
    parser = argparse.ArgumentParser(description="Fit log-log rates from metrics.jsonl.")
    parser.add_argument("metrics", help="path or URI of a metrics.jsonl written by launch.main")
    parser.add_argument("--metric", default="dist_to_opt")
    parser.add_argument("--start", type=float, default=None, help="first epoch of the fit")
    args = parser.parse_args(argv)
    runs: dict[tuple[str, str], list[dict[str, float]]] = collections.defaultdict(list)
    for line in epath.Path(args.metrics).read_text().splitlines():  # Local or gs://.
        row = json.loads(line)
        runs[(row["topology"], row["algorithm"])].append(row)
    for (topology, algorithm), history in runs.items():
        slope = history_rate(history, args.metric, args.start)
        print(f"{topology:<14}{algorithm:<18}{args.metric} ~ epoch^{slope:.2f}")


if __name__ == "__main__":
    main()
