"""Benchmark: one D-RR epoch on the quickstart problem, decentjax against NumPy.

Command::

  python -m launch.bench_drr [--epochs 20] [--devices 1]

Runs D-RR (16 agents, the quickstart's label-sorted digits, d = 65, m = 112, batch
1, lazy Metropolis exponential graph) three ways in one process and prints the
time per inner step (one component gradient per agent plus one gossip):

* ``decentjax``: ``core.loop.Runner`` (the whole run one compiled program; the
  per-epoch metrics are switched off so only the method is timed), after a
  warm-up call that compiles it;
* ``numpy-loop``: a plain Python loop over agents in NumPy, each agent's gradient
  computed on its own, then ``X = W (X - alpha G)`` with a dense ``W``;
* ``numpy-stacked``: the authors' style, gradients of all agents in one
  vectorised NumPy expression.

It also checks that the three agree after one epoch (same permutations), so the
ratio compares equal work. Ratios are printed as ``numpy time / decentjax time``.
"""

from __future__ import annotations

import argparse
import os
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs timed for decentjax")
    parser.add_argument("--numpy-epochs", type=int, default=2, help="epochs timed for NumPy")
    parser.add_argument("--devices", type=int, default=1, help="(fake CPU) devices to use")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    if args.devices > 1:
        os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(args.devices))
    import jax
    import numpy as np

    from algos import d_rr
    from core import loop, mesh, sampling
    from launch import experiment
    from launch.configs import quickstart

    config = quickstart.get_config()
    data, description = experiment.load_data(config)
    parts = experiment.split_over_agents(config, data)
    x_all = parts["x"].astype(np.float32)
    y_all = parts["y"]
    n, m, d = x_all.shape
    op, _ = experiment.mixing_operator(config, "exponential")
    w = op.matrix.astype(np.float32)
    obj = experiment.objective(config)
    alpha, reg = 0.01, float(config.objective.reg)

    # decentjax.
    agent_mesh = mesh.make_agent_mesh(n, args.devices)
    shard = mesh.shard_agents({"x": x_all, "y": y_all}, agent_mesh)
    sampler = sampling.reshuffle(m)
    runner = loop.Runner(
        d_rr(obj.loss, op, alpha), sampler, agent_mesh, lambda params, data, test: {}
    )
    x0 = np.zeros((n, d), np.float32)
    key = jax.random.key(0)

    def fresh_state():
        return runner.init(mesh.shard_agents(x0, agent_mesh), shard, key)

    state, _ = runner.run_epochs(fresh_state(), shard, key, 0, args.epochs)  # Compile.
    jax.block_until_ready(state)
    state = fresh_state()
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, _ = runner.run_epochs(state, shard, key, 0, args.epochs)
    jax.block_until_ready(state)
    jax_step = (time.perf_counter() - start) / (args.epochs * m)

    # The permutations decentjax drew in epoch 0, so NumPy does the same work.
    epoch_key = jax.random.fold_in(key, 0)
    agent_keys = [jax.random.fold_in(jax.random.fold_in(epoch_key, 0), i) for i in range(n)]
    perms = np.stack([np.asarray(sampler.indices(k))[:, 0] for k in agent_keys])  # (n, m)
    one_epoch, _ = runner.run_epochs(fresh_state(), shard, key, 0, 1)
    want = np.asarray(jax.device_get(one_epoch.params))

    def grad(xi, a, y):
        s = 2.0 * y - 1.0
        z = -s * (a @ xi)
        return (-s / (1.0 + np.exp(-z))) * a + reg * xi

    def numpy_loop(epochs):
        x = x0.copy()
        for _ in range(epochs):
            for step in range(m):
                g = np.empty_like(x)
                for i in range(n):  # The per-agent Python loop of typical research code.
                    j = perms[i, step]
                    g[i] = grad(x[i], x_all[i, j], y_all[i, j])
                x = w @ (x - alpha * g)
        return x

    def numpy_stacked(epochs):
        x = x0.copy()
        rows = np.arange(n)
        for _ in range(epochs):
            for step in range(m):
                a = x_all[rows, perms[:, step]]
                s = 2.0 * y_all[rows, perms[:, step]] - 1.0
                z = -s * np.einsum("nd,nd->n", a, x)
                g = (-s / (1.0 + np.exp(-z)))[:, None] * a + reg * x
                x = w @ (x - alpha * g)
        return x

    results = {}
    for name, fn in [("numpy-loop", numpy_loop), ("numpy-stacked", numpy_stacked)]:
        err = float(np.max(np.abs(fn(1) - want)))
        start = time.perf_counter()
        fn(args.numpy_epochs)
        results[name] = ((time.perf_counter() - start) / (args.numpy_epochs * m), err)

    print(f"D-RR, {description}, {n} agents x {m} samples, d = {d}, batch 1, exponential graph")
    print(f"devices: {args.devices} x {jax.devices()[0].platform}, gossip path {op.path}")
    print(f"{'implementation':<16}{'us / step':>12}{'ms / epoch':>12}{'ratio':>10}{'max diff':>12}")
    print(f"{'decentjax':<16}{jax_step * 1e6:>12.1f}{jax_step * m * 1e3:>12.2f}{1.0:>10.1f}")
    for name, (t, err) in results.items():
        print(f"{name:<16}{t * 1e6:>12.1f}{t * m * 1e3:>12.2f}{t / jax_step:>10.1f}{err:>12.2e}")


if __name__ == "__main__":
    main()
