"""FedKSeed: zeroth-order local steps from K shared seeds (algos.fedkseed)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from federated_steps import run_steps

from decentjax.algos import fedkseed
from decentjax.algos.fedkseed import (
    fedkseed_upload_bits,
    perturbation,
    seed_combination,
    seed_probabilities,
)
from decentjax.core import comm, weights
from decentjax.models import objectives

N, D, M = 8, 5, 10
LS = objectives.least_squares()
SERVER = comm.gossip(weights.averaging(N))
TAU, K, ALPHA, EPS, SEED = 3, 16, 0.02, 1e-4, 7
ROUNDS = 3
# float64 rounding of a few sums of O(1) terms: 1e3 ulps.
RTOL = 1e3 * np.finfo(np.float64).eps
# A two-point difference amplifies the rounding of the loss values (|f| < 10 here) by
# 1/(2 eps); a step moves by alpha g z (|z_j| < 5), tau steps a round.
G_ATOL = 10 * np.finfo(np.float64).eps / (2 * EPS)
Y_ATOL = TAU * ALPHA * 5 * G_ATOL


@functools.cache
def problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D))) + rng.normal(size=(N, M))
    return {"x": x, "y": y}, rng.normal(size=(N, D))


def np_loss(w, a, b):
    return 0.5 * np.mean((a @ w - b) ** 2)


def direction(s):
    return np.asarray(perturbation(SEED, jnp.int32(s), jnp.zeros(D)))


@pytest.fixture(scope="module")
def runs():
    """FedKSeed-Pro, half the clients per round, on 1 and 8 devices."""
    parts, x0 = problem()
    alg = fedkseed(
        LS.loss,
        SERVER,
        ALPHA,
        local_steps=TAU,
        num_seeds=K,
        eps=EPS,
        participation=0.5,
        probability_differentiated=True,
        amp_clip=5.0,
        seed=SEED,
    )
    return {n: run_steps(alg, x0, parts, ROUNDS * TAU, n) for n in (1, 8)}


def test_matches_numpy_and_the_server_rebuilds_the_clients_mean_from_the_seeds(runs):
    parts, x0 = problem()
    _, states, _ = runs[8]
    x = x0.mean(0)
    amp_sum, amp_count = np.zeros(K), np.ones(K)
    for r in range(ROUNDS):
        end = r * TAU + TAU - 1
        active = states.active[end]
        seeds, scalars = states.seeds[end], states.scalars[end]
        update, finals = np.zeros(D), []
        for i in np.flatnonzero(active):
            y = x.copy()
            for j in range(TAU):
                z = direction(seeds[i, j])
                a, b = parts["x"][i], parts["y"][i]
                g = (np_loss(y + EPS * z, a, b) - np_loss(y - EPS * z, a, b)) / (2 * EPS)
                np.testing.assert_allclose(scalars[i, j], g, rtol=0, atol=G_ATOL)
                y = y - ALPHA * g * z
                # The server's side: only (seed, scalar) pairs, directions regenerated.
                update += ALPHA * scalars[i, j] * direction(seeds[i, j])
                amp_sum[seeds[i, j]] += min(abs(scalars[i, j]), 5.0)
                amp_count[seeds[i, j]] += 1
            np.testing.assert_allclose(states.client_params[end][i], y, rtol=0, atol=Y_ATOL)
            finals.append(states.client_params[end][i])
        x = x - update / active.sum()
        np.testing.assert_allclose(states.server_params[end][0], x, rtol=RTOL)
        np.testing.assert_allclose(states.server_params[end][0], np.mean(finals, 0), rtol=RTOL)
        np.testing.assert_allclose(states.amp_sum[end][0], amp_sum, rtol=RTOL)
        np.testing.assert_array_equal(states.amp_count[end][0], amp_count)
    assert np.abs(x - x0.mean(0)).max() > 1e-3  # It moved.


def test_one_and_eight_devices_agree(runs):
    one, eight = runs[1][1], runs[8][1]
    np.testing.assert_array_equal(one.seeds, eight.seeds)
    np.testing.assert_allclose(one.server_params, eight.server_params, rtol=RTOL)


def test_bytes_are_the_pairs_once_per_round(runs):
    _, states, sent = runs[8]
    per_client = TAU * (math.ceil(math.log2(K)) + 64) / 8  # 3 pairs of 4 + 64 bits
    assert per_client == fedkseed_upload_bits(TAU, K, 64) / 8 == 25.5
    for t in range(ROUNDS * TAU):
        expected = np.where(states.active[t], per_client, 0.0) if t % TAU == TAU - 1 else 0.0
        np.testing.assert_array_equal(sent[t], expected)


def test_seed_combination_and_probabilities_match_numpy():
    c = np.random.default_rng(2).normal(size=K)
    like = jnp.zeros(D)
    got = np.asarray(jax.jit(seed_combination, static_argnums=0)(SEED, jnp.asarray(c), like))
    np.testing.assert_allclose(got, sum(c[s] * direction(s) for s in range(K)), rtol=RTOL)
    amp_sum, amp_count = np.arange(K, dtype=float), np.arange(1.0, K + 1)
    a = amp_sum / amp_count
    a = (a - a.min()) / (a.max() - a.min() + 1e-10)
    expected = np.exp(a) / np.exp(a).sum()
    np.testing.assert_allclose(seed_probabilities(amp_sum, amp_count), expected, rtol=RTOL)
    assert np.allclose(seed_probabilities(np.zeros(K), np.ones(K)), 1 / K)  # Uniform at first.


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="eps must be"):
        fedkseed(LS.loss, SERVER, 0.1, local_steps=2, eps=0.0)
    with pytest.raises(ValueError, match="num_seeds must be"):
        fedkseed(LS.loss, SERVER, 0.1, local_steps=2, num_seeds=0)
    with pytest.raises(ValueError, match="seed must be"):
        fedkseed(LS.loss, SERVER, 0.1, local_steps=2, seed=-1)
    with pytest.raises(ValueError, match="learning_rate must be"):
        fedkseed(LS.loss, SERVER, -0.1, local_steps=2)
