"""SAM local steps (core.sam), DFedAvg / DFedSAM / DFedSAM-MGS and FedSpeed against NumPy."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from federated_steps import run_steps

from decentjax import algos
from decentjax.core import comm, topology, weights
from decentjax.core.algorithm import AgentMapped, agent_grad, map_over_agents
from decentjax.core.loss_inputs import LossInputs, Task
from decentjax.launch import experiment, plot_styles
from decentjax.launch.configs import sam as sam_config
from decentjax.models import objectives

N, D, M = 8, 5, 10
REG = 0.1
LOGISTIC = objectives.logistic_regression(reg=REG)
W = weights.metropolis_hastings(topology.ring(N))
RING = comm.gossip(W)
SERVER = comm.gossip(weights.averaging(N))
VEC_BYTES = D * 8  # One float64 vector.
# Float64 throughout: one step's rounding is ~1e-16 relative; a few dozen steps and
# matrix products keep it far below 1e-12.
RTOL = 1e-12


@functools.cache
def problem():
    """Heterogeneous logistic regression: agent i's labels come from its own model."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(N, M, D))
    models = rng.normal(size=(N, D)) * 2.0
    y = (np.einsum("nmd,nd->nm", a, models) + rng.normal(size=(N, M)) > 0).astype(np.int64)
    return {"x": a, "y": y}


def x0(seed=3):
    return np.random.default_rng(seed).normal(size=(N, D))


def np_grad(w, a, y):
    """Gradient of the l2-regularised logistic loss of one agent (NumPy)."""
    s = 2.0 * y - 1.0
    return -(a * (s / (1.0 + np.exp(s * (a @ w))))[:, None]).mean(0) + REG * w


def np_sam_grad(w, a, y, rho, alpha=1.0):
    g = np_grad(w, a, y)
    norm = np.linalg.norm(g)
    eps = rho * g / norm if norm > 0 else np.zeros_like(g)
    return (1.0 - alpha) * g + alpha * np_grad(w + eps, a, y)


def np_sam_grads(x, rho, alpha=1.0):
    data = problem()
    return np.stack([np_sam_grad(x[i], data["x"][i], data["y"][i], rho, alpha) for i in range(N)])


def step_states(algorithm, steps, n_devices=8):
    """``steps`` full-batch steps from ``x0()``: (initial state, states per step, bytes)."""
    return run_steps(algorithm, x0(), problem(), steps, n_devices)


# ---------------------------------------------------------------------------------------
# The SAM wrapper
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_sam_gradient_matches_numpy_per_agent(alpha):
    rho = 0.2
    x = x0()
    grads = jax.vmap(jax.grad(algos.sam(LOGISTIC.loss, rho, alpha=alpha)))(x, problem())
    np.testing.assert_allclose(grads, np_sam_grads(x, rho, alpha), rtol=RTOL, atol=1e-15)
    # A loss marked for lax.map keeps its mark and gives the same gradients.
    mapped = algos.sam(map_over_agents(LOGISTIC.loss), rho, alpha=alpha)
    assert isinstance(mapped, AgentMapped)
    np.testing.assert_allclose(agent_grad(mapped)(x, problem()), grads, rtol=RTOL)
    # The perturbation is per agent: a different radius per agent's norm, not a shared one.
    plain = jax.vmap(jax.grad(LOGISTIC.loss))(x, problem())
    assert not np.allclose(grads, plain, rtol=1e-3)


def test_sam_at_a_zero_gradient_is_the_plain_gradient():
    def loss(w, batch):
        return 0.5 * jnp.sum(jnp.square(w - batch))

    g = jax.grad(algos.sam(loss, 0.5))(jnp.ones(3), jnp.ones(3))
    np.testing.assert_array_equal(g, np.zeros(3))  # No 0/0.


