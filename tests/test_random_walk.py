"""Random-walk (token) SGD and SRRW: the walk's statistics, the SGD iterate, devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from decentjax import algos
from decentjax.core import comm, datasets, loop, mesh, metrics, partition, topology, weights
from decentjax.core.sampling import Sampler
from decentjax.models import objectives

N, M, D, STEPS, LR = 8, 6, 3, 24, 0.1
WALKS, WALK_STEPS = 64, 2000
LEVEL = 1e-3  # family-wise false-alarm probability of each statistical test


def transition():
    return weights.metropolis_hastings(topology.ring(N))


@functools.cache
def problem():
    data, _ = datasets.synthetic_linear_regression(N * M, D, seed=0, dtype=np.float64)
    return partition.partition_iid(data, N, seed=0), objectives.least_squares()


def full_batches(steps):
    """Every step the whole local dataset: the gradient is the agent's full gradient."""

    def indices(key):
        del key
        return jnp.tile(jnp.arange(M, dtype=jnp.int32), (steps, 1))

    return Sampler(indices, M, M, steps, "full-steps")


def trace(make, n_devices, with_bytes=False):
    """The state after each of STEPS steps (and the epoch's bytes one agent sent)."""
    parts, obj = problem()
    op = comm.gossip(transition())
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    data = mesh.shard_agents(parts, agent_mesh)
    runner = loop.Runner(
        make(obj.loss, op), full_batches(STEPS), agent_mesh, metrics.make_evaluator(obj.loss, op)
    )
    x0 = np.broadcast_to(np.linspace(-1.0, 1.0, D), (N, D)).copy()
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    states = jax.device_get(runner.trace_epoch(state, data, jax.random.key(1), 0))
    if not with_bytes:
        return states, None
    _, history = loop.train(runner, state, data, jax.random.key(1), 1)
    return states, history[1]["bytes_sent"]


@functools.cache
def rw_traces():
    make = functools.partial(algos.random_walk_sgd, learning_rate=LR)
    return trace(make, 1, with_bytes=True), trace(make, 8)


def test_iterate_equals_numpy_transcription_on_one_and_eight_devices():
    (states, sent), (states8, sent8) = rw_traces()
    for field in ("params", "holder", "visits"):
        np.testing.assert_allclose(
            getattr(states, field), getattr(states8, field), rtol=1e-13, atol=1e-15
        )
    holders = states.holder[:, 0]
    assert np.all(states.holder == holders[:, None])  # every row holds the same index
    assert len(set(holders.tolist())) > 2  # the token did walk
    parts, _ = problem()
    theta, holder, moves = np.linspace(-1.0, 1.0, D), 0, 0
    for k in range(STEPS):
        a, b = parts["x"][holder], parts["y"][holder]
        theta = theta - LR * a.T @ (a @ theta - b) / M
        np.testing.assert_allclose(states.params[k], np.broadcast_to(theta, (N, D)), rtol=1e-12)
        moves += int(holders[k] != holder)
        holder = holders[k]
    # The holder sends the model (D float64) on one edge when the token moves.
    assert sent == pytest.approx(moves * D * 8 / N)


def test_srrw_with_alpha_zero_is_the_base_walk_draw_for_draw():
    (base, _), _ = rw_traces()
    srrw, _ = trace(functools.partial(algos.srrw_sgd, learning_rate=LR, alpha=0.0), 1)
    np.testing.assert_array_equal(srrw.holder, base.holder)
    np.testing.assert_array_equal(srrw.params, base.params)


@functools.cache
def visits(alpha):
    agent_mesh = mesh.make_agent_mesh(N, 8)
    return algos.simulate_visits(
        comm.gossip(transition()),
        agent_mesh,
        jax.random.key(3),
        num_walks=WALKS,
        num_steps=WALK_STEPS,
        alpha=alpha,
    )


def test_visit_frequencies_converge_to_the_stationary_distribution():
    """z-test per agent of the mean visit frequency over independent walks.

    Expected frequency after T steps from agent 0: (1/T) sum_{k<T} P^k[0, :], exact.
    Its variance over R walks is sigma_j^2 / (T R) with the Markov-chain CLT's
    asymptotic variance sigma_j^2 = 2 mu_j Z_jj - mu_j - mu_j^2, Z = (I - P + 1 mu^T)^-1.
    Bonferroni over the N agents: family-wise false-alarm probability LEVEL.
    """
    p = transition()
    mu = np.full(N, 1.0 / N)
    counts = visits(None)
    assert np.all(counts.sum(axis=1) == WALK_STEPS)
    expected, row = np.zeros(N), np.eye(N)[0]
    for _ in range(WALK_STEPS):
        expected += row
        row = row @ p
    expected /= WALK_STEPS
    z_matrix = np.linalg.inv(np.eye(N) - p + np.outer(np.ones(N), mu))
    sigma2 = 2 * mu * np.diag(z_matrix) - mu - mu**2
    freq = counts.mean(axis=0) / WALK_STEPS
    z = (freq - expected) / np.sqrt(sigma2 / (WALK_STEPS * WALKS))
    assert np.max(np.abs(z)) < stats.norm.ppf(1 - LEVEL / (2 * N)), z
    np.testing.assert_allclose(expected, mu, atol=2.0 / WALK_STEPS)  # bias O(1/T)


def test_srrw_reduces_the_visit_frequency_variance():
    """One-sided F-test at level LEVEL: Var_base / Var_SRRW of agent 4's frequency.

    Doshi et al. (ICML 2023) show the asymptotic covariance of SRRW's visit measure
    falling as O(1/alpha); at alpha = 5 the ratio is far above the critical value.
    """
    base, srrw = visits(None), visits(5.0)
    f = np.var(base[:, 4], ddof=1) / np.var(srrw[:, 4], ddof=1)
    assert f > stats.f.ppf(1 - LEVEL, WALKS - 1, WALKS - 1), f
    # And over all agents, the summed variance falls too.
    assert np.var(base, axis=0, ddof=1).sum() > 2 * np.var(srrw, axis=0, ddof=1).sum()


def test_bad_walks_are_clear_errors():
    _, obj = problem()
    with pytest.raises(ValueError, match="row-stochastic"):
        algos.random_walk_sgd(obj.loss, np.ones((N, N)), 0.1)
    with pytest.raises(ValueError, match="reducible"):
        algos.random_walk_sgd(obj.loss, np.eye(N), 0.1)
    with pytest.raises(ValueError, match="alpha"):
        algos.srrw_sgd(obj.loss, transition(), 0.1, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha must be finite"):
        algos.srrw_sgd(obj.loss, transition(), 0.1, alpha=np.inf)
    for start in (N, True):
        with pytest.raises(ValueError, match="start"):
            algos.random_walk_sgd(obj.loss, transition(), 0.1, start=start)


def test_config_runs_the_token_methods(tmp_path):
    from decentjax.launch import train
    from decentjax.launch.configs import random_walk

    config = random_walk.get_config("runlocal")
    config.topologies, config.algorithms, config.n_devices = ("ring",), ("srrw_sgd",), 1
    config.algorithm_epochs = {"srrw_sgd": 2}
    history = train.train_and_evaluate(config, str(tmp_path))["histories"]["ring", "srrw_sgd"]
    assert history[-1]["dist_to_opt"] < history[0]["dist_to_opt"]
    assert history[-1]["consensus"] < 1e-12  # every agent's row is the token
    assert 0 < history[-1]["bytes_sent"]
