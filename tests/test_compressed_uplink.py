"""EF21, EControl and direct compression on federated uplinks (algos.compressed_uplink)."""

import functools
import math

import numpy as np
import pytest
from federated_steps import run_steps

from decentjax.algos import compressed_fedavg, econtrol, ef21, fedavg
from decentjax.core import comm, compression, weights
from decentjax.models import objectives

N, D, M = 8, 5, 10
LS = objectives.least_squares()
SERVER = comm.gossip(weights.averaging(N))
TOP2 = compression.top_k(k=2)
# Rounding of float64 sums over a few rounds of a well-scaled problem: 1e3 ulps.
RTOL = 1e3 * np.finfo(np.float64).eps


@functools.cache
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D)) * 3.0) + rng.normal(size=(N, M))
    return {"x": x, "y": y}, rng.normal(size=(N, D))


def np_grad(w, parts):
    """Per-client full gradients of 1/(2m) ||A_i w_i - b_i||^2, w of shape (N, D)."""
    a, b = parts["x"], parts["y"]
    r = np.einsum("nmd,nd->nm", a, w) - b
    return np.einsum("nmd,nm->nd", a, r) / M


def np_top2(v):
    """Top-2 of every row (ties keep the lower index, as jax.lax.top_k)."""
    out = np.zeros_like(v)
    idx = np.argsort(-np.abs(v), axis=1, kind="stable")[:, :2]
    np.put_along_axis(out, idx, np.take_along_axis(v, idx, 1), 1)
    return out


def full_batch_steps(algorithm, steps, n_devices):
    """Runs ``steps`` full-batch steps; returns (initial, states, per-agent bytes)."""
    parts, x0 = problem()
    return run_steps(algorithm, x0, parts, steps, n_devices)


@pytest.fixture(scope="module")
def econtrol_runs():
    """EControl, top-2, K = 2, 4 rounds, on 1 and on 8 devices."""
    alg = econtrol(LS.loss, SERVER, TOP2, 0.05, eta=0.3, local_steps=2, server_learning_rate=0.9)
    return {n: full_batch_steps(alg, 8, n) for n in (1, 8)}


@pytest.mark.parametrize("n_devices", [1, 8])
def test_ef21_one_local_step_is_the_papers_ef21(n_devices):
    """K = 1, SGD steps alpha: EF21 of Richtárik et al. (Alg. 1) with gamma = alpha."""
    parts, x0 = problem()
    alpha, rounds = 0.05, 6
    _, states, _ = full_batch_steps(ef21(LS.loss, SERVER, TOP2, alpha), rounds, n_devices)
    x = x0.mean(0)
    g_i = np_top2(np_grad(np.broadcast_to(x, (N, D)), parts))  # g_i^0 = C(grad f_i(x^0))
    for t in range(rounds):
        x = x - alpha * g_i.mean(0)  # x^{t+1} = x^t - gamma g^t
        np.testing.assert_allclose(states.server_params[t][0], x, rtol=RTOL)
        np.testing.assert_allclose(states.shift[t], alpha * g_i, rtol=RTOL, atol=1e-15)
        g_i = g_i + np_top2(np_grad(np.broadcast_to(x, (N, D)), parts) - g_i)
    # The compressed memory really differs from the gradient (top-2 of 5 loses mass).
    assert np.abs(g_i - np_grad(np.broadcast_to(x, (N, D)), parts)).max() > 1e-3


def test_econtrol_with_local_steps_matches_numpy_on_one_and_eight_devices(econtrol_runs):
    parts, x0 = problem()
    alpha, eta, eta_g, k = 0.05, 0.3, 0.9, 2
    x = x0.mean(0)
    e, h = np.zeros((N, D)), np.zeros((N, D))
    h_server = np.zeros(D)
    for r in range(4):
        y = np.broadcast_to(x, (N, D)).copy()
        for _ in range(k):
            y = y - alpha * np_grad(y, parts)
        d = x - y
        delta = np_top2(eta * e + d - h)
        e = e + d - h - delta
        h = h + delta
        h_server = h_server + delta.mean(0)
        x = x - eta_g * h_server
        for n_devices in (1, 8):
            states = econtrol_runs[n_devices][1]
            end = r * k + k - 1
            np.testing.assert_allclose(states.server_params[end][0], x, rtol=RTOL)
            np.testing.assert_allclose(states.error[end], e, rtol=RTOL, atol=1e-13)
            np.testing.assert_allclose(states.server_shift[end][0], h.mean(0), rtol=RTOL)
    one, eight = econtrol_runs[1][1], econtrol_runs[8][1]
    # Same draws; only the order of the cross-device sums differs.
    np.testing.assert_allclose(one.server_params, eight.server_params, rtol=RTOL, atol=1e-13)


