"""A representative subset run with float64 off, the library's default precision.

``conftest.py`` turns ``jax_enable_x64`` on for the whole suite (exactness checks
need float64), so without this module no test would run the float32 paths a user
gets by default: weak-typed Python scalars meeting float32 state under strict
promotion, int32 indices, float32 random draws, the float32 metrics. Every test
here runs inside ``jax.enable_x64(False)``.

What is checked, and why the tolerances are what they are:

* Gossip (shift and dense paths) equals ``W @ X`` in float64 to within the float32
  rounding of a sum of ``deg + 1`` terms: ``(deg + 1) * eps32`` relative to the
  magnitudes summed.
* Every method family, 8 devices, full gradients on a least-squares problem: its
  state stays float32 and finite, and after ``T`` steps it is within the float32
  rounding budget of the same run in float64. Each step applies a map that is
  Lipschitz with a constant ``c`` near 1 (step ``alpha <= 1/L``, a stochastic
  mixing matrix) and commits a relative rounding of at most ``k * eps32`` per
  entry, with ``k`` the longest sum a step forms (``d`` for a gradient, the
  agents for a mean); over ``T`` steps that gives ``T * k * eps32 * max|x|``
  times ``c^T``. We allow ``c^T <= 2`` (the measured errors stay below 10% of this budget).
* The quickstart, end to end, with x64 off: metrics are float32-finite and the
  float64 reference solve still runs (it enables x64 locally).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import (
    comm,
    compression,
    directed,
    loop,
    mesh,
    metrics,
    sampling,
    topology,
    weights,
)
from decentjax.core.time_varying import link_failures, time_varying
from decentjax.models import objectives

N, M, D = 8, 6, 5
EPS32 = float(np.finfo(np.float32).eps)
STEPS = 20


@pytest.fixture(autouse=True)
def _float32_default():
    with jax.enable_x64(False):
        assert jnp.asarray(1.0).dtype == jnp.float32  # The context really is in force.
        yield


def _problem():
    """Well-conditioned heterogeneous least squares; returns (parts, x0, L)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D))) + 0.1 * rng.normal(size=(N, M))
    local_l = max(np.linalg.eigvalsh(x[i].T @ x[i] / M)[-1] for i in range(N))
    x0 = np.broadcast_to(np.linspace(-1, 1, D), (N, D)).copy()
    return {"x": x, "y": y}, x0, local_l


def _ring():
    return weights.lazy(weights.metropolis_hastings(topology.ring(N)))


@pytest.mark.parametrize("path", ["shift", "dense"])
@pytest.mark.parametrize("graph", ["ring", "exponential"])
def test_gossip_in_float32_matches_float64_reference(graph, path):
    adjacency = topology.ring(N) if graph == "ring" else topology.exponential(N)
    w = weights.metropolis_hastings(adjacency)
    op = comm.gossip(w, path=path)
    x = np.random.default_rng(1).normal(size=(N, 3, 2))
    agent_mesh = mesh.make_agent_mesh(N, 8)
    smap = jax.shard_map(
        op.mix, mesh=agent_mesh, in_specs=jax.P(mesh.AGENT_AXIS), out_specs=jax.P(mesh.AGENT_AXIS)
    )
    got = jax.device_get(jax.jit(smap)(mesh.shard_agents(x.astype(np.float32), agent_mesh)))
    assert got.dtype == np.float32
    want = np.tensordot(w, x.astype(np.float32).astype(np.float64), axes=1)
    terms = int((w != 0).sum(axis=1).max())
    scale = np.tensordot(np.abs(w), np.abs(x), axes=1)
    assert np.all(np.abs(got - want) <= terms * EPS32 * scale)