def test_sam_keeps_the_key_and_the_unperturbed_state():
    def keyed(w, batch, key):  # A loss whose minibatch noise comes from its key.
        return 0.5 * jnp.sum(jnp.square(w - batch - jax.random.normal(key, w.shape)))

    key, w, b, rho = jax.random.key(7), jnp.arange(3.0), jnp.ones(3), 0.3
    target = np.asarray(b + jax.random.normal(key, (3,)))
    g = np.asarray(w) - target  # Gradient of the quadratic; SAM moves along it.
    expected = np.asarray(w) + rho * g / np.linalg.norm(g) - target
    np.testing.assert_allclose(jax.grad(algos.sam(keyed, rho))(w, b, key), expected, rtol=RTOL)

    def value_and_state(w, inputs):  # State: the point the forward pass was run at.
        return keyed(w, inputs.data, inputs.key), {"at": w}

    task = Task(value_and_state, None, None, True, "local", "toy")
    wrapped = algos.sam(task, rho)
    inputs = LossInputs(b, key, {"at": jnp.zeros(3)})
    np.testing.assert_allclose(jax.grad(wrapped.loss)(w, inputs), expected, rtol=RTOL)
    np.testing.assert_array_equal(wrapped.value_and_state(w, inputs)[1]["at"], w)


@pytest.mark.parametrize("from_config", [False, True])
def test_sam_with_any_method_dsgd_matches_numpy(from_config):
    lr, rho, steps = 0.3, 0.1, 4
    if from_config:  # config.sam_rho gives any method SAM local steps
        config = sam_config.get_config("dfl")
        config.algorithms, config.sam_rho = ("dsgd",), rho
        experiment.validate(config)
        algorithm = experiment.build_algorithm(config, "dsgd", LOGISTIC.loss, RING, lr)
    else:
        algorithm = algos.dsgd(algos.sam(LOGISTIC.loss, rho), RING, lr)
    initial, states, sent = step_states(algorithm, steps)
    x = x0()
    for k in range(steps):
        x = W @ (x - lr * np_sam_grads(x, rho))
        np.testing.assert_allclose(states.params[k], x, rtol=RTOL)
    assert sent.sum() == steps * N * VEC_BYTES


def test_sam_family_config_names_validate_and_build():
    for variant in ("dfl", "fl"):
        config = sam_config.get_config(variant)
        experiment.validate(config)
        for name in config.algorithms:
            algorithm = experiment.build_algorithm(config, name, LOGISTIC.loss, RING, 0.1)
            assert name.replace("_", "-").startswith(algorithm.name) or name == "fedsam", name
            assert experiment.sampler_of(config, name) == ("iid", name.startswith("dfed"))
            assert plot_styles.family(name) != "other", name


def test_bad_sam_arguments_are_clear_errors():
    config = sam_config.get_config("dfl")
    config.sam_rho = 0.1
    with pytest.raises(ValueError, match="'dfedsam' has SAM built in"):
        experiment.validate(config)
    config.sam_rho = -1.0
    with pytest.raises(ValueError, match="config.sam_rho must be a finite number >= 0"):
        experiment.validate(config)
    with pytest.raises(ValueError, match="rho must be"):
        algos.sam(LOGISTIC.loss, -0.1)
    with pytest.raises(ValueError, match="alpha must be"):
        algos.sam(LOGISTIC.loss, 0.1, alpha=1.5)
    with pytest.raises(ValueError, match="gossip_steps"):
        algos.dfedsam(LOGISTIC.loss, RING, 0.1, local_steps=2, rho=0.1, gossip_steps=0)
    with pytest.raises(ValueError, match="lam"):
        algos.fedspeed(LOGISTIC.loss, SERVER, 0.1, local_steps=2, rho=0.1, lam=0.0)


# ---------------------------------------------------------------------------------------
# DFedAvg / DFedSAM / DFedSAM-MGS
# ---------------------------------------------------------------------------------------


K_DFL, LR_DFL, RHO, ROUNDS = 3, 0.2, 0.1, 2


@functools.cache
def dfedsam_run(q, n_devices=8, w=None):
    """DFedSAM(-MGS) on ``RING`` (or the gossip of ``w``), K = 3, two rounds; cached."""
    op = RING if w is None else comm.gossip(np.asarray(w))
    alg = algos.dfedsam(LOGISTIC.loss, op, LR_DFL, local_steps=K_DFL, rho=RHO, gossip_steps=q)
    return alg.name, *step_states(alg, ROUNDS * K_DFL, n_devices)


