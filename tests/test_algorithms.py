"""DSGD, D-RR and the centralized baselines against the theory that is exact."""

import functools

import jax
import numpy as np
import pytest

from decentjax.algos import centralized, d_rr, dsgd, dsgd_momentum
from decentjax.core import (
    comm,
    datasets,
    loop,
    mesh,
    metrics,
    optimum,
    partition,
    sampling,
    schedules,
    topology,
    weights,
)
from decentjax.models import objectives

N, M, D = 8, 16, 5
REG = 0.2


@functools.cache
def problem():
    """Heterogeneous l2 logistic regression: label-sorted split, float64, known x*."""
    data, _ = datasets.synthetic_logistic_regression(N * M, D, seed=0, dtype=np.float64)
    data = datasets.append_bias(datasets.normalize_rows(data))
    parts = partition.partition_label_sorted(data, N)
    obj = objectives.logistic_regression(reg=REG)
    x_star, f_star = optimum.solve(obj.loss, parts, np.zeros(D + 1))
    x0 = np.random.default_rng(0).normal(size=D + 1) / np.sqrt(D + 1)
    return parts, obj, x_star, f_star, np.broadcast_to(x0, (N, D + 1)).copy()


def mixing(name="ring"):
    graph = topology.ring(N) if name == "ring" else topology.exponential(N)
    return weights.lazy(weights.metropolis_hastings(graph))


def run(make_algorithm, sampler, epochs, *, n_devices=1, graph="ring", log_every=None):
    """Runs a method on the problem; returns (history, final per-agent params)."""
    parts, obj, x_star, f_star, x0 = problem()
    op = comm.gossip(mixing(graph))
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    data = mesh.shard_agents(parts, agent_mesh)
    evaluate = metrics.make_evaluator(obj.loss, op, x_star=x_star, f_star=f_star)
    algorithm = make_algorithm(obj.loss, op)
    runner = loop.Runner(algorithm, sampler, agent_mesh, evaluate)
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    state, history = loop.train(
        runner, state, data, jax.random.key(1), epochs, log_every=log_every or epochs
    )
    return history, np.asarray(jax.device_get(algorithm.params(state)))


def errors(history):
    return np.array([row["dist_to_opt"] for row in history])


def test_dsgd_and_drr_errors_fall():
    for make, sampler in [(d_rr, sampling.reshuffle(M)), (dsgd, sampling.iid(M))]:
        err = errors(run(functools.partial(make, learning_rate=0.02), sampler, 30)[0])
        assert err[-1] < 0.1 * err[0], f"{make.__name__}: error {err[0]:.3g} -> {err[-1]:.3g}"


def test_drr_beats_dsgd_with_constant_step():
    # Exponential graph: the sampling noise, not the network, dominates DSGD's error.
    kw = dict(graph="exponential")
    e_rr = errors(
        run(functools.partial(d_rr, learning_rate=0.05), sampling.reshuffle(M), 150, **kw)[0]
    )
    e_sgd = errors(run(functools.partial(dsgd, learning_rate=0.05), sampling.iid(M), 150, **kw)[0])
    rr, sgd = e_rr[-50:].mean(), e_sgd[-50:].mean()
    assert rr < 0.8 * sgd, f"mean error over epochs 100-150: D-RR {rr:.3e}, DSGD {sgd:.3e}"


def test_drr_rate_with_decaying_step_is_inverse_square():
    theta, k = 4.0, 10.0  # alpha_t = theta / (m mu (t + K)), the paper's form.
    lr = schedules.epochwise(lambda t: theta / (M * REG * (t.astype(np.float64) + k)), M)
    err = errors(run(functools.partial(d_rr, learning_rate=lr), sampling.reshuffle(M), 400)[0])
    epochs = np.arange(len(err))
    slope = np.polyfit(np.log(epochs[100:]), np.log(err[100:]), 1)[0]
    # Measured: -1.87 over epochs 100..400 (DSGD on the same run: -1.57, tending to -1).
    assert -2.3 < slope < -1.7, f"D-RR log-log slope {slope:.3f}, paper: O(1/T^2) i.e. -2"


