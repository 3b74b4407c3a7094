"""FedAvg-M / SCAFFOLD-M: NumPy on the same cohorts, cohort = all-client, beta = 1 is the base.

The problem and helpers of tests/test_cohort.py: heterogeneous least squares, full-batch
local steps, float64, tolerances 1e-12 relative to the iterates' scale.
"""

import functools

import jax
import numpy as np
import pytest
from test_cohort import LR, LS, ROUNDS, D, K, M, N, _data, _grad, _run

from decentjax import algos
from decentjax.core import comm, loop, mesh, metrics, sampling, weights
from decentjax.launch import experiment
from decentjax.launch.configs import federated_momentum

BETA = 0.3
COHORT = {
    "fedavg": algos.cohort_fedavg_client_momentum,
    "scaffold": algos.cohort_scaffold_client_momentum,
}
ALL_CLIENTS = {
    "fedavg": algos.fedavg_client_momentum,
    "scaffold": algos.scaffold_client_momentum,
}


def _reference(method, cohorts, beta=BETA, server_lr=1.0):
    """NumPy rounds of FedAvg-M / SCAFFOLD-M on the given cohorts (-1 = padding)."""
    data = _data()
    x, g = np.linspace(-1.0, 1.0, D), np.zeros(D)
    c, c_i = np.zeros(D), np.zeros((N, D))
    for members in cohorts:
        s = [int(i) for i in members if i >= 0]
        deltas, dcs = [], []
        for i in s:
            y, grad_sum = x.copy(), np.zeros(D)
            for _ in range(K):
                grad = _grad(y, data["x"][i], data["y"][i])
                d = grad - c_i[i] + c if method == "scaffold" else grad
                grad_sum += LR * grad
                y = y - LR * (beta * d + (1 - beta) * g)
            deltas.append(y - x)
            if method == "scaffold":
                c_plus = grad_sum / (K * LR)
                dcs.append(c_plus - c_i[i])
                c_i[i] = c_plus
        mean = sum(deltas) / len(s)
        g = -mean / (K * LR)
        x = x + server_lr * mean
        c = c + sum(dcs) / N if dcs else c
    return x, c_i


@functools.cache
def _all_clients(method, beta, participation, n_devices, base=False):
    """The all-client method (or, ``base``, FedAvg / SCAFFOLD), ROUNDS full-batch rounds."""
    op = comm.gossip(weights.averaging(N))
    kw = dict(local_steps=K, participation=participation)
    if base:
        algorithm = getattr(algos, method)(LS.loss, op, LR, **kw)
    else:
        algorithm = ALL_CLIENTS[method](LS.loss, op, LR, momentum=beta, **kw)
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    runner = loop.Runner(
        algorithm, sampling.full_batch(M), agent_mesh, metrics.make_evaluator(LS.loss, op)
    )
    data = mesh.shard_agents(_data(), agent_mesh)
    x0 = np.broadcast_to(np.linspace(-1.0, 1.0, D), (N, D)).copy()
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    state, history = loop.train(runner, state, data, jax.random.key(1), K * ROUNDS, log_every=K)
    return np.asarray(jax.device_get(algorithm.params(state)))[0], history


# FedAvg-M on one device, SCAFFOLD-M on eight: both device counts meet the same NumPy
# reference, each case compiling one run.
DEVICES = {"fedavg": 1, "scaffold": 8}


@pytest.mark.parametrize("method", ["fedavg", "scaffold"])
def test_partial_cohorts_equal_numpy_on_the_same_draws(method):
    # A cohort of 5 on 8 devices is padded with 3 dummy members that must change nothing.
    kw = {"weights": "uniform", "server_learning_rate": 1.5} if method == "fedavg" else {}
    algorithm = COHORT[method](LS.loss, N, 5, LR, batch_size=M, local_steps=K, momentum=BETA, **kw)
    got, out, state, _ = _run(algorithm, DEVICES[method])
    server_lr = kw.get("server_learning_rate", 1.0)
    want, want_ci = _reference(method, out["cohort"], server_lr=server_lr)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    if method == "scaffold":
        clients = jax.device_get(state.clients)
        np.testing.assert_allclose(clients, want_ci, rtol=1e-11, atol=1e-13)


def test_full_cohort_equals_the_all_client_method_and_numpy():
    # SCAFFOLD-M runs every branch FedAvg-M has (momentum, g, masking) plus the control
    # variates; the all-client run is on eight devices, the cohort run on one.
    cohort = algos.cohort_scaffold_client_momentum(
        LS.loss, N, N, LR, batch_size=M, local_steps=K, momentum=BETA
    )
    got, out, *_ = _run(cohort)
    want, history = _all_clients("scaffold", BETA, 1.0, 8)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(got, _reference("scaffold", out["cohort"])[0], rtol=1e-12)
    # Two vectors up per client per round, D float64 each.
    assert history[-1]["bytes_sent"] == ROUNDS * 2 * D * 8


def test_beta_one_is_fedavg_under_partial_participation():
    got, history = _all_clients("fedavg", 1.0, 0.5, 1)
    want, base_history = _all_clients("fedavg", None, 0.5, 1, base=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    assert [r["bytes_sent"] for r in history] == [r["bytes_sent"] for r in base_history]


def test_momentum_out_of_range_is_a_clear_error():
    op = comm.gossip(weights.averaging(N))
    for bad in (0.0, 1.5, True):
        with pytest.raises(
            ValueError, match=r"momentum must be a number in \(0, 1\] \(the weight beta"
        ):
            algos.fedavg_client_momentum(LS.loss, op, LR, local_steps=K, momentum=bad)
        with pytest.raises(
            ValueError, match=r"momentum must be a number in \(0, 1\] \(the weight beta"
        ):
            algos.cohort_scaffold_client_momentum(
                LS.loss, N, 4, LR, batch_size=M, local_steps=K, momentum=bad
            )


def test_federated_momentum_config_resolves_its_methods():
    config = federated_momentum.get_config("beta=0.2,participation=0.5,runlocal")
    experiment.validate(config)
    op = comm.gossip(weights.averaging(N))
    for name in ("fedavg_client_momentum", "scaffold_client_momentum"):
        assert experiment.build_algorithm(config, name, LS.loss, op, LR).name in (
            "fedavg-m",
            "scaffold-m",
        )
    assert config.federated.momentum == 0.2 and config.data.alpha == 0.1
    convex = federated_momentum.get_config("convex")
    experiment.validate(convex)
    assert (convex.objective.name, convex.data.alpha, convex.num_epochs) == ("logistic", 0.1, 500)
