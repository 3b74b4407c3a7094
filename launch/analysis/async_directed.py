r"""Runs ``launch/configs/directed_async.py``: async B-CPP vs CPP vs Push-Pull over time.

Every method runs for the same simulated time; a synchronous round lasts the slowest
agent's compute time, an asynchronous tick ``wake_prob * tau_min``
(``core.asynchrony.async_model(n, compute_time=tau, tick=wake_prob * tau_min)``).
Writes to ``--workdir``:
``summary.txt``, ``setup.txt``, ``dist_to_opt_vs_sim_time.png`` and
``dist_to_opt_vs_bytes.png`` (one panel per straggler setting).
"""

from __future__ import annotations

import argparse
import importlib.util

import jax
import ml_collections
import numpy as np
from etils import epath

from decentjax import algos
from decentjax.core import asynchrony, comm, compression, directed, loop, mesh, metrics, sampling
from decentjax.launch import plotting
from decentjax.models import objectives

LS = objectives.least_squares()


def problem(config: ml_collections.ConfigDict) -> tuple[dict, np.ndarray, np.ndarray, float]:
    """Heterogeneous least squares: ``(data, x*, x0, L)``, each agent its own model."""
    rng = np.random.default_rng(config.seed)
    n, m, d = config.n_agents, config.samples, config.dim
    x = rng.normal(size=(n, m, d))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(n, d)) * 2.0) + rng.normal(size=(n, m))
    a, b = x.reshape(-1, d), y.reshape(-1)
    x_star = np.linalg.solve(a.T @ a, a.T @ b)
    lipschitz = max(objectives.smoothness_least_squares(xi) for xi in x)
    dtype = np.dtype(config.dtype)
    data = {"x": x.astype(dtype), "y": y.astype(dtype)}
    return data, x_star.astype(dtype), np.zeros((n, d), dtype), lipschitz


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every method under every straggler setting; writes results to ``workdir``."""
    with jax.enable_x64(config.dtype == "float64"):
        return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    data, x_star, x0, lipschitz = problem(config)
    n = config.n_agents
    graph = directed.unbalanced_example(n)
    pull = comm.gossip(directed.row_stochastic(graph), doubly_stochastic=False)
    push = comm.gossip(directed.column_stochastic(graph), doubly_stochastic=False)
    qsgd = compression.qsgd(config.qsgd_levels)
    lr = config.step_times_inverse_l / lipschitz
    agent_mesh = mesh.make_agent_mesh(n, 1)
    evaluate = metrics.make_evaluator(
        LS.loss, comm.gossip(np.eye(n), doubly_stochastic=False), x_star=x_star
    )
    sharded = mesh.shard_agents(data, agent_mesh)
    histories, rows = {}, []
    for fraction in config.straggler_fractions:
        tau = asynchrony.stragglers(n, fraction, config.straggler_slowdown, seed=config.seed)
        panel = (
            f"{fraction:.0%} stragglers {config.straggler_slowdown:g}x slower"
            if fraction
            else "no stragglers"
        )
        tick = config.wake_prob * float(tau.min())
        model = asynchrony.async_model(n, compute_time=tau, tick=tick)
        methods = {
            "push_pull": (algos.push_pull(LS.loss, pull, push, lr), tau.max()),
            f"cpp@qsgd{config.qsgd_levels}": (
                algos.cpp(LS.loss, pull, push, lr, compressor=qsgd),
                tau.max(),
            ),
            f"b_cpp_async@qsgd{config.qsgd_levels}": (
                algos.b_cpp_async(
                    LS.loss,
                    pull,
                    push,
                    model,
                    lr,
                    compressor=qsgd,
                ),
                tick,
            ),
        }
        if config.get("max_delay", 0):
            # The same wake-ups, messages delayed 0..max_delay ticks on in-order channels.
            delayed = asynchrony.async_model(
                n, compute_time=tau, tick=tick, max_delay=config.max_delay
            )
            methods[f"b_cpp_async@qsgd{config.qsgd_levels},delay{config.max_delay}"] = (
                algos.b_cpp_async(LS.loss, pull, push, delayed, lr, compressor=qsgd),
                tick,
            )
        for name, (algorithm, step_time) in methods.items():
            steps = int(round(config.sim_time / step_time))
            runner = loop.Runner(
                algorithm, sampling.full_batch(config.samples), agent_mesh, evaluate
            )
            state = runner.init(mesh.shard_agents(x0, agent_mesh), sharded, jax.random.key(0))
            _, history = loop.train(
                runner, state, sharded, jax.random.key(config.seed + 1), steps, log_every=steps
            )
            for row in history:
                row["sim_time"] = row["epoch"] * step_time
            histories[(panel, name)] = history
            reached = [r for r in history if r["dist_to_opt"] < config.target_error]
            rows.append(
                {
                    "setting": panel,
                    "method": name,
                    "steps": steps,
                    "final": history[-1]["dist_to_opt"],
                    "time": reached[0]["sim_time"] if reached else np.inf,
                    "mb": reached[0]["bytes_sent"] / 1e6 if reached else np.inf,
                    "mb_total": history[-1]["bytes_sent"] / 1e6,
                }
            )
    out = epath.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"{'setting':32s}{'method':26s}{'steps':>7s}{'final error':>13s}"
        f"{'time@target':>13s}{'MB@target':>11s}{'MB total':>10s}"
    )
    lines = [header] + [
        f"{r['setting']:32s}{r['method']:26s}{r['steps']:7d}{r['final']:13.4e}"
        f"{r['time']:13.1f}{r['mb']:11.4f}{r['mb_total']:10.4f}"
        for r in rows
    ]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    (out / "setup.txt").write_text(config.to_json_best_effort(indent=2) + "\n")
    title = f"unbalanced digraph, n={n}, least squares; target {config.target_error:g}"
    for x, suffix in (("sim_time", "sim_time"), ("bytes_sent", "bytes")):
        plotting.plot_histories(
            histories, "dist_to_opt", out / f"dist_to_opt_vs_{suffix}.png", x=x, title=title
        )
    print("\n".join(lines))
    return {"histories": histories, "summary": rows}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--config=PATH[:runlocal] --workdir=DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="launch/configs/directed_async.py")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    path, _, arg = args.config.partition(":")
    spec = importlib.util.spec_from_file_location("directed_async_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run(module.get_config(arg or None), args.workdir)


if __name__ == "__main__":
    main()
