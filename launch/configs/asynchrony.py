r"""Asynchrony: AD-PSGD vs DSGD and asynchronous push-sum vs push-sum under stragglers.

Commands (a minute or two each on a 2-core CPU)::

  python -m decentjax.launch.main --config=launch/configs/asynchrony.py:adpsgd,s30 \
      --workdir=/tmp/async_adpsgd_s30
  python -m decentjax.launch.main --config=launch/configs/asynchrony.py:push,s30 \
      --workdir=/tmp/async_push_s30

(``s0``, ``s10``, ``s30``: 0%, 10% or 30% of the agents are stragglers, 10x slower.)

Setting: the embedded digits (0-4 vs 5-9, unit norm plus bias, d = 65), label-sorted
over 16 agents, l2 logistic regression (mu = 0.2), i.i.d. minibatches of 8 (14 steps
per epoch), constant step 0.05, float64, 80 epochs (1120 steps). The execution model
(:mod:`core.asynchrony`): a fraction of the agents, drawn with seed 0, need 10 ticks
per local step on average (Bernoulli wake-ups with p = 0.1 per tick), the others one;
messages of asynchronous push-sum are delayed by 0..2 ticks. Asynchronous methods take
one tick per step; synchronous ones (DSGD, push-sum) wait each round for the slowest
agent (:func:`core.asynchrony.synchronous`: max over agents of Geometric(p_i) ticks),
so all report ``sim_time`` and are plotted against simulated time
(``*_vs_sim_time.png``) beside epochs (steps) and bytes. Every method runs the same
number of steps.

* ``adpsgd``: DSGD (Metropolis weights) against AD-PSGD (Lian et al., ICML 2018,
  arXiv 1710.06952; one random matching of the graph per tick) on the exponential
  graph (Metropolis weights for DSGD; on the ring, spectral gap 0.05, both end
  above the target: the label-sorted split's consensus error, 0.12 for DSGD).
* ``push``: push-sum / SGP against asynchronous push-sum (Assran & Rabbat, arXiv
  1803.08950) on the directed exponential graph, column-stochastic weights.

Metric: (1/n) sum_i ||x_i - x*||^2; ``T@target`` in the summary is the simulated time
until it first falls to 2e-2.

Results (``launch/results/asynchrony_*/``, one run each on a 2-core CPU): without
stragglers DSGD and push-sum reach 2e-2 at 196 ticks, AD-PSGD at 224 (one matching per
tick mixes less than W) and asynchronous push-sum at 196 (delays of 0..2 ticks cost
nothing here). With 10% / 30% stragglers a synchronous round lasts 14.9 / 22.3 ticks on
average and DSGD and push-sum need 3244 / 4488 ticks, while AD-PSGD needs 602 / 378
(5.4x / 11.9x sooner) and asynchronous push-sum 588 / 728 (5.5x / 6.2x). The
asynchronous methods win in wall-clock to this target but level off 30-70x higher
(1.3e-2 to 3.2e-2 after 1120 steps against 4.5e-4, accuracy at x_bar 0.50 against
0.83): an agent that wakes at rate p_i applies its gradient p_i times as often, so the
fixed point minimises sum_i p_i f_i, which under-weights the stragglers' labels on this
label-sorted split.

Arguments (comma separated): ``adpsgd`` (default) or ``push``; ``s0``, ``s10`` or
``s30`` (default); ``runlocal`` (3 epochs).
"""

import ml_collections

from decentjax.launch.configs import rr_logistic

STRAGGLERS = {"s0": 0.0, "s10": 0.1, "s30": 0.3}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; see the module docstring for ``arg``."""
    args = set(arg.split(",")) if arg else set()
    unknown = args - {"adpsgd", "push", "runlocal", *STRAGGLERS}
    experiments = args & {"adpsgd", "push"} or {"adpsgd"}
    levels = args & set(STRAGGLERS) or {"s30"}
    if unknown or len(experiments) > 1 or len(levels) > 1:
        raise ValueError(
            f"config argument {arg!r}: give one of adpsgd, push and one of "
            f"{sorted(STRAGGLERS)} (+ ,runlocal)."
        )
    (experiment,), (level,) = experiments, levels
    config = rr_logistic.get_config()
    config.data = config.data.fallback  # Embedded digits.
    config.data.partition = "label_sorted"
    config.objective.reg = 0.2
    config.batch_size = 8
    config.step = ml_collections.ConfigDict({"schedule": "constant", "constant": 0.05})
    config.asynchrony = ml_collections.ConfigDict(
        {
            "straggler_fraction": STRAGGLERS[level],
            "straggler_slowdown": 10.0,
            "straggler_seed": 0,
            "max_delay": 2,
        }
    )
    if experiment == "adpsgd":
        config.topologies = ("exponential",)
        config.weights = "metropolis"
        config.algorithms = ("dsgd", "ad_psgd")
        config.async_sampler = "iid"
    else:
        config.directed = True
        config.directed_sampler = "iid"
        config.topologies = ("directed_exponential",)
        config.weights = "row_and_column_stochastic"
        config.algorithms = ("push_sum", "async_push_sum")
    config.plot_metric = "dist_to_opt"
    config.target_error = 2e-2
    # (epochs, epochs per compiled chunk); runlocal: a few seconds of steps.
    config.num_epochs, config.log_every = (3, 1) if "runlocal" in args else (80, 10)
    return config
