r"""Asynchronous B-CPP vs CPP vs Push-Pull on an unbalanced digraph, with stragglers.

Command (a few minutes on a 2-core CPU; ``,runlocal`` for a seconds-long smoke run)::

  python -m decentjax.launch.analysis.async_directed \
      --config=launch/configs/directed_async.py --workdir=launch/results/directed_async

Setting: heterogeneous least squares (16 agents, d = 10, 20 samples each, exact local
gradients) on ``core.directed.unbalanced_example(16)`` with R row-stochastic and C
column-stochastic weights; QSGD with 8 levels for CPP and B-CPP; step 0.2 / L for every
method. Compute times: every agent 1 time unit per gradient, or 10% / 30% of the agents
(drawn with ``seed``) 10x slower. Synchronous Push-Pull and CPP wait for the slowest
agent, so a round lasts max_i tau_i; asynchronous B-CPP (``algos.b_cpp_async`` with
``core.asynchrony.async_model(n, compute_time=tau, tick=wake_prob * tau_min)``,
``wake_prob`` 0.5) wakes agent i with probability 0.5 tau_min / tau_i per tick of 0.5
time units; a fourth run delays its messages by 0..``max_delay`` = 3 ticks (in-order
channels, :func:`core.async_links.in_order_arrival`). Every method runs for the same
simulated time ``sim_time``; metric (1/n) sum_i ||x_i - x*||^2 against simulated time
and against bytes sent per agent. ``summary.txt`` gives the error at the end and the
time and megabytes each method needed to reach ``target_error``. The B-CPP update form
is a reconstruction (ALGORITHMS.md §2.7, [RECON]).

Measured (one seed, float64, ``launch/results/directed_async/``), first time and
bytes per agent at which (1/n) sum_i ||x_i - x*||^2 < 1e-8:

* No stragglers: async B-CPP 233 time units, Push-Pull 266, CPP 293 (B-CPP 1.14x
  faster than Push-Pull); bytes 6.7 kB, CPP 8.3 kB, Push-Pull 42.5 kB (B-CPP 6.3x
  fewer than Push-Pull, 0.81x CPP's). Delays of up to 3 ticks slow B-CPP to 574.
* 10% stragglers 10x slower: async B-CPP 860 time units against Push-Pull's 2660 and
  CPP's 2930 (3.09x / 3.41x sooner; with delays of up to 3 ticks 1287, 2.07x over
  Push-Pull); bytes 22.0 kB against CPP's 8.3 kB and Push-Pull's 42.5 kB. (Synchronous
  rounds last max_i tau_i, so one straggler already costs them the full 10x.)
* 30% stragglers 10x slower: async B-CPP 1357 time units, Push-Pull 2660, CPP 2930:
  B-CPP wins in wall-clock by 1.96x over Push-Pull and 2.16x over CPP, because its
  fast agents keep computing while the synchronous rounds wait for the stragglers
  (with delays of up to 3 ticks still 1.48x over Push-Pull, at 1796). In bytes CPP
  wins (8.3 kB against B-CPP's 28.0 kB and Push-Pull's 42.5 kB): the fast agents'
  extra wake-ups send more messages per unit of progress.

All methods converge linearly to x* (errors 1e-20 to 1e-30 at the end); the compressed
methods' floors (1e-24 to 1e-26) are the rounding drift of the mixed references.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config; ``arg`` may be ``"runlocal"`` for a short run."""
    if arg not in (None, "", "runlocal"):
        raise ValueError(f"config argument {arg!r}: give nothing or runlocal.")
    config = ml_collections.ConfigDict()
    config.n_agents = 16
    config.dim = 10
    config.samples = 20
    config.seed = 0
    # float64: CPP keeps R H_x as its own sum, whose rounding drift raises the error floor
    # in float32 (measured: from 1e-8 back up to 5e-6 over 8000 time units).
    config.dtype = "float64"
    config.qsgd_levels = 8
    config.step_times_inverse_l = 0.2  # alpha = 0.2 / L, L the largest local smoothness.
    config.wake_prob = 0.5
    config.max_delay = 3  # A fourth method: async B-CPP with messages delayed 0..3 ticks.
    config.straggler_fractions = (0.0, 0.1, 0.3)
    config.straggler_slowdown = 10.0
    config.sim_time = 8000.0
    config.target_error = 1e-8
    if arg == "runlocal":
        config.sim_time = 40.0
    return config