def test_same_run_on_one_and_eight_devices():
    make = functools.partial(d_rr, learning_rate=0.05)
    h1, x1 = run(make, sampling.reshuffle(M, batch_size=2), 6, n_devices=1, log_every=3)
    h8, x8 = run(make, sampling.reshuffle(M, batch_size=2), 6, n_devices=8, log_every=3)
    np.testing.assert_allclose(x1, x8, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(errors(h1), errors(h8), rtol=1e-10)
    # The gradient norm at x̄ too (it was n_devices^2 too large on 8 devices).
    grad_norms = [[row["grad_norm_sq"] for row in h] for h in (h1, h8)]
    np.testing.assert_allclose(*grad_norms, rtol=1e-10)
    # DSGD with i.i.d. sampling and the dense path too.
    make = functools.partial(dsgd, learning_rate=0.05, variant="cta")
    _, x1 = run(make, sampling.iid(M), 3, n_devices=1)
    _, x8 = run(make, sampling.iid(M), 3, n_devices=8)
    np.testing.assert_allclose(x1, x8, rtol=1e-12, atol=1e-14)


def _grad_matrix(obj, x, parts):
    return np.stack(
        [
            np.asarray(jax.grad(obj.loss)(x[i], jax.tree.map(lambda a, i=i: a[i], parts)))
            for i in range(N)
        ]
    )


@pytest.mark.parametrize("variant", ["atc", "cta"])
def test_dsgd_step_matches_dense_formula(variant):
    parts, obj, _, _, x0 = problem()
    alpha, w = 0.3, mixing()
    x0 = x0 + np.random.default_rng(1).normal(size=x0.shape)  # Not consensual.

    def numpy_step(x):
        g = _grad_matrix(obj, x, parts)
        return w @ (x - alpha * g) if variant == "atc" else w @ x - alpha * g

    parts_mesh = mesh.make_agent_mesh(N, 8)
    op = comm.gossip(w)
    algorithm = dsgd(obj.loss, op, alpha, variant=variant)
    evaluate = metrics.make_evaluator(obj.loss, op)
    runner = loop.Runner(algorithm, sampling.full_batch(M), parts_mesh, evaluate)
    data = mesh.shard_agents(parts, parts_mesh)
    state = runner.init(mesh.shard_agents(x0, parts_mesh), data, jax.random.key(0))
    state, _ = runner.run_epochs(state, data, jax.random.key(0), 0, 3)
    want = numpy_step(numpy_step(numpy_step(x0)))
    np.testing.assert_allclose(np.asarray(jax.device_get(state.params)), want, atol=1e-13)


@pytest.mark.parametrize("nesterov", [False, True])
def test_dsgd_momentum_matches_numpy_transcription(nesterov):
    # Lin et al. 2021's DSGDm baseline, transcribed: m <- beta m + g (m^0 = 0),
    # X <- W (X - alpha d) with d = m (heavy ball) or g + beta m (Nesterov).
    parts, obj, _, _, x0 = problem()
    alpha, beta, w = 0.3, 0.9, mixing()
    start = x0 + np.random.default_rng(2).normal(size=x0.shape)  # Not consensual.
    x, buffer = start, np.zeros_like(start)
    for _ in range(4):
        g = _grad_matrix(obj, x, parts)
        buffer = beta * buffer + g
        x = w @ (x - alpha * (g + beta * buffer if nesterov else buffer))

    agent_mesh = mesh.make_agent_mesh(N, 8)
    op = comm.gossip(w)
    algorithm = dsgd_momentum(obj.loss, op, alpha, momentum=beta, nesterov=nesterov)
    runner = loop.Runner(
        algorithm, sampling.full_batch(M), agent_mesh, metrics.make_evaluator(obj.loss, op)
    )
    data = mesh.shard_agents(parts, agent_mesh)
    state = runner.init(mesh.shard_agents(start, agent_mesh), data, jax.random.key(0))
    state, _ = runner.run_epochs(state, data, jax.random.key(0), 0, 4)
    # Float64, four steps of O(1) terms: agreement to summation order.
    np.testing.assert_allclose(np.asarray(jax.device_get(state.params)), x, atol=1e-12)
    assert algorithm.name == "dsgd-momentum"
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        dsgd_momentum(obj.loss, op, alpha, momentum=1.0)


def test_full_gradient_dsgd_is_biased_and_centralized_is_exact():
    # DSGD with exact gradients and a constant step converges to a point whose
    # distance to x* is O(alpha^2) on heterogeneous data; centralized GD is exact.
    h_dsgd, _ = run(
        functools.partial(dsgd, learning_rate=0.5), sampling.full_batch(M), 1500, log_every=500
    )
    h_gd, x_gd = run(
        functools.partial(centralized, learning_rate=0.5),
        sampling.full_batch(M),
        1500,
        log_every=500,
    )
    bias, exact = errors(h_dsgd)[-1], errors(h_gd)[-1]
    # x* itself is accurate to ~1e-10 (L-BFGS gtol 1e-11), hence the 1e-18 floor.
    assert exact < 1e-18, f"centralized gradient descent error {exact:.3e}"
    assert bias > 1e-6, f"DSGD error {bias:.3e} should stall at its bias"
    assert abs(errors(h_dsgd)[-1] - errors(h_dsgd)[-2]) < 1e-12 * bias + 1e-15  # A fixed point.
    assert h_gd[-1]["grad_norm_sq"] < 1e-20 and h_gd[-1]["consensus"] < 1e-28
    assert abs(h_gd[-1]["gap"]) < 1e-12


def test_centralized_equals_minibatch_sgd_on_pooled_data():
    parts, obj, _, _, x0 = problem()
    alpha = 0.2
    hist, x = run(functools.partial(centralized, learning_rate=alpha), sampling.full_batch(M), 2)
    want = x0[0]
    for _ in range(2):
        want = want - alpha * _grad_matrix(obj, np.broadcast_to(want, x0.shape), parts).mean(0)
    np.testing.assert_allclose(x, np.broadcast_to(want, x.shape), atol=1e-14)
    assert hist[-1]["bytes_sent"] == 2 * (D + 1) * 8  # One float64 gradient per step.


def test_bytes_sent_and_compiled_once():
    parts, obj, _, _, x0 = problem()
    op = comm.gossip(mixing())
    agent_mesh = mesh.make_agent_mesh(N, 8)
    runner = loop.Runner(
        d_rr(obj.loss, op, 0.01),
        sampling.reshuffle(M),
        agent_mesh,
        metrics.make_evaluator(obj.loss, op),
    )
    data = mesh.shard_agents(parts, agent_mesh)
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    _, hist = loop.train(runner, state, data, jax.random.key(1), 6, log_every=2)
    # One vector of D + 1 float64 per inner step, M steps per epoch.
    assert [row["bytes_sent"] for row in hist] == [e * M * (D + 1) * 8 for e in range(7)]
    # Three chunks of two epochs: one (ahead-of-time) compilation, none per chunk.
    assert len({row["compile_seconds"] for row in hist[1:]}) == 1
    assert len(runner._executables) == 1
    # The same program, lowered for inspection, without running it; still cached.
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    compiled = runner.lower_epochs(state, data, jax.random.key(1), 2).compile()
    assert runner.compile_epochs(state, data, jax.random.key(1), 2) == 0.0
    # Per device: its block of the state and of the data (not all n agents), plus the
    # run key (its raw uint32 data) and the int32 epoch counter, exactly; the state's
    # buffers are aliased to the output (donated).
    memory = compiled.memory_analysis()
    state_bytes = x0.nbytes // 8
    block_bytes = state_bytes + sum(a.nbytes for a in parts.values()) // 8
    scalar_bytes = jax.random.key_data(jax.random.key(1)).nbytes + np.dtype(np.int32).itemsize
    assert memory.argument_size_in_bytes == block_bytes + scalar_bytes
    assert memory.alias_size_in_bytes == state_bytes
    assert "while" in compiled.as_text()
    np.testing.assert_array_equal(jax.device_get(state.params), x0)  # not donated


def test_bad_inputs_are_clear_errors():
    parts, obj, *_ = problem()
    op = comm.gossip(mixing())
    with pytest.raises(ValueError, match="exactly one of learning_rate"):
        dsgd(obj.loss, op)
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        dsgd(obj.loss, op, -0.1)
    with pytest.raises(ValueError, match="variant must be"):
        dsgd(obj.loss, op, 0.1, variant="both")
    agent_mesh = mesh.make_agent_mesh(N, 8)
    runner = loop.Runner(
        dsgd(obj.loss, op, 0.1),
        sampling.iid(M + 1),
        agent_mesh,
        metrics.make_evaluator(obj.loss, op),
    )
    data = mesh.shard_agents(parts, agent_mesh)
    with pytest.raises(ValueError, match="built for 17 samples per agent but the data holds 16"):
        runner.init(mesh.shard_agents(np.zeros((N, D + 1)), agent_mesh), data, jax.random.key(0))


@pytest.mark.parametrize("batch_size", [None, 3])
def test_map_over_agents_gives_the_vmapped_run(batch_size):
    # lax.map over the agents (optionally 3 at a time: 8 agents leave a remainder) only
    # changes the schedule, on one device and on eight.
    from decentjax.core.algorithm import map_over_agents

    def mapped(loss_fn, op, **kw):
        return d_rr(map_over_agents(loss_fn, batch_size), op, **kw)

    sampler = sampling.reshuffle(M, batch_size=2)
    for devices in (1, 8):
        _, x_vmap = run(functools.partial(d_rr, learning_rate=0.05), sampler, 3, n_devices=devices)
        _, x_map = run(functools.partial(mapped, learning_rate=0.05), sampler, 3, n_devices=devices)
        np.testing.assert_allclose(x_map, x_vmap, rtol=1e-12, atol=1e-14)
