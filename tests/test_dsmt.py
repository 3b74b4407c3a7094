"""DSMT against the authors' update written in NumPy, its invariants, and 1 vs 8 devices."""

import functools

import jax
import numpy as np
import pytest
from test_exact import (
    LS,
    N,
    _dense_grads,
    _permutations,
    least_squares_problem,
    logistic_problem,
    run,
)

from decentjax import algos
from decentjax.core import comm, sampling, topology, weights
from decentjax.launch import experiment
from decentjax.launch.configs import dsmt as dsmt_config

M, ALPHA, EPOCHS = 12, 0.1, 2
W = weights.metropolis_hastings(topology.ring(N))  # DSMT builds (I + W) / 2 in.


def numpy_dsmt(x0, parts, obj, perms, alpha):
    """The authors' ``Dopt2.DSMT`` recursion with dense matrices, one sample per step."""
    wbar = (np.eye(N) + W) / 2
    lam = np.sort(np.linalg.eigvals(wbar).real)[N - 2]
    root = np.sqrt(1 - lam**2)
    eta = (1 + (1 - root) / (1 + root)) / 2
    beta = np.sqrt(eta)
    samples = np.concatenate(perms, axis=1)  # (N, steps)
    x, xl = x0, x0
    y = yl = z = (1 - beta) * _dense_grads(obj, x, parts, samples[:, 0])
    for k in range(samples.shape[1]):
        x_tmp, xl_tmp = x - alpha * y, xl - alpha * y
        x, xl = (1 + eta) * wbar @ x_tmp - eta * xl_tmp, x_tmp
        if k + 1 == samples.shape[1]:
            break
        z_new = beta * z + (1 - beta) * _dense_grads(obj, x, parts, samples[:, k + 1])
        y_tmp, yl_tmp = y + z_new - z, yl + z_new - z
        y, yl, z = (1 + eta) * wbar @ y_tmp - eta * yl_tmp, y_tmp, z_new
    return x


@functools.cache
def dsmt_run(n_devices, lazy=True):
    parts, obj, x_star = logistic_problem(M)
    x0 = np.random.default_rng(3).normal(size=(N, parts["x"].shape[-1]))  # Not consensual.
    make = functools.partial(algos.dsmt, learning_rate=ALPHA, lazy=lazy)
    history, x, runner, _ = run(
        make,
        sampling.reshuffle(M),
        parts,
        obj.loss,
        x_star,
        EPOCHS,
        w=W if lazy else weights.lazy(W),
        x0=x0,
        n_devices=n_devices,
    )
    return history, x, runner, x0


def test_dsmt_matches_the_authors_recursion_in_numpy():
    parts, obj, _ = logistic_problem(M)
    _, x_lib, runner, x0 = dsmt_run(1)
    perms = [_permutations(runner, jax.random.key(1), epoch) for epoch in range(EPOCHS)]
    x_np = numpy_dsmt(x0, parts, obj, perms, ALPHA)
    np.testing.assert_allclose(x_lib, x_np, rtol=0, atol=1e-12)


def test_dsmt_one_and_eight_devices_agree_and_a_given_lazy_matrix_equals_building_it_in():
    h1, x1, *_ = dsmt_run(1)
    h8, x8, *_ = dsmt_run(8, lazy=False)  # comm holds (I + W) / 2 itself.
    np.testing.assert_allclose(x1, x8, rtol=0, atol=1e-13)
    # Two vectors per step, one on the first: (2 M EPOCHS - 1) vectors of D + 1 float64.
    assert h1[-1]["bytes_sent"] == (2 * M * EPOCHS - 1) * x1.shape[-1] * 8
    assert [r["bytes_sent"] for r in h1] == [r["bytes_sent"] for r in h8]


def test_dsmt_reaches_x_star_with_full_gradients_and_keeps_its_invariants():
    parts, x_star = least_squares_problem()
    make = functools.partial(algos.dsmt, learning_rate=0.05)
    _, x, runner, state = run(make, sampling.full_batch(10), parts, LS.loss, x_star, 1500, w=W)
    err = np.linalg.norm(x - x_star[None])
    assert err < 1e-10, f"||X - 1 x*^T|| = {err:.3e} after 1500 steps"
    # Averages: x-bar = x-hat-bar and y-bar = z-bar, to rounding of O(1) numbers.
    get = lambda t: np.asarray(jax.device_get(t))  # noqa: E731
    tol = 1e3 * np.finfo(np.float64).eps
    np.testing.assert_allclose(get(state.params).mean(0), get(state.params_lag).mean(0), atol=tol)
    np.testing.assert_allclose(get(state.tracker).mean(0), get(state.momentum).mean(0), atol=tol)


def test_dsmt_invalid_hyperparameters():
    op = comm.gossip(W)
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\), got 1.0"):
        algos.dsmt(LS.loss, op, 0.1, momentum=1.0)
    with pytest.raises(ValueError, match="lca must be"):
        algos.dsmt(LS.loss, op, 0.1, lca=-0.5)
    with pytest.raises(
        ValueError, match=r"learning_rate must be a finite number > 0 \(or a schedule\), got 0"
    ):
        algos.dsmt(LS.loss, op, 0)
    with pytest.raises(ValueError, match="dsmt: the gossip operator must hold a symmetric"):
        shift = (np.eye(N) + np.roll(np.eye(N), 1, axis=1)) / 2  # Doubly stochastic, not symmetric.
        algos.dsmt(LS.loss, comm.gossip(shift, symmetric=False), 0.1)
    with pytest.raises(ValueError, match="dsmt: .*positive semidefinite.*lambda_min"):
        algos.dsmt(
            LS.loss, comm.gossip(weights.metropolis_hastings(topology.ring(4))), 0.1, lazy=False
        )


def test_dsmt_config_resolves_and_builds_dsmt_on_the_lazy_matrix():
    config = dsmt_config.get_config("n=8,runlocal")
    experiment.validate(config)
    op, _ = experiment.mixing_operator(config, "ring")
    algorithm = experiment.build_algorithm(config, "dsmt", LS.loss, op, 0.1)
    assert algorithm.name == "dsmt"
    with pytest.raises(ValueError, match="unknown config arguments \\['m'\\]"):
        dsmt_config.get_config("m=3")
