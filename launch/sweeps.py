r"""Seeds and step-size sweeps from a config, run as one compiled program per method.

``--config.seeds=S`` runs the seeds ``config.seed .. config.seed + S - 1``;
``--config.sweep.learning_rate="(v1, v2, ...)"`` runs every step size ``v`` for every
seed. The ``R = S x L`` runs of a method are one :class:`core.runs.RunsRunner`: one
compilation, a leading runs axis vmapped inside the same ``jit(shard_map(scan))``.

* A seed draws its own ``x0``, sample orders and method randomness (its
  :func:`launch.train.run_keys`); the data and its split over agents stay those of
  ``config.seed``, so the seeds measure the optimizer's spread on one problem.
* A swept step size ``v`` replaces the schedule's scale: ``step.constant`` for a
  constant step, ``step.a`` of :math:`\alpha_t = a/(bt+c)`, ``step.levels[0]`` of a
  piecewise schedule (the other levels scale with it). It enters as the traced
  factor ``v / scale`` (:func:`core.schedules.scaled`), so the step sizes share the
  compilation. Methods whose step enters their mixing matrix (NIDS, EXTRA)
  take a constant step only and are refused with their own message.

:func:`bands` turns the runs into per-epoch mean and standard deviation over seeds
for every step size, and :func:`best` picks each method's step size.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jax
import ml_collections
import numpy as np

from core import runs, schedules

SCALE_FIELD = {"constant": "constant", "inverse_epoch": "a", "piecewise": "levels"}
"""The field of ``config.step`` a swept learning rate replaces, per schedule."""


def _seeds(config: ml_collections.ConfigDict) -> int:
    return config.get("seeds", 1)


def _step_sizes(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    return tuple(config.get("sweep", {}).get("learning_rate", ()) or ())


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.seeds`` and ``config.sweep`` before any data is loaded.

    Raises:
      ValueError: for a seed count that is not a positive int, a step size that is not a
        positive finite number, an unknown sweep key or a step schedule it cannot scale.
    """
    seeds = _seeds(config)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"config.seeds must be a positive int, got {seeds!r}.")
    unknown = sorted(set(config.get("sweep", {}).keys()) - {"learning_rate"})
    if unknown:
        raise ValueError(f"config.sweep has unknown keys {unknown}; valid: ['learning_rate'].")
    values = _step_sizes(config)
    bad = [v for v in values if not (isinstance(v, int | float) and math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(
            f"config.sweep.learning_rate must hold positive finite step sizes, got {bad} "
            f"in {values}."
        )
    if values and config.step.schedule not in SCALE_FIELD:
        raise ValueError(
            f"config.sweep.learning_rate scales the step schedule, and schedules "
            f"{sorted(SCALE_FIELD)} can be scaled; got {config.step.schedule!r}."
        )


def num_runs(config: ml_collections.ConfigDict) -> int:
    """``R``: seeds times step sizes (1: an ordinary single run)."""
    return _seeds(config) * max(1, len(_step_sizes(config)))


def grid(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """The runs, in runs-axis order: ``{"run", "seed"}`` plus ``"learning_rate"`` if swept."""
    seeds = [config.seed + s for s in range(_seeds(config))]
    steps = _step_sizes(config) or (None,)
    out = []
    for step in steps:
        for seed in seeds:
            row = {"run": len(out), "seed": seed}
            if step is not None:
                row["learning_rate"] = float(step)
            out.append(row)
    return out


def _scale(config: ml_collections.ConfigDict) -> float:
    value = config.step[SCALE_FIELD[config.step.schedule]]
    return float(value[0] if config.step.schedule == "piecewise" else value)


def builder(config, make, learning_rate, runs_grid):
    """``(build, hyper)`` for :class:`core.runs.RunsRunner`.

    Args:
      config: the experiment config.
      make: ``learning_rate -> Algorithm`` (the method with everything else fixed).
      learning_rate: the configured step (a float or optax schedule).
      runs_grid: :func:`grid`'s rows.
    """
    if "learning_rate" not in runs_grid[0]:
        return (lambda hyper: make(learning_rate)), {}
    factors = np.array([row["learning_rate"] / _scale(config) for row in runs_grid])
    return (
        lambda hyper: make(schedules.scaled(learning_rate, hyper["lr_scale"])),
        {"lr_scale": factors},
    )


def train_method(
    config, make, learning_rate, sampler, agent_mesh, evaluate, init, n_agents, run_keys, **kwargs
):
    """Runs every run of one method in one program.

    Args:
      config: the experiment config.
      make: ``learning_rate -> Algorithm``.
      learning_rate: the configured step.
      sampler: the method's sampler.
      agent_mesh: the agent mesh.
      evaluate: the metrics function.
      init: ``key -> params`` of one agent.
      n_agents: number of agents.
      run_keys: ``seed -> RunKeys`` (:func:`launch.train.run_keys`).
      **kwargs: ``data``, ``num_epochs`` and what :func:`core.runs.train_runs` takes
        (``log_every``, ``test_data``, ``progress``, ``history``, ``on_chunk``);
        ``resume(fresh_state) -> (state, history)`` restores a checkpoint.

    Returns:
      ``(grid rows, per-run histories)``.
    """
    runs_grid = grid(config)
    build, hyper = builder(config, make, learning_rate, runs_grid)
    runner = runs.RunsRunner(build, sampler, agent_mesh, evaluate, hyper, len(runs_grid))
    keys = [run_keys(row["seed"]) for row in runs_grid]
    stacked = [jax.numpy.stack([getattr(k, f) for k in keys]) for f in ("model", "state", "train")]
    data, num_epochs = kwargs.pop("data"), kwargs.pop("num_epochs")
    state = runner.init(runs.runs_init(init, agent_mesh, n_agents)(stacked[0]), data, stacked[1])
    resume = kwargs.pop("resume", None)
    if resume is not None:
        state, kwargs["history"] = resume(state)
    _, histories, _ = runs.train_runs(runner, state, data, stacked[2], num_epochs, **kwargs)
    return runs_grid, histories


def bands(runs_grid, histories) -> dict[float | None, list[dict[str, float]]]:
    """Per step size (``None`` when not swept): per-epoch mean and std over seeds.

    Every row holds ``epoch``, ``seeds`` and, for every metric ``k`` of the runs,
    ``k`` (the mean over seeds) and ``k_std`` (the population standard deviation).
    """
    groups: dict[float | None, list[list[dict[str, float]]]] = {}
    for row, history in zip(runs_grid, histories, strict=True):
        groups.setdefault(row.get("learning_rate"), []).append(history)
    out = {}
    for step, group in groups.items():
        rows = []
        for epoch_rows in zip(*group, strict=True):
            band = {"epoch": epoch_rows[0]["epoch"], "seeds": len(group)}
            for key in epoch_rows[0]:
                if key != "epoch":
                    values = np.array([r[key] for r in epoch_rows])
                    band[key], band[f"{key}_std"] = float(values.mean()), float(values.std())
            rows.append(band)
        out[step] = rows
    return out


def best(method_bands: dict[float | None, list[dict[str, float]]], metric: str):
    """``(step size, band)`` with the best final mean ``metric``: the lowest error, or the
    highest ``*accuracy*``; NaN ranks last."""
    sign = -1.0 if "accuracy" in metric else 1.0
    return min(
        method_bands.items(),
        key=lambda item: (not math.isfinite(item[1][-1][metric]), sign * item[1][-1][metric]),
    )


def record(logs, labels: dict[str, str], runs_grid, histories, metric: str):
    """Writes a method's runs and bands; returns its best band and a summary line.

    Args:
      logs: ``(metrics file, bands file)``, open for writing: every run's rows (with
        its ``run``, ``seed`` and ``learning_rate``) go to the first, the bands (mean
        and ``_std`` over seeds per step size and epoch) to the second.
      labels: ``{"topology": ..., "algorithm": ...}`` put on every row.
      runs_grid: :func:`grid`'s rows.
      histories: the runs' histories.
      metric: what picks the best step size.

    Returns:
      ``(band, line)``: the best step size's band (its mean rows, what the summary table
      and the plots show) and ``"<method>: <metric> mean +- std over S seeds"`` with the
      best step size of the sweep.
    """
    metrics_log, bands_log = logs
    for row, history in zip(runs_grid, histories, strict=True):
        for epoch_row in history:
            metrics_log.write(json.dumps({**labels, **row, **epoch_row}) + "\n")
    method_bands = bands(runs_grid, histories)
    for step, band in method_bands.items():
        extra = {} if step is None else {"learning_rate": step}
        for band_row in band:
            bands_log.write(json.dumps({**labels, **extra, **band_row}) + "\n")
    step, band = best(method_bands, metric)
    last = band[-1]
    line = (
        f"{labels['topology']}/{labels['algorithm']}: {metric} {last[metric]:.4e} "
        f"+- {last[metric + '_std']:.2e} over {last['seeds']} seed(s)"
    )
    if step is not None:
        line += f", best learning_rate {step:g} of {sorted(method_bands)}"
    return band, line
