"""Per-agent evaluation (core.agent_metrics) and the metrics at x_bar against NumPy."""

import jax
import numpy as np
import pytest

from decentjax.core import (
    agent_metrics,
    comm,
    datasets,
    mesh,
    metrics,
    partition,
    topology,
    weights,
)
from decentjax.models import objectives

N, M, D = 8, 12, 5
REG = 0.1


def numpy_loss(w, x, y):
    """f_i(w): mean log(1 + exp(-s a^T w)) + reg/2 |w|^2, s = 2y - 1."""
    return np.mean(np.logaddexp(0.0, -(2.0 * y - 1.0) * (x @ w))) + 0.5 * REG * w @ w


def numpy_grad(w, x, y):
    s = 2.0 * y - 1.0
    return -(x * (s / (1.0 + np.exp(s * (x @ w))))[:, None]).mean(axis=0) + REG * w


def numpy_accuracy(w, x, y):
    return np.mean((x @ w > 0) == (y == 1))


def problem():
    rng = np.random.default_rng(3)
    data, _ = datasets.synthetic_logistic_regression(2 * N * M, D, seed=1, dtype=np.float64)
    parts = partition.partition_label_sorted(data, N)
    train = {k: v[:, :M] for k, v in parts.items()}
    test = {k: v[:, M:] for k, v in parts.items()}
    params = rng.normal(size=(N, D))  # every agent at its own point
    return train, test, params


@pytest.mark.parametrize("n_devices", [8, 2])
def test_per_agent_metrics_equal_numpy(n_devices):
    train, test, params = problem()
    obj = objectives.logistic_regression(reg=REG)
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    evaluate = agent_metrics.with_agent_metrics(
        metrics.make_evaluator(obj.loss, op, accuracy_fn=obj.accuracy),
        obj.loss,
        op,
        accuracy_fn=obj.accuracy,
    )
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    agents = jax.P(mesh.AGENT_AXIS)
    compiled = jax.jit(
        jax.shard_map(evaluate, mesh=agent_mesh, in_specs=(agents,) * 3, out_specs=jax.P())
    )
    got = compiled(
        mesh.shard_agents(params, agent_mesh),
        mesh.shard_agents(train, agent_mesh),
        mesh.shard_agents(test, agent_mesh),
    )
    got = {k: float(v) for k, v in got.items()}

    # float64 sums of N * M terms: a few ulps of the values' scale.
    tol = dict(rtol=100 * N * M * np.finfo(np.float64).eps, atol=1e-13)
    for split, part in (("", train), ("test_", test)):
        for name, fn, worst in (("loss", numpy_loss, np.max), ("accuracy", numpy_accuracy, np.min)):
            values = np.array([fn(params[i], part["x"][i], part["y"][i]) for i in range(N)])
            for stat, want in (
                ("mean", values.mean()),
                ("worst", worst(values)),
                ("std", values.std()),
            ):
                key = f"agent_{split}{name}_{stat}"
                np.testing.assert_allclose(got[key], want, err_msg=key, **tol)
    # Beside them, the metrics at x_bar (grad_norm_sq was n_devices^2 too large before).
    x_bar = params.mean(axis=0)
    loss_bar = np.mean([numpy_loss(x_bar, train["x"][i], train["y"][i]) for i in range(N)])
    grad_bar = np.mean([numpy_grad(x_bar, train["x"][i], train["y"][i]) for i in range(N)], axis=0)
    np.testing.assert_allclose(got["loss"], loss_bar, **tol)
    np.testing.assert_allclose(got["grad_norm_sq"], grad_bar @ grad_bar, **tol)
    assert got["agent_loss_worst"] > got["agent_loss_mean"] > got["loss"] > 0


def test_distribution_rejects_an_unknown_worst():
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    with pytest.raises(ValueError, match="worst must be 'max' or 'min', got 'median'"):
        agent_metrics.distribution(np.zeros(N), op, worst="median")
