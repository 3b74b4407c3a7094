r"""Seeds and step-size sweeps from a config, run as one compiled program per method.

``--config.seeds=S`` runs the seeds ``config.seed .. config.seed + S - 1``;
``--config.sweep.learning_rate="(v1, v2, ...)"`` runs every step size ``v`` for every
seed, and ``--config.sweep.consensus_step="(g1, ...)"`` every consensus step of the
compressed methods (``"<method>@<compressor>"``; the others run without it). The
``R = S x L x G`` runs of a method are one :class:`core.runs.RunsRunner`: one
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
* A swept consensus step replaces ``compressors[<key>].consensus_step`` of the method's
  compressor, as a traced per-run value (its range is checked here, on the host).

:func:`bands` turns the runs into per-epoch mean and standard deviation over seeds
for every setting, and :func:`best` picks each method's setting.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import jax
import ml_collections
import numpy as np

from decentjax.core import runs, schedules

SCALE_FIELD = {"constant": "constant", "inverse_epoch": "a", "piecewise": "levels"}
"""The field of ``config.step`` a swept learning rate replaces, per schedule."""


def _seeds(config: ml_collections.ConfigDict) -> int:
    return config.get("seeds", 1)


SWEPT = ("learning_rate", "consensus_step")
"""The hyperparameters ``config.sweep`` can hold."""


def _swept(config: ml_collections.ConfigDict, key: str) -> tuple[float, ...]:
    return tuple(config.get("sweep", {}).get(key, ()) or ())


def _compressed(config: ml_collections.ConfigDict, name: str) -> bool:
    return "@" in name and not config.get("directed")


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.seeds`` and ``config.sweep`` before any data is loaded.

    Raises:
      ValueError: for a seed count that is not a positive int, a step size that is not a
        positive finite number, a consensus step outside (0, 1] or with no compressed
        method to apply to, an unknown sweep key or a step schedule it cannot scale.
    """
    seeds = _seeds(config)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"config.seeds must be a positive int, got {seeds!r}.")
    unknown = sorted(set(config.get("sweep", {}).keys()) - set(SWEPT))
    if unknown:
        raise ValueError(f"config.sweep has unknown keys {unknown}; valid: {list(SWEPT)}.")
    for key, upper in (("learning_rate", math.inf), ("consensus_step", 1.0)):
        values = _swept(config, key)
        bad = [v for v in values if not (isinstance(v, int | float) and 0 < v <= upper)]
        if bad:
            what = "positive finite step sizes" if key == "learning_rate" else "steps in (0, 1]"
            raise ValueError(f"config.sweep.{key} must hold {what}, got {bad} in {values}.")
    if _swept(config, "learning_rate") and config.step.schedule not in SCALE_FIELD:
        raise ValueError(
            f"config.sweep.learning_rate scales the step schedule, and schedules "
            f"{sorted(SCALE_FIELD)} can be scaled; got {config.step.schedule!r}."
        )
    if _swept(config, "consensus_step") and not any(
        _compressed(config, name) for name in config.algorithms
    ):
        raise ValueError(
            "config.sweep.consensus_step applies to compressed methods of undirected graphs "
            f"('<method>@<compressor>'); config.algorithms {tuple(config.algorithms)} has none."
        )


def _values(config: ml_collections.ConfigDict, name: str) -> dict[str, tuple]:
    """The swept values that apply to method ``name`` (``(None,)``: not swept)."""
    out = {"learning_rate": _swept(config, "learning_rate") or (None,)}
    out["consensus_step"] = (
        _swept(config, "consensus_step") if _compressed(config, name) else ()
    ) or (None,)
    return out


def num_runs(config: ml_collections.ConfigDict, name: str | None = None) -> int:
    """``R`` of method ``name`` (of the largest grid without a name); 1: an ordinary run."""
    names = [name] if name is not None else list(config.algorithms) or [""]
    return max(_seeds(config) * math.prod(map(len, _values(config, n).values())) for n in names)


def grid(config: ml_collections.ConfigDict, name: str = "") -> list[dict[str, Any]]:
    """Method ``name``'s runs in runs-axis order: ``{"run", "seed"}`` and the swept values."""
    seeds = [config.seed + s for s in range(_seeds(config))]
    values = _values(config, name)
    out = []
    for step in values["learning_rate"]:
        for gamma in values["consensus_step"]:
            for seed in seeds:
                row = {"run": len(out), "seed": seed}
                if step is not None:
                    row["learning_rate"] = float(step)
                if gamma is not None:
                    row["consensus_step"] = float(gamma)
                out.append(row)
    return out