def _methods(local_l):
    """Factories ``(loss) -> (algorithm, operators for evaluation)``, one per family."""
    lr = 0.5 / local_l  # Below 1/L for every method here.
    w = _ring()
    ring = comm.gossip(w)
    adjacency = directed.unbalanced_example(N)
    pull = comm.gossip(directed.row_stochastic(adjacency), doubly_stochastic=False)
    push = comm.gossip(directed.column_stochastic(adjacency), doubly_stochastic=False)
    failing = link_failures(comm.gossip(w), 0.2)
    identity = compression.identity()
    return {
        "dsgd": lambda loss: algos.dsgd(loss, ring, lr),
        "gradient_tracking": lambda loss: algos.gradient_tracking(loss, ring, lr),
        "exact_diffusion": lambda loss: algos.exact_diffusion(loss, ring, lr),
        "nids": lambda loss: algos.nids(loss, ring, lr),
        "extra": lambda loss: algos.extra(loss, ring, lr),
        "cedas": lambda loss: algos.cedas(loss, ring, identity, lr),
        "compressed_gt": lambda loss: algos.compressed(
            algos.gradient_tracking, loss, ring, identity, learning_rate=lr
        ),
        "push_pull": lambda loss: algos.push_pull(loss, pull, push, lr),
        "push_diging": lambda loss: algos.push_diging(loss, push, lr),
        "cpp": lambda loss: algos.cpp(loss, pull, push, lr, compressor=identity),
        "dsgd_link_failures": lambda loss: time_varying(algos.dsgd(loss, failing, lr), failing),
        "fedavg": lambda loss: algos.fedavg(loss, ring, lr, local_steps=3),
        "scaffold": lambda loss: algos.scaffold(loss, ring, lr, local_steps=3),
        "centralized": lambda loss: algos.centralized(loss, ring, lr),
    }


@functools.cache
def _run(name, x64):
    """``STEPS`` full-gradient steps of method ``name`` on 8 devices; final params."""
    with jax.enable_x64(x64):
        parts, x0, local_l = _problem()
        # NumPy's float64 arrays as a user passes them: with x64 off JAX makes them float32.
        loss = objectives.least_squares().loss
        algorithm = _methods(local_l)[name](loss)
        server = comm.gossip(_ring())
        agent_mesh = mesh.make_agent_mesh(N, 8)
        runner = loop.Runner(
            algorithm, sampling.full_batch(M), agent_mesh, metrics.make_evaluator(loss, server)
        )
        data = mesh.shard_agents(parts, agent_mesh)
        state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
        state, history = loop.train(runner, state, data, jax.random.key(1), STEPS, log_every=STEPS)
        leaves = jax.tree.leaves(jax.device_get(state))
        return np.asarray(jax.device_get(algorithm.params(state))), leaves, history


@pytest.mark.parametrize("name", sorted(_methods(1.0)))
def test_method_runs_in_float32_and_tracks_its_float64_run(name):
    x32, leaves, history = _run(name, False)
    assert x32.dtype == np.float32
    for leaf in leaves:
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == np.float32, (name, leaf.dtype)
            assert np.all(np.isfinite(leaf)), name
    assert all(np.isfinite(v) for row in history for v in row.values())
    x64, _, _ = _run(name, True)
    assert x64.dtype == np.float64
    # See the module docstring: T steps, sums of at most max(D, N) terms, growth <= 2.
    budget = 2 * STEPS * max(D, N) * EPS32 * max(1.0, np.abs(x64).max())
    assert np.abs(x32 - x64).max() <= budget, (name, np.abs(x32 - x64).max(), budget)


def test_quickstart_runs_with_float64_off(tmp_path):
    from launch_checks import assert_tracks_gradient_descent

    from decentjax.launch import train
    from decentjax.launch.configs import quickstart

    config = quickstart.get_config("runlocal")
    config.topologies = ("ring",)
    config.algorithms = ("d_rr",)
    config.n_devices = 1
    out = train.train_and_evaluate(config, str(tmp_path))
    (history,) = out["histories"].values()
    assert len(history) == config.num_epochs + 1
    assert all(np.isfinite(row["dist_to_opt"]) for row in history)
    assert np.asarray(out["x_star"]).dtype == np.float32
    assert_tracks_gradient_descent(config, out)
