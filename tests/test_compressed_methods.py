"""Compressed gossip, CHOCO-SGD, LEAD and CEDAS against the exact references; defaults."""

import functools

import jax
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import (
    comm,
    compressed_defaults,
    compression,
    directed,
    loop,
    mesh,
    metrics,
    sampling,
    schedules,
    topology,
    weights,
)
from decentjax.core import time_varying as tv
from decentjax.core.compressed_gossip import compressed_gossip
from decentjax.models import objectives

N, D, M = 8, 5, 10
LS = objectives.least_squares()


@functools.cache
def problem(d=D):
    """Heterogeneous least squares in dimension ``d`` with its exact minimiser."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, d))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, d)) * 3.0) + rng.normal(size=(N, M))
    a, b = x.reshape(-1, d), y.reshape(-1)
    return {"x": x, "y": y}, np.linalg.solve(a.T @ a, a.T @ b)


def ring():
    return weights.metropolis_hastings(topology.ring(N))


def run(algorithm, sampler, epochs, *, n_devices=1, x0=None, w=None, d=D):
    parts, x_star = problem(d)
    op = comm.gossip(ring() if w is None else w)
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    data = mesh.shard_agents(parts, agent_mesh)
    runner = loop.Runner(
        algorithm, sampler, agent_mesh, metrics.make_evaluator(LS.loss, op, x_star=x_star)
    )
    x0 = np.broadcast_to(np.linspace(-1, 1, d), (N, d)).copy() if x0 is None else x0
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    state, history = loop.train(
        runner, state, data, jax.random.key(1), epochs, log_every=max(1, epochs // 2)
    )
    return history, np.asarray(jax.device_get(algorithm.params(state))), state


def assert_dual_sums_to_zero(state, x, steps):
    """sum_i z_i = 0 up to rounding.

    Rounding makes sum_i (h_i - h^w_i) drift by ~n eps max|x| per step, and the dual
    integrates that drift, so the bound grows as steps^2 (measured: 7e-14, 1.3e-12,
    3.1e-11 after 250, 1000, 4000 full-gradient steps); a wrong update would be O(1).
    """
    dual = np.asarray(jax.device_get(state.dual))
    worst = np.abs(dual.sum(axis=0)).max()
    scale = max(np.abs(x).max(), np.abs(dual).max())
    bound = steps**2 * N * np.finfo(np.float64).eps * scale
    assert worst < bound, f"max |sum_i z_i| = {worst:.3e}, rounding bound {bound:.3e}"
    assert np.abs(dual).max() > 1e3 * worst  # The duals themselves are not zero.


def dist(x):
    return float(np.linalg.norm(x - problem()[1][None]))


@pytest.mark.parametrize("mode", ["ef21", "ef"])
@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (algos.dsgd, {"learning_rate": 0.05}),
        (algos.gradient_tracking, {"learning_rate": 0.05}),
        (algos.exact_diffusion, {"learning_rate": 0.05}),
    ],
)
def test_identity_compression_with_unit_step_is_exact_gossip(mode, factory, kwargs):
    # Exact diffusion needs a positive semidefinite W: the lazy ring.
    base = comm.gossip(weights.lazy(ring()) if factory is algos.exact_diffusion else ring())
    x0 = np.random.default_rng(1).normal(size=(N, D))
    plain = factory(LS.loss, base, **kwargs)
    comp = algos.compressed(factory, LS.loss, base, compression.identity(), mode=mode, **kwargs)
    _, x_plain, _ = run(plain, sampling.iid(M, 2), 3, x0=x0)
    h, x_comp, _ = run(comp, sampling.iid(M, 2), 3, x0=x0)
    np.testing.assert_allclose(x_comp, x_plain, rtol=0, atol=1e-12)


def test_compressed_gossip_counts_compressor_bits():
    base = comm.gossip(ring())
    top = compression.top_k(2)
    alg = algos.compressed(algos.dsgd, LS.loss, base, top, consensus_step=0.5, learning_rate=0.05)
    history, *_ = run(alg, sampling.iid(M), 2)
    per_step = top.bits(D, 64) / 8  # 2 values of 64 bits + 2 indices of 3 bits.
    assert per_step == (2 * 64 + 2 * 3) / 8
    assert [r["bytes_sent"] for r in history] == [0, M * per_step, 2 * M * per_step]


def test_mix_outside_a_compressed_step_is_an_error():
    op = compressed_gossip(comm.gossip(ring()), compression.identity())
    with pytest.raises(RuntimeError, match="outside a compressed step"):
        op.mix(np.zeros((N, D)))
    with pytest.raises(ValueError, match="consensus_step must be in"):
        compressed_gossip(comm.gossip(ring()), compression.identity(), consensus_step=0.0)


def test_cedas_with_identity_is_edas_step_for_step():
    w = ring()
    sched = schedules.inverse_epoch(1.0, 0.5, 8.0, steps_per_epoch=1)  # Time-varying step.
    x0 = np.random.default_rng(2).normal(size=(N, D))
    cedas = algos.cedas(
        LS.loss, comm.gossip(w), compression.identity(), sched, consensus_step=1.0, averaging=1.0
    )
    edas = algos.exact_diffusion(LS.loss, comm.gossip(weights.lazy(w)), sched)
    for epochs in (1, 2, 25):
        _, x_c, _ = run(cedas, sampling.full_batch(M), epochs, x0=x0)
        _, x_e, _ = run(edas, sampling.full_batch(M), epochs, x0=x0, w=weights.lazy(w))
        np.testing.assert_allclose(x_c, x_e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["cedas", "lead"])
def test_exact_with_unbiased_compression_and_full_gradients(name):
    rand = compression.rand_k(2)  # omega = 1.5
    factory = getattr(algos, name)
    alg = factory(LS.loss, comm.gossip(ring()), rand, 0.05, consensus_step=0.2)
    history, x, state = run(alg, sampling.full_batch(M), 4000)
    assert dist(x) < 1e-8, f"{name}: ||X - 1 x*|| = {dist(x):.3e} after 4000 steps"
    assert_dual_sums_to_zero(state, x, steps=4000)


def test_compressed_dsgd_and_choco_do_not_reach_x_star():
    rand = compression.rand_k(2)
    choco = algos.choco_sgd(
        LS.loss, comm.gossip(ring()), compression.contractive(rand), 0.05, consensus_step=0.4
    )
    _, x, _ = run(choco, sampling.full_batch(M), 4000)
    assert dist(x) > 1e-2, f"CHOCO-SGD ||X - 1 x*|| = {dist(x):.3e} should stall at a bias"


def test_cedas_dual_sum_stays_zero_with_stochastic_gradients():
    alg = algos.cedas(LS.loss, comm.gossip(ring()), compression.qsgd(4), 0.02, consensus_step=0.5)
    _, x, state = run(alg, sampling.iid(M, 2), 20)
    assert_dual_sums_to_zero(state, x, steps=20 * M // 2)


@pytest.mark.parametrize(
    "build",
    [
        lambda op: algos.cedas(LS.loss, op, compression.qsgd(4), 0.02, consensus_step=0.5),
        lambda op: algos.lead(LS.loss, op, compression.rand_k(2), 0.02, consensus_step=0.5),
        lambda op: algos.choco_sgd(LS.loss, op, compression.top_k(2), 0.02, consensus_step=0.5),
        lambda op: algos.compressed(
            algos.gradient_tracking,
            LS.loss,
            op,
            compression.top_k(2),
            consensus_step=0.5,
            mode="ef",
            learning_rate=0.02,
        ),
    ],
)
def test_one_and_eight_devices_agree(build):
    x0 = np.random.default_rng(0).normal(size=(N, D))
    alg = build(comm.gossip(ring()))
    h1, x1, _ = run(alg, sampling.iid(M, 2), 2, x0=x0, n_devices=1)
    h8, x8, _ = run(alg, sampling.iid(M, 2), 2, x0=x0, n_devices=8)
    np.testing.assert_allclose(x1, x8, rtol=0, atol=1e-12)
    assert [r["bytes_sent"] for r in h1] == [r["bytes_sent"] for r in h8]


def test_lead_family_rejects_biased_compressors_and_bad_steps():
    op = comm.gossip(ring())
    with pytest.raises(ValueError, match="assumes an unbiased compressor"):
        algos.cedas(LS.loss, op, compression.top_k(2), 0.1)
    with pytest.raises(ValueError, match="averaging must be in"):
        algos.lead(LS.loss, op, compression.rand_k(2), 0.1, averaging=2.0)
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        algos.cedas(LS.loss, op, compression.rand_k(2), 0.0)


def test_ef21_mode_rejects_time_varying_graphs():
    from decentjax.core import time_varying

    op = time_varying.link_failures(comm.gossip(ring()), 0.2)
    with pytest.raises(ValueError, match="mode='ef21' needs a fixed mixing matrix"):
        compressed_gossip(op, compression.identity())
    compressed_gossip(op, compression.identity(), mode="ef")  # Error feedback is fine.


# --------------------------------------------------------------------------------------
# Default consensus steps (core.compressed_defaults) under heavy compression.
#
# Float64, full gradients, d = 20 on 8 agents, step 0.1 / L. The old defaults (LEAD /
# CEDAS: gamma = 1; CPP: gamma = beta = 1/(1 + omega)) diverge on every convergence
# case below (NaN, which loop.train raises on). Tolerance: with full gradients the
# methods converge linearly to x*, so each case must cut its initial error
# ||X^0 - 1 x*^T||_F by three decades within its step budget; rounding floors are
# below 1e-7 here.
# --------------------------------------------------------------------------------------

D_DEFAULTS = 20  # rand_k(2): omega = 9; rand_k(5): omega = 3; qsgd(1): omega = sqrt(20).
DECADES = 3


def errors(algorithm, steps):
    """||X - 1 x*^T||_F from X^0 = 0 at the start, after steps/2 and after ``steps``."""
    _, x_star = problem(D_DEFAULTS)
    zeros = np.zeros((N, D_DEFAULTS))
    history, x, _ = run(algorithm, sampling.full_batch(M), steps, x0=zeros, d=D_DEFAULTS)
    assert np.isfinite(x).all()
    half = np.sqrt(N * history[steps // 2 - 1]["dist_to_opt"])
    return [float(np.linalg.norm(x_star)) * np.sqrt(N), half, np.linalg.norm(x - x_star[None])]


def lipschitz():
    return max(objectives.smoothness_least_squares(xi) for xi in problem(D_DEFAULTS)[0]["x"])


def assert_converges(name, errs, steps):
    first, half, final = errs
    assert final < half < first, f"{name}: errors {errs} do not decrease"
    assert final <= 10.0**-DECADES * first, (
        f"{name}: ||X - 1 x*|| = {final:.3e} after {steps} steps, want <= "
        f"1e-{DECADES} x {first:.3e}"
    )


# (compressor, steps): omega = 9, 3 and QSGD with one level (omega = sqrt(20) = 4.47).
UNDIRECTED = [
    (compression.rand_k(2), 8000),
    (compression.rand_k(5), 2000),
    (compression.qsgd(1), 4000),
]


@pytest.mark.parametrize("method", ["cedas", "lead"])
@pytest.mark.parametrize("compressor, steps", UNDIRECTED, ids=lambda v: getattr(v, "name", v))
def test_lead_and_cedas_defaults_converge(method, compressor, steps):
    algorithm = getattr(algos, method)(LS.loss, comm.gossip(ring()), compressor, 0.1 / lipschitz())
    assert_converges(f"{method}[{compressor.name}]", errors(algorithm, steps), steps)


@pytest.mark.parametrize(
    "compressor, steps", [(compression.rand_k(5), 2000), (compression.rand_k(2), 12000)]
)
def test_cpp_defaults_converge_on_an_unbalanced_digraph(compressor, steps):
    adjacency = directed.unbalanced_example(N)
    pull = comm.gossip(directed.row_stochastic(adjacency), doubly_stochastic=False)
    push = comm.gossip(directed.column_stochastic(adjacency), doubly_stochastic=False)
    algorithm = algos.cpp(LS.loss, pull, push, 0.1 / lipschitz(), compressor=compressor)
    assert_converges(f"cpp[{compressor.name}]", errors(algorithm, steps), steps)


# algos.compressed / compressed_gossip: the old default gamma = 1 diverges here (GT,
# contractive rand-2 of d = 20, omega = 9, and top-2, delta = 0.1; measured largest
# stable gamma 0.15 and 0.43 in ef21 mode); the rule gives 1 / (9 * 4/3) = 0.083.
@pytest.mark.parametrize(
    "compressor",
    [compression.contractive(compression.rand_k(2)), compression.top_k(2)],
    ids=lambda c: c.name,
)
def test_compressed_gossip_default_converges_at_omega_9(compressor):
    steps = 2000
    algorithm = algos.compressed(
        algos.gradient_tracking,
        LS.loss,
        comm.gossip(ring()),
        compressor,
        learning_rate=0.1 / lipschitz(),
    )
    assert_converges(algorithm.name, errors(algorithm, steps), steps)


def test_compressed_gossip_default_rule_and_unbiased_compressors():
    x = np.zeros((N, D_DEFAULTS))
    op = compressed_gossip(comm.gossip(ring()), compression.top_k(2))
    assert op.step_for(x) == pytest.approx(1 / (9 * 4 / 3))  # CHOCO rule: c = 1, p = 1.
    ef = compressed_gossip(comm.gossip(ring()), compression.top_k(2), mode="ef")
    assert ef.step_for(x) == pytest.approx(1 / (4 * 9 * 4 / 3))
    assert compressed_gossip(comm.gossip(ring()), compression.identity()).step_for(x) == 1.0
    explicit = compressed_gossip(comm.gossip(ring()), compression.top_k(2), consensus_step=0.7)
    assert explicit.step_for(x) == 0.7
    # Unbiased, omega >= 1: E||e - C(e)||^2 = omega ||e||^2, so the memory grows for
    # every gamma (measured down to 0.01, ef21 and ef): the default refuses.
    unbiased = compressed_gossip(comm.gossip(ring()), compression.rand_k(2))
    with pytest.raises(ValueError, match=r"unbiased rand_k\(k=2\) \(omega = 9 >= 1 at d = 20\)"):
        unbiased.step_for(x)


# B-CPP (p = 1/2, the directed config's) with its default p * gamma_CPP, at omega = 3 and
# 9. Its rounds refresh the references only every 1/p steps, so it is slower than CPP
# and needs a smaller step (alpha = 0.02 / L): measured 8.7e-3 and 4.7e-2 of the start
# after 3000 rounds; gamma_CPP at p = 0.2 diverges at both (algos.b_cpp_sync's docstring).
@pytest.mark.parametrize(
    "compressor, decades", [(compression.rand_k(5), 2), (compression.rand_k(2), 1)]
)
def test_b_cpp_defaults_converge_on_an_unbalanced_digraph(compressor, decades):
    steps = 4000
    adjacency = directed.unbalanced_example(N)
    pull = comm.gossip(directed.row_stochastic(adjacency), doubly_stochastic=False)
    push = comm.gossip(directed.column_stochastic(adjacency), doubly_stochastic=False)
    algorithm = algos.b_cpp_sync(
        LS.loss, pull, push, 0.02 / lipschitz(), compressor=compressor, p=0.5
    )
    first, half, final = errors(algorithm, steps)
    assert final < half < first, (first, half, final)
    assert final <= 10.0**-decades * first, (first, half, final)


def test_the_rule():
    lead, cpp = compressed_defaults.LEAD, compressed_defaults.CPP
    assert compressed_defaults.consensus_step(0.0, 1.0, lead) == 1.0  # Identity: exact.
    assert compressed_defaults.consensus_step(9.0, 2 / 3, lead) == pytest.approx(1 / 216)
    assert compressed_defaults.consensus_step(9.0, 1.2, cpp) == pytest.approx(1 / 21.6)
    steps = [compressed_defaults.consensus_step(w, 1.0, lead) for w in (0.1, 1, 3, 9)]
    assert steps == sorted(steps, reverse=True)
    w = weights.metropolis_hastings(topology.ring(N))  # lambda_min = -1/3.
    assert compressed_defaults.spread(w) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="omega must be finite and >= 0"):
        compressed_defaults.consensus_step(float("inf"), 1.0, lead)


def test_spread_of_an_operator_is_the_largest_over_its_rounds():
    # Rounds P1, P2 (the two perfect matchings of the ring, weights 1) and I: each
    # ||I - P_i||_2 = 2, while their period average, the uniform ring, has 4/3.
    p1, p2 = np.zeros((N, N)), np.zeros((N, N))
    for i in range(0, N, 2):
        p1[i, i + 1] = p1[i + 1, i] = 1.0
        j, k = i + 1, (i + 2) % N
        p2[j, k] = p2[k, j] = 1.0
    seq = tv.sequence([p1, p2, np.eye(N)], symmetric=True)
    assert compressed_defaults.spread(seq.matrix) == pytest.approx(4 / 3)
    assert compressed_defaults.operator_spread(seq) == pytest.approx(2.0)
    # Symmetric failures only raise eigenvalues: the base decides.
    op = comm.gossip(ring())
    failing = tv.link_failures(op, 0.3)
    assert compressed_defaults.operator_spread(failing) == compressed_defaults.spread(ring())
    # Pull failures: || |I - R| ||_2, which bounds every round's ||I - R_k||_2.
    r = directed.row_stochastic(directed.unbalanced_example(N))
    pulled = tv.link_failures(comm.gossip(r, doubly_stochastic=False), 0.3, kind="pull")
    bound = compressed_defaults.operator_spread(pulled)
    assert bound == pytest.approx(np.linalg.norm(np.abs(np.eye(N) - r), 2))
    for k in range(20):
        round_w = tv.round_matrix(pulled, tv.round_key(jax.random.key(k)))
        assert compressed_defaults.spread(round_w) <= bound + 1e-12


def test_identity_default_is_the_uncompressed_method_step_for_step():
    op, identity = comm.gossip(ring()), compression.identity()
    _, default, _ = run(algos.cedas(LS.loss, op, identity, 0.05), sampling.full_batch(M), 40)
    explicit = algos.cedas(LS.loss, op, identity, 0.05, consensus_step=1.0)
    _, x, _ = run(explicit, sampling.full_batch(M), 40)
    np.testing.assert_array_equal(default, x)
