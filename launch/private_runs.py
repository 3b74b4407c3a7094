"""Configs' differentially private runs: ``"dp_<method>@<key>"`` names and their budget.

A config names a private run ``"dp_dsgd@s4"``: the method ``dsgd`` (any name of
:data:`launch.method_tables.ALGORITHMS` or ``FEDERATED_ALGORITHMS``) with DP-SGD local
steps (:func:`algos.private`), its noise multiplier ``config.privacy.noise_multipliers
["s4"]`` and clipping norm ``config.privacy.clip_norm``, sampled with
:func:`core.sampling.without_replacement`. After the run every history row gets
``epsilon``, the budget of each agent's data at ``config.privacy.delta`` after the
local steps taken so far (:func:`core.privacy.epsilon`), so it lands in
``metrics.jsonl`` and the summary; :func:`plot` draws final accuracy against it.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from decentjax.core import privacy
from decentjax.core.sampling import Sampler

PREFIX = "dp_"
SAMPLER = "without_replacement"
# RDP orders for the per-epoch budgets: the accountant's default set costs about 1 s per
# call, this one about 0.3 s; fewer orders can only raise epsilon (it is a minimum over
# orders): on the committed runs by under 1% (1.78 against 1.77 at sigma = 16).
ORDERS = (1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 48, 64)
ORDERS += (128, 256)


def is_private(name: str) -> bool:
    """Whether a config's algorithm name is a private run (``"dp_<method>@<key>"``)."""
    return name.startswith(PREFIX)


def parse(config: ml_collections.ConfigDict, name: str) -> tuple[str, float]:
    """``(base method name, noise multiplier)`` of a private run's name.

    Raises:
      ValueError: if the config has no ``privacy`` section or the name's key is not
        one of ``config.privacy.noise_multipliers``.
    """
    method, _, key = name[len(PREFIX) :].partition("@")
    section = config.get("privacy")
    if not section:
        raise ValueError(f"algorithm {name!r} needs a config.privacy section.")
    table = dict(section.noise_multipliers)
    if key not in table:
        raise ValueError(
            f"algorithm {name!r}: name its noise multiplier as dp_<method>@<key> with <key> "
            f"one of config.privacy.noise_multipliers {sorted(table)}, got {key!r}."
        )
    return method, float(table[key])


def validate(config: ml_collections.ConfigDict, name: str, stateful_model: bool) -> str:
    """Checks a private run's name and config; returns its base method's name.

    Raises:
      ValueError: as :func:`parse`, or for a model with state or a keyed loss (NNX
        networks of ``launch.model_tasks``), whose loss DP-SGD does not wrap.
    """
    method, _ = parse(config, name)
    if stateful_model:
        raise ValueError(
            f"algorithm {name!r}: DP-SGD runs need a loss without model state or key "
            f"(linear, mlp, cnn), not config.model.name={config.model.name!r}."
        )
    return method


def budget(config: ml_collections.ConfigDict, sigma: float, sampler: Sampler, steps: int):
    """Epsilon of one agent's data after ``steps`` DP-SGD steps of this config."""
    return privacy.epsilon(
        sigma, sampler, steps, config.privacy.delta, orders=config.privacy.get("orders", ORDERS)
    )


def annotate(
    config: ml_collections.ConfigDict, name: str, sampler: Sampler, history: list[dict]
) -> None:
    """Adds ``epsilon`` to every row of a private run's history (in place)."""
    if not is_private(name):
        return
    _, sigma = parse(config, name)
    for row in history:
        row["epsilon"] = budget(config, sigma, sampler, int(row["epoch"]) * sampler.steps_per_epoch)


def summary_lines(rows: list[dict[str, Any]], delta: float) -> str:
    """The budget of each private run, one line each, for the summary table."""
    lines = [
        f"{r['topology']}/{r['algorithm']}: epsilon = {r['epsilon']:.3g} at delta = {delta:g}"
        for r in rows
        if "epsilon" in r
    ]
    return ("\nprivacy (RDP accountant, dp-accounting):\n" + "\n".join(lines)) if lines else ""


def plot(rows: list[dict[str, Any]], path: Any, metric: str = "test_accuracy") -> None:
    """Final ``metric`` against epsilon, one line per base method; plain runs dashed."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    private_rows: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if "epsilon" in r and math.isfinite(r["epsilon"]):
            base = r["algorithm"][len(PREFIX) :].partition("@")[0]
            private_rows.setdefault(base, []).append((r["epsilon"], r.get(metric, math.nan)))
    for i, (base, points) in enumerate(sorted(private_rows.items())):
        points.sort()
        ax.plot(*zip(*points, strict=True), marker="o", color=f"C{i}", label=f"DP {base}")
        for r in rows:
            if r["algorithm"] == base:
                ax.axhline(r.get(metric, math.nan), color=f"C{i}", ls="--", label=f"{base} (no DP)")
    ax.set_xscale("log")
    ticks = sorted({eps for points in private_rows.values() for eps, _ in points})
    ax.set_xticks(ticks, [f"{eps:.3g}" for eps in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("epsilon (per agent's data)")
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