def test_bytes_are_the_compressors_bits_once_per_round(econtrol_runs):
    sent = econtrol_runs[8][2]  # (steps, N)
    per_message = 2 * (64 + math.ceil(math.log2(D))) / 8  # top-2 of 5 float64s: 16.75 B
    assert per_message == compression.message_bits(TOP2, np.zeros((N, D))) / 8
    np.testing.assert_array_equal(sent[0::2], 0.0)  # Nothing inside a round,
    np.testing.assert_array_equal(sent[1::2], per_message)  # one message at its end.


@pytest.mark.parametrize("uplink", ["ef21", "econtrol"])
def test_identity_compressor_is_fedavg(uplink):
    identity = compression.identity()
    alg = compressed_fedavg(LS.loss, SERVER, identity, 0.05, local_steps=3, uplink=uplink, eta=0.5)
    _, states, sent = full_batch_steps(alg, 9, 8)
    _, ref, ref_sent = full_batch_steps(fedavg(LS.loss, SERVER, 0.05, local_steps=3), 9, 8)
    np.testing.assert_allclose(states.server_params, ref.server_params, rtol=RTOL)
    np.testing.assert_array_equal(sent, ref_sent)  # The identity's bits: d x 64.


def test_direct_identity_is_fedavg_and_ef21_partial_participation_keeps_absent_memories():
    identity = compression.identity()
    kw = dict(local_steps=2, participation=0.5)
    _, direct, _ = full_batch_steps(
        compressed_fedavg(LS.loss, SERVER, identity, 0.05, uplink="direct", **kw), 6, 8
    )
    _, ref, _ = full_batch_steps(fedavg(LS.loss, SERVER, 0.05, **kw), 6, 8)
    np.testing.assert_allclose(direct.server_params, ref.server_params, rtol=RTOL)
    # EF21-PP: the server's g stays the mean of all n clients' g_i; absent ones keep g_i.
    _, pp, sent = full_batch_steps(ef21(LS.loss, SERVER, TOP2, 0.05, **kw), 6, 8)
    for end in (1, 3, 5):
        np.testing.assert_allclose(pp.server_shift[end][0], pp.shift[end].mean(0), rtol=RTOL)
        absent = ~pp.active[end]
        before = pp.shift[end - 2] if end > 1 else np.zeros((N, D))
        np.testing.assert_array_equal(pp.shift[end][absent], before[absent])
        assert sent[end].sum() == (N // 2) * 16.75


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="eta must be a number in"):
        econtrol(LS.loss, SERVER, TOP2, 0.1, eta=1.5)
    with pytest.raises(ValueError, match="uplink must be"):
        compressed_fedavg(LS.loss, SERVER, TOP2, 0.1, uplink="ef")
    with pytest.raises(ValueError, match="compressor must be"):
        ef21(LS.loss, SERVER, "top_k", 0.1)
    with pytest.raises(ValueError, match="local_steps"):
        ef21(LS.loss, SERVER, TOP2, 0.1, local_steps=0)


def test_configs_resolve_the_federated_compressed_and_zeroth_order_names():
    from decentjax.launch import experiment
    from decentjax.launch.configs import compressed_uplink, fedkseed

    made = {}
    for config in (compressed_uplink.get_config("runlocal"), fedkseed.get_config("runlocal")):
        experiment.validate(config)
        for name in config.algorithms:
            assert experiment.sampler_of(config, name) == ("iid", False)  # Server, no graph.
            made[name] = experiment.build_algorithm(config, name, LS.loss, SERVER, 0.1).name
    assert made["ef21@top10"] == "ef21" and made["econtrol@top1"] == "econtrol"
    assert made["fedavg_compressed@top10"] == "fedavg_compressed"
    assert made["fedkseed"] == made["fedkseed_pro"] == "fedkseed"
    config = compressed_uplink.get_config("runlocal")
    del config.federated
    with pytest.raises(ValueError, match="needs a config.federated section"):
        experiment.validate(config)
