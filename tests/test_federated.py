"""FedAvg, FedProx, FedOpt, SCAFFOLD and the heterogeneity measures."""

import functools

import chex
import jax
import numpy as np
import optax
import pytest
from step_scan import scan_steps

from decentjax.algos import centralized
from decentjax.algos.federated import fedavg, fedprox, scaffold
from decentjax.core import (
    comm,
    datasets,
    heterogeneity,
    loop,
    mesh,
    metrics,
    optimum,
    partition,
    sampling,
    weights,
)
from decentjax.models import objectives

N, D, M = 8, 5, 10
LS = objectives.least_squares()
SERVER = comm.gossip(weights.averaging(N))  # Federated methods use only its mean.
VEC_BYTES = D * 8  # One float64 vector.


@functools.cache
def least_squares_problem():
    """Heterogeneous least squares: each agent's targets come from its own model."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D)) * 3.0) + rng.normal(size=(N, M))
    a, b = x.reshape(-1, D), y.reshape(-1)
    x_star = np.linalg.solve(a.T @ a, a.T @ b)  # Exact minimiser of the pooled objective.
    return {"x": x, "y": y}, x_star


def x0_agents(seed=3):
    return np.random.default_rng(seed).normal(size=(N, D))  # Not consensual.


def make_runner(make, sampler, n_devices=1, x_star=None):
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    evaluate = metrics.make_evaluator(LS.loss, SERVER, x_star=x_star)
    return loop.Runner(make(LS.loss, SERVER), sampler, agent_mesh, evaluate), agent_mesh


def run(make, sampler, epochs, *, n_devices=1, log_every=None):
    """Trains on the least-squares problem; returns (history, final state)."""
    parts, x_star = least_squares_problem()
    runner, agent_mesh = make_runner(make, sampler, n_devices, x_star)
    data = mesh.shard_agents(parts, agent_mesh)
    state = runner.init(mesh.shard_agents(x0_agents(), agent_mesh), data, jax.random.key(0))
    state, history = loop.train(
        runner, state, data, jax.random.key(1), epochs, log_every=log_every or epochs
    )
    return history, jax.device_get(state)


def server_error(state):
    _, x_star = least_squares_problem()
    return float(np.linalg.norm(np.asarray(state.server_params)[0] - x_star))


def trace(make, sampler, n_devices=1):
    """The initial state and the state after every step of epoch 0 (leading step axis)."""
    parts, _ = least_squares_problem()
    runner, agent_mesh = make_runner(make, sampler, n_devices)
    data = mesh.shard_agents(parts, agent_mesh)
    state = runner.init(mesh.shard_agents(x0_agents(), agent_mesh), data, jax.random.key(0))
    return jax.device_get(state), jax.device_get(
        runner.trace_epoch(state, data, jax.random.key(1), 0)
    )


def step_outputs(algorithm, steps, n_devices=8):
    """Runs ``steps`` full-gradient steps directly; returns (initial, states, bytes).

    ``states`` and the per-agent ``bytes`` (what each agent's step reported) have a
    leading step axis.
    """
    parts, _ = least_squares_problem()
    return scan_steps(algorithm, x0_agents(), parts, steps, n_devices)


# ---------------------------------------------------------------------------------------
# Reductions and equivalences
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [dict(learning_rate=0.1), dict(optimizer=optax.sgd(0.1, momentum=0.9))],
    ids=["sgd", "momentum"],
)
def test_fedavg_one_local_step_is_centralized_minibatch_sgd(kw):
    sampler = sampling.iid(M, batch_size=2, steps_per_epoch=15)
    _, fed = trace(functools.partial(fedavg, local_steps=1, **kw), sampler)
    _, cen = trace(functools.partial(centralized, **kw), sampler)
    # Same sample orders and keys, step for step. They differ only in where the
    # rounding happens: mean_i(x - a g_i) against x - a mean_i(g_i).
    np.testing.assert_allclose(fed.server_params, cen.params, rtol=1e-13, atol=1e-14)
    assert np.abs(fed.server_params[-1] - fed.server_params[0]).max() > 0.1  # It moved.


def test_fedprox_with_zero_mu_is_fedavg_and_fedopt_sgd1_is_fedavg():
    kw = dict(local_steps=3, participation=0.5)
    _, base, _ = step_outputs(fedavg(LS.loss, SERVER, 0.05, **kw), 12)
    _, prox, _ = step_outputs(fedprox(LS.loss, SERVER, 0.05, mu=0.0, **kw), 12)
    _, opt, _ = step_outputs(
        fedavg(LS.loss, SERVER, 0.05, server_optimizer=optax.sgd(1.0), **kw), 12
    )
    for other in (prox, opt):  # Bit for bit.
        np.testing.assert_array_equal(other.server_params, base.server_params)
        np.testing.assert_array_equal(other.client_params, base.client_params)
    # mu > 0 does change the run.
    _, prox, _ = step_outputs(fedprox(LS.loss, SERVER, 0.05, mu=1.0, **kw), 12)
    assert np.abs(prox.server_params - base.server_params).max() > 1e-3


def test_fedavg_weights_and_participation_match_numpy():
    """Three rounds of weighted FedAvg with client sampling against NumPy."""
    parts, _ = least_squares_problem()
    k, alpha, w = 2, 0.05, np.arange(1.0, N + 1)
    algorithm = fedavg(LS.loss, SERVER, alpha, local_steps=k, participation=0.5, weights=w)
    initial, states, sent = step_outputs(algorithm, 3 * k)
    grad = jax.vmap(jax.grad(LS.loss))
    x_s = np.asarray(initial.server_params)[0]
    np.testing.assert_allclose(x_s, x0_agents().mean(0), rtol=1e-15)  # Starts at the mean.
    for r in range(3):
        active = states.active[r * k]
        y = np.broadcast_to(x_s, (N, D)).copy()
        for _ in range(k):
            y = y - alpha * np.asarray(grad(y, parts))
        wa = w * active
        x_s = x_s + (wa[:, None] * (y - x_s)).sum(0) / wa.sum()
        np.testing.assert_allclose(states.server_params[r * k + k - 1][0], x_s, rtol=1e-13)
    assert sent.sum() == 3 * (N // 2) * VEC_BYTES


def test_scaffold_matches_numpy_with_partial_participation():
    parts, _ = least_squares_problem()
    k, eta, eta_g = 3, 0.05, 0.8
    algorithm = scaffold(
        LS.loss, SERVER, eta, local_steps=k, server_learning_rate=eta_g, participation=0.5
    )
    initial, states, sent = step_outputs(algorithm, 4 * k)
    grad = jax.vmap(jax.grad(LS.loss))
    x_s = np.asarray(initial.server_params)[0]
    c_i, c = np.zeros((N, D)), np.zeros(D)
    for r in range(4):
        s = states.active[r * k]
        y = np.broadcast_to(x_s, (N, D)).copy()
        for _ in range(k):
            y = y - eta * (np.asarray(grad(y, parts)) - c_i + c)
        c_plus = c_i - c + (x_s - y) / (k * eta)
        x_s = x_s + eta_g * (y - x_s)[s].mean(0)
        c = c + (c_plus - c_i)[s].sum(0) / N
        c_i = np.where(s[:, None], c_plus, c_i)
        end = r * k + k - 1
        np.testing.assert_allclose(states.server_params[end][0], x_s, rtol=1e-12)
        np.testing.assert_allclose(states.client_control[end], c_i, rtol=1e-12, atol=1e-12)
        # c = (1/n) sum_i c_i at every round (all control variates start at zero).
        np.testing.assert_allclose(states.server_control[end][0], c_i.mean(0), atol=1e-12)
    assert sent.sum() == 4 * (N // 2) * 2 * VEC_BYTES


# ---------------------------------------------------------------------------------------
# SCAFFOLD removes the client-drift bias of FedAvg; FedOpt
# ---------------------------------------------------------------------------------------


def test_scaffold_converges_where_fedavg_stalls():
    k, eta, rounds = 5, 0.05, 300
    sampler = sampling.full_batch(M)  # One exact-gradient step per epoch.
    h_scaffold, s_scaffold = run(
        functools.partial(scaffold, learning_rate=eta, local_steps=k), sampler, k * rounds
    )
    h_fedavg, s_fedavg = run(
        functools.partial(fedavg, learning_rate=eta, local_steps=k), sampler, k * rounds
    )
    e_scaffold, e_fedavg = server_error(s_scaffold), server_error(s_fedavg)
    msg = (
        f"after {rounds} rounds of K={k} exact-gradient steps: ||x_s - x*|| is "
        f"{e_scaffold:.3e} for SCAFFOLD and {e_fedavg:.3e} for FedAvg"
    )
    assert e_scaffold < 1e-10, msg
    assert e_fedavg > 1e-2, msg
    # FedAvg sits at a fixed point (biased), it is not still moving towards x*:
    # the server error 50 rounds earlier is the same.
    earlier = h_fedavg[k * (rounds - 50)]["dist_to_opt"]
    assert abs(earlier - h_fedavg[-1]["dist_to_opt"]) < 1e-12, msg
    assert h_scaffold[-1]["dist_to_opt"] < 1e-20, msg


def test_server_optimizers_converge():
    momentum = optax.sgd(1.0, momentum=0.5)
    # K = 1: FedAvg is gradient descent; with server momentum it is heavy ball: exact.
    _, s, _ = step_outputs(
        fedavg(LS.loss, SERVER, 0.05, local_steps=1, server_optimizer=momentum), 600
    )
    err = server_error(jax.tree.map(lambda a: a[-1], s))
    assert err < 1e-10, f"FedAvg K=1 with server momentum: ||x_s - x*|| = {err:.3e}"
    # K = 5: the fixed point (Delta(x) = 0) is FedAvg's, whatever the server optimizer.
    _, plain, _ = step_outputs(fedavg(LS.loss, SERVER, 0.05, local_steps=5), 1500)
    _, mom, _ = step_outputs(
        fedavg(LS.loss, SERVER, 0.05, local_steps=5, server_optimizer=momentum), 1500
    )
    gap = np.abs(mom.server_params[-1] - plain.server_params[-1]).max()
    assert gap < 1e-10, f"server momentum ends {gap:.3e} from FedAvg's fixed point"
    # FedAdam. optax's bias correction computes b ** count (float ** int32), which
    # strict promotion rejects, hence the standard promotion here.
    with jax.numpy_dtype_promotion("standard"):
        _, adam, _ = step_outputs(
            fedavg(LS.loss, SERVER, 0.05, local_steps=5, server_optimizer=optax.adam(0.02)),
            1500,
        )
    gap = np.abs(adam.server_params[-1] - plain.server_params[-1]).max()
    start = np.abs(adam.server_params[0] - plain.server_params[-1]).max()
    assert gap < 1e-2 * start, f"FedAdam: {start:.3e} -> {gap:.3e} from FedAvg's fixed point"


# ---------------------------------------------------------------------------------------
# Partial participation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fedavg", "scaffold"])
def test_sampling_rate_untouched_clients_and_bytes(method):
    k, rounds = 3, 200
    if method == "fedavg":
        participation, vectors = 0.25, 1
        # A local optimizer with state, so "untouched" covers it.
        algorithm = fedavg(
            LS.loss,
            SERVER,
            optimizer=optax.sgd(0.05, momentum=0.9),
            local_steps=k,
            participation=participation,
        )
        client_fields = ("client_params", "client_opt_state")
    else:
        participation, vectors = 0.5, 2
        algorithm = scaffold(LS.loss, SERVER, 0.05, local_steps=k, participation=participation)
        client_fields = ("client_params", "client_control")
    initial, states, sent = step_outputs(algorithm, k * rounds)
    active = states.active.reshape(rounds, k, N)
    # Fixed for the whole round, exactly round(p n) clients per round.
    assert np.all(active == active[:, :1])
    active = active[:, 0]
    assert np.all(active.sum(1) == round(participation * N))
    # Each client is sampled at the configured rate (sd over 200 rounds <= 0.035).
    rate = active.mean(0)
    assert np.all(np.abs(rate - participation) < 0.12), f"per-client rates {rate}"
    # Non-sampled clients' states are bit-for-bit unchanged at every step.
    prev = jax.tree.map(lambda a, b: np.concatenate([np.asarray(a)[None], b[:-1]]), initial, states)
    idle = ~states.active
    changed = 0
    for field in client_fields:
        for now, before in zip(
            jax.tree.leaves(getattr(states, field)),
            jax.tree.leaves(getattr(prev, field)),
            strict=True,
        ):
            assert np.array_equal(now[idle], before[idle]), field
            changed += int(np.any(now[~idle] != before[~idle]))
    assert changed == len(client_fields)  # While the sampled ones do move.
    # Bytes: one (FedAvg) or two (SCAFFOLD) vectors per sampled client, at round ends.
    last = (np.arange(k * rounds) % k == k - 1)[:, None]
    np.testing.assert_array_equal(sent, np.where(last & states.active, vectors * VEC_BYTES, 0))


def test_bytes_through_the_run_loop_count_rounds_not_steps():
    # 10 steps per epoch; rounds of 3 steps end at global steps 2, 5, 8 | 11, 14, 17 |
    # 20, 23, 26, 29: 3, 3 and 4 rounds in epochs 1..3.
    history, _ = run(
        functools.partial(fedavg, learning_rate=0.05, local_steps=3, participation=0.25),
        sampling.iid(M),
        3,
    )
    per_round = 0.25 * VEC_BYTES  # The per-agent mean: 2 of 8 clients send a vector.
    sent = np.diff([row["bytes_sent"] for row in history])
    np.testing.assert_allclose(sent, np.array([3, 3, 4]) * per_round, rtol=1e-15)
    assert history[-1]["consensus"] == 0.0  # Metrics see the server model on every agent.


def test_one_and_eight_devices_agree_and_chunks_resume_mid_round():
    makes = {
        "fedavg": functools.partial(
            fedavg,
            optimizer=optax.sgd(0.05, momentum=0.5),
            local_steps=4,
            participation=0.5,
            weights=np.arange(1.0, N + 1),
            server_optimizer=optax.sgd(1.0, momentum=0.3),
        ),
        "scaffold": functools.partial(
            scaffold, learning_rate=0.05, local_steps=4, participation=0.375
        ),
    }
    sampler = sampling.reshuffle(M, batch_size=2)  # 5 steps per epoch: rounds straddle epochs.
    for name, make in makes.items():
        # One chunk of 6 epochs on 1 device; two chunks of 3 (split mid-round) on 8.
        h1, s1 = run(make, sampler, 6, n_devices=1, log_every=6)
        h8, s8 = run(make, sampler, 6, n_devices=8, log_every=3)
        np.testing.assert_array_equal(s1.active, s8.active, err_msg=name)
        chex.assert_trees_all_close(s1, s8, rtol=1e-12, atol=1e-14, custom_message=name)
        for key in ("dist_to_opt", "loss", "bytes_sent"):
            np.testing.assert_allclose(
                [r[key] for r in h1], [r[key] for r in h8], rtol=1e-10, err_msg=name
            )


def test_bad_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match=r"local_steps must be an integer >= 1, got 0"):
        fedavg(LS.loss, SERVER, 0.1, local_steps=0)
    with pytest.raises(ValueError, match=r"local_steps must be an integer >= 1, got 2.5"):
        scaffold(LS.loss, SERVER, 0.1, local_steps=2.5)
    for p in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"participation must be .* in \(0, 1\], got {p}"):
            fedavg(LS.loss, SERVER, 0.1, local_steps=1, participation=p)
    with pytest.raises(ValueError, match=r"mu must be a finite number >= 0, got -0.1"):
        fedprox(LS.loss, SERVER, 0.1, mu=-0.1, local_steps=1)
    with pytest.raises(ValueError, match="weights must be 8 finite positive numbers"):
        fedavg(LS.loss, SERVER, 0.1, local_steps=1, weights=np.ones(7))
    with pytest.raises(ValueError, match="server_learning_rate applies only without"):
        fedavg(
            LS.loss,
            SERVER,
            0.1,
            local_steps=1,
            server_optimizer=optax.sgd(1.0),
            server_learning_rate=0.5,
        )
    with pytest.raises(ValueError, match="learning_rate must be a positive float"):
        scaffold(LS.loss, SERVER, -0.1, local_steps=1)
    with pytest.raises(ValueError, match="exactly one of learning_rate"):
        fedavg(LS.loss, SERVER, local_steps=1)


# ---------------------------------------------------------------------------------------
# Heterogeneity measures
# ---------------------------------------------------------------------------------------


@functools.cache
def logistic_splits(n=4, m=48):
    """A label-sorted and an i.i.d. split of one l2-logistic problem (4 agents)."""
    data, _ = datasets.synthetic_logistic_regression(n * m, D, seed=0, dtype=np.float64)
    data = datasets.append_bias(datasets.normalize_rows(data))
    return {
        "sorted": partition.partition_label_sorted(data, n),
        "iid": partition.partition_iid(data, n, seed=0),
    }


LOGISTIC = objectives.logistic_regression(reg=0.2)  # Strongly convex: every f_i^* attained.


def test_heterogeneity_is_zero_on_identical_data():
    parts = logistic_splits()["sorted"]
    same = jax.tree.map(lambda a: np.repeat(a[1:2], 4, axis=0), parts)  # Agent 1's data for all.
    x_star, _ = optimum.solve(LOGISTIC.loss, same, np.zeros(D + 1))
    sigma = heterogeneity.optimal_value_gap(LOGISTIC.loss, same, np.zeros(D + 1))
    zeta = heterogeneity.gradient_dissimilarity(LOGISTIC.loss, same, x_star)
    # Measured: sigma = 5.6e-17 (rounding), zeta^2 = 4.0e-21 (= ||grad f(x*)||^2, solver accuracy).
    assert abs(sigma) < 1e-12, f"sigma_f^* = {sigma:.3e} on identical data"
    assert zeta < 1e-18, f"zeta^2 = {zeta:.3e} on identical data"


def test_heterogeneity_orders_label_sorted_above_iid():
    r = {
        name: heterogeneity.report(LOGISTIC.loss, parts, np.zeros(D + 1))
        for name, parts in logistic_splits().items()
    }
    for key in ("sigma_f_star", "zeta_sq"):
        assert 0 < r["iid"][key] < r["sorted"][key], f"{key}: {r}"
    # Measured: sigma_f^* 0.0123 (iid) < 0.270 (sorted); zeta^2 0.0073 < 0.239.
    for row in r.values():  # The pooled problem is the same, so is f^*.
        np.testing.assert_allclose(row["f_star"], r["iid"]["f_star"], rtol=1e-12)
        assert row["sigma_f_star"] == row["f_star"] - row["mean_local_f_star"]
