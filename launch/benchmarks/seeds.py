"""Comparison 7: S = 8 seeds in one compiled program against 8 sequential runs.

Command::

  python -m decentjax.launch.benchmarks --only seeds [--reps 5]

D-RR on l2 logistic regression (the quickstart's shape: 16 agents, 112 samples each,
d = 65, batch 1, exponential graph) run for 8 seeds, two ways:

* **one program**: :class:`core.runs.RunsRunner`, the 8 runs as a leading runs axis
  vmapped inside one ``jit(shard_map(scan))``, every run with its own ``x0`` and sample
  orders (what ``--config.seeds=8`` runs);
* **sequential**: 8 runs of :class:`core.loop.Runner` one after the other, each with its
  own compilation, as a shell loop over seeds (one process per seed) does.

Two ratios, sequential / one program (higher is better): with compilation included
(``8 (c_1 + t_1) / (c_8 + t_8)``, the wall time of the whole sweep) and excluded
(``8 t_1 / t_8``, the steps alone). Compile times ``c`` are the ahead-of-time compile
seconds (:meth:`core.loop.Runner.compile_epochs`); run times ``t`` the median of
``--reps`` chunks from a fresh state. Every metric evaluation is on (as in a real run).
"""

from __future__ import annotations

import jax
import numpy as np

from decentjax import algos
from decentjax.core import comm, loop, mesh, metrics, runs, sampling
from decentjax.launch.benchmarks import report, timing, workloads
from decentjax.models import objectives

TITLE = "Seeds in one program: 8 seeds vmapped in one jit(shard_map(scan)) vs 8 sequential runs"
SEEDS = 8


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(n=4, m=8, d=5, epochs=2)
    return dict(n=16, m=112, d=65, epochs=20)


def run(settings: report.Settings) -> report.Result:
    """Times one program of 8 seeds against one run, compile and steps apart."""
    s = _sizes(settings.quick)
    n, epochs = s["n"], s["epochs"]
    data = workloads.logistic_data(n, s["m"], s["d"])
    obj = objectives.logistic_regression(reg=0.2)
    op = comm.gossip(workloads.mixing_matrix("exponential", n, lazy=True))
    agent_mesh = mesh.make_agent_mesh(n, settings.devices)
    shard = mesh.shard_agents(data, agent_mesh)
    evaluate = metrics.make_evaluator(obj.loss, op)
    sampler = sampling.reshuffle(s["m"])
    make = lambda: algos.d_rr(obj.loss, op, 0.01)  # noqa: E731 - a fresh build per run
    x0 = lambda key: jax.random.normal(key, (s["d"],)) / np.sqrt(s["d"])  # noqa: E731
    seed_keys = jax.random.split(jax.random.key(0), SEEDS)

    runner_1 = loop.Runner(make(), sampler, agent_mesh, evaluate)
    init_1 = mesh.agent_init(x0, agent_mesh, n)

    def fresh_1():
        return runner_1.init(init_1(seed_keys[0]), shard, seed_keys[0])

    runner_s = runs.RunsRunner(lambda h: make(), sampler, agent_mesh, evaluate, {}, SEEDS)
    init_s = runs.runs_init(x0, agent_mesh, n)

    def fresh_s():
        return runner_s.init(init_s(seed_keys), shard, seed_keys)

    cases = {
        "one run": (runner_1, fresh_1, seed_keys[0]),
        f"{SEEDS} seeds": (runner_s, fresh_s, seed_keys),
    }
    timers, entries = [], []
    for label, (runner, fresh, keys) in cases.items():
        compile_s = runner.compile_epochs(fresh(), shard, keys, epochs)

        def one_chunk(runner=runner, fresh=fresh, keys=keys):
            state = jax.block_until_ready(fresh())  # donated by the timed call
            [seconds] = timing.time_calls(
                lambda: jax.block_until_ready(runner.run_epochs(state, shard, keys, 0, epochs)), 1
            )
            return seconds

        timers.append(one_chunk)
        entries.append({"case": label, "compile_s": compile_s, "run_s_all": []})
    for _ in range(settings.reps):  # interleaved: both sides see the same load
        for entry, one_chunk in zip(entries, timers, strict=True):
            entry["run_s_all"].append(one_chunk())
    one, many = entries
    for entry in entries:
        entry["run_s"] = timing.median(entry["run_s_all"])
    result = report.Result("seeds", TITLE, measurements=entries)
    sequential_total = SEEDS * (one["compile_s"] + one["run_s"])
    together_total = many["compile_s"] + many["run_s"]
    result.rows.append(
        report.Row(
            f"{SEEDS} seeds, compile included",
            together_total / SEEDS,
            sequential_total / SEEDS,
            "s/run",
            sequential_total / together_total,
            note="sequential / one program",
        )
    )
    result.rows.append(
        report.Row(
            f"{SEEDS} seeds, steps only",
            many["run_s"] / SEEDS,
            one["run_s"],
            "s/run",
            SEEDS * one["run_s"] / many["run_s"],
            note="sequential / one program",
        )
    )
    result.notes.append(
        f"D-RR, {n} agents x {s['m']} samples, d = {s['d']}, batch 1, {epochs} epochs per "
        f"chunk with metrics every epoch, {settings.reps} reps; compile s: one run "
        f"{one['compile_s']:.2f}, {SEEDS} seeds {many['compile_s']:.2f}."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Bars: the wall time of the whole sweep of 8 seeds, compile and steps stacked."""
    one, many = result.measurements
    fig, (ax,) = report.figure(width=6.5, height=3.2)
    labels = [f"{SEEDS} sequential runs", "one program"]
    compile_s = [SEEDS * one["compile_s"], many["compile_s"]]
    run_s = [SEEDS * one["run_s"], many["run_s"]]
    ax.barh(labels, compile_s, color="tab:gray", label="compile")
    ax.barh(labels, run_s, left=compile_s, color="tab:blue", label="steps")
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds for {SEEDS} seeds")
    ax.set_title(f"{SEEDS} seeds: sequential runs vs one compiled program")
    ax.legend(loc="lower right")
    return [report.save(fig, out_dir, "seeds")]