def _scale(config: ml_collections.ConfigDict) -> float:
    value = config.step[SCALE_FIELD[config.step.schedule]]
    return float(value[0] if config.step.schedule == "piecewise" else value)


def _with_consensus_step(config: ml_collections.ConfigDict, name: str, gamma: Any):
    """A copy of ``config`` whose compressor of ``name`` has consensus step ``gamma``."""
    key = name.partition("@")[2]
    out = copy.deepcopy(config)
    spec = {**config.compressors[key].to_dict(), "consensus_step": gamma}
    out.compressors[key] = ml_collections.ConfigDict(spec, type_safe=False)  # gamma is traced
    return out


def builder(config, name, make, learning_rate, runs_grid):
    """``(build, hyper)`` for :class:`core.runs.RunsRunner`.

    Args:
      config: the experiment config.
      name: the method's config name.
      make: ``(config, learning_rate) -> Algorithm`` (the method with all else fixed).
      learning_rate: the configured step (a float or optax schedule).
      runs_grid: :func:`grid`'s rows.
    """
    hyper = {}
    if "learning_rate" in runs_grid[0]:
        scale = _scale(config)
        hyper["lr_scale"] = np.array([row["learning_rate"] / scale for row in runs_grid])
    if "consensus_step" in runs_grid[0]:
        hyper["consensus_step"] = np.array([row["consensus_step"] for row in runs_grid])

    def build(values):
        cfg, rate = config, learning_rate
        if "lr_scale" in values:
            rate = schedules.scaled(learning_rate, values["lr_scale"])
        if "consensus_step" in values:
            cfg = _with_consensus_step(config, name, values["consensus_step"])
        return make(cfg, rate)

    return build, hyper


def train_method(
    config, name, make, learning_rate, sampler, agent_mesh, evaluate, init, n_agents, run_keys,
    **kwargs,
):  # fmt: skip
    """Runs every run of one method in one program.

    Args:
      config: the experiment config.
      name: the method's config name.
      make: ``(config, learning_rate) -> Algorithm``.
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
    runs_grid = grid(config, name)
    build, hyper = builder(config, name, make, learning_rate, runs_grid)
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


def _setting(row: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    return tuple((k, row[k]) for k in SWEPT if k in row)


def bands(runs_grid, histories) -> dict[tuple, list[dict[str, float]]]:
    """Per setting (a tuple of ``(name, value)`` of the swept values; ``()`` when none
    is swept): per-epoch mean and std over seeds.

    Every row holds ``epoch``, ``seeds`` and, for every metric ``k`` of the runs,
    ``k`` (the mean over seeds) and ``k_std`` (the population standard deviation).
    """
    groups: dict[tuple, list[list[dict[str, float]]]] = {}
    for row, history in zip(runs_grid, histories, strict=True):
        groups.setdefault(_setting(row), []).append(history)
    out = {}
    for setting, group in groups.items():
        rows = []
        for epoch_rows in zip(*group, strict=True):
            band = {"epoch": epoch_rows[0]["epoch"], "seeds": len(group)}
            for key in epoch_rows[0]:
                if key != "epoch":
                    values = np.array([r[key] for r in epoch_rows])
                    band[key], band[f"{key}_std"] = float(values.mean()), float(values.std())
            rows.append(band)
        out[setting] = rows
    return out


def best(method_bands: dict[tuple, list[dict[str, float]]], metric: str):
    """``(setting, band)`` with the best final mean ``metric``: the lowest error, or the
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
      metric: what picks the best setting.

    Returns:
      ``(band, line)``: the best setting's band (its mean rows, what the summary table
      and the plots show) and ``"<method>: <metric> mean +- std over S seeds"`` with the
      best setting of the sweep.
    """
    metrics_log, bands_log = logs
    for row, history in zip(runs_grid, histories, strict=True):
        for epoch_row in history:
            metrics_log.write(json.dumps({**labels, **row, **epoch_row}) + "\n")
    method_bands = bands(runs_grid, histories)
    for setting, band in method_bands.items():
        for band_row in band:
            bands_log.write(json.dumps({**labels, **dict(setting), **band_row}) + "\n")
    setting, band = best(method_bands, metric)
    last = band[-1]
    line = (
        f"{labels['topology']}/{labels['algorithm']}: {metric} {last[metric]:.4e} "
        f"+- {last[metric + '_std']:.2e} over {last['seeds']} seed(s)"
    )
    if setting:
        chosen = ", ".join(f"{k} {v:g}" for k, v in setting)
        line += f"; best of {len(method_bands)} settings: {chosen}"
    return band, line