@pytest.mark.parametrize("q", [1, 3])
def test_dfedsam_matches_numpy_with_q_gossip_steps(q):
    name, _, states, sent = dfedsam_run(q)
    assert name == ("dfedsam" if q == 1 else "dfedsam-mgs")
    x, k = x0(), K_DFL
    w_q = np.linalg.matrix_power(W, q)
    for r in range(ROUNDS):
        for step in range(k):
            x = x - LR_DFL * np_sam_grads(x, RHO)
            if step < k - 1:  # Inside the round: local iterates, no gossip.
                np.testing.assert_allclose(states.params[r * k + step], x, rtol=RTOL)
        x = w_q @ x
        np.testing.assert_allclose(states.params[r * k + k - 1], x, rtol=RTOL)
    assert sent.sum() == ROUNDS * q * N * VEC_BYTES  # Q vectors per client per round.
    assert (sent.reshape(ROUNDS, k, N)[:, : k - 1] == 0).all()


def test_q_gossip_steps_equal_one_gossip_with_w_to_the_q_and_one_vs_eight_devices():
    _, _, s8, sent8 = dfedsam_run(3)
    _, _, s1, sent1 = dfedsam_run(3, n_devices=1)
    chex.assert_trees_all_close(s1, s8, rtol=RTOL, atol=1e-15)
    np.testing.assert_array_equal(sent1, sent8)
    cubed = tuple(map(tuple, np.linalg.matrix_power(W, 3)))  # hashable for the cache
    _, _, s_w3, _ = dfedsam_run(1, w=cubed)
    np.testing.assert_allclose(s_w3.params, s8.params, rtol=1e-11)


def test_dfedavg_is_dfedsam_at_rho_zero_and_dsgd_at_one_local_step():
    _, dfedavg_states, _ = step_states(algos.dfedavg(LOGISTIC.loss, RING, 0.3, local_steps=1), 3)
    _, dsgd_states, _ = step_states(algos.dsgd(LOGISTIC.loss, RING, 0.3), 3)
    np.testing.assert_array_equal(dfedavg_states.params, dsgd_states.params)


# ---------------------------------------------------------------------------------------
# FedSpeed
# ---------------------------------------------------------------------------------------


K_FL, LAM, ALPHA, FL_ROUNDS = 3, 2.0, 0.6, 3


@functools.cache
def fedspeed_run(n_devices=8, correction_mean="sampled"):
    """FedSpeed with half the clients per round, K = 3, three rounds; cached."""
    alg = algos.fedspeed(
        LOGISTIC.loss, SERVER, 0.1, local_steps=K_FL, rho=RHO, lam=LAM, alpha=ALPHA,
        participation=0.5, correction_mean=correction_mean,
    )  # fmt: skip
    return step_states(alg, FL_ROUNDS * K_FL, n_devices)


@pytest.mark.parametrize("correction_mean", ["sampled", "all"])
def test_fedspeed_matches_numpy_with_partial_participation(correction_mean):
    initial, states, sent = fedspeed_run(correction_mean=correction_mean)
    k, lr = K_FL, 0.1
    x_s = np.asarray(initial.server_params)[0]
    np.testing.assert_allclose(x_s, x0().mean(0), rtol=1e-15)
    h = np.zeros((N, D))
    for r in range(FL_ROUNDS):
        s = states.active[r * k]
        assert s.sum() == N // 2
        y = np.broadcast_to(x_s, (N, D)).copy()
        for _ in range(k):
            y = y - lr * (np_sam_grads(y, RHO, ALPHA) - h + (y - x_s) / LAM)
        h = np.where(s[:, None], h - (y - x_s) / LAM, h)
        if correction_mean == "sampled":  # The paper: mean of the sampled y_K - lam h_i.
            x_s = (y - LAM * h)[s].mean(0)
        else:  # The authors' code: sampled y_K plus every client's -lam h_i.
            x_s = y[s].mean(0) - LAM * h.mean(0)
        end = r * k + k - 1
        np.testing.assert_allclose(states.server_params[end][0], x_s, rtol=RTOL)
        np.testing.assert_allclose(states.client_correction[end], h, rtol=RTOL, atol=1e-15)
    assert sent.sum() == FL_ROUNDS * (N // 2) * VEC_BYTES


def test_fedspeed_one_and_eight_devices_agree():
    _, s8, sent8 = fedspeed_run()
    _, s1, sent1 = fedspeed_run(n_devices=1)
    np.testing.assert_array_equal(s1.active, s8.active)
    chex.assert_trees_all_close(s1, s8, rtol=RTOL, atol=1e-15)
    np.testing.assert_array_equal(sent1, sent8)
