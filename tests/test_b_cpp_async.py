"""Asynchronous B-CPP (algos/push_compressed_async.py): wake-ups, R_k / C_k, invariants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_push import LS, D, N, least_squares_problem, local_smoothness

from decentjax import algos
from decentjax.algos import push_compressed_async as bca
from decentjax.core import comm, compression, directed, mesh
from decentjax.core.algorithm import Batch

AGENTS = jax.P(mesh.AGENT_AXIS)
EPS = np.finfo(np.float64).eps
GRAPH = directed.unbalanced_example(N)
R = directed.row_stochastic(GRAPH)
C = directed.column_stochastic(GRAPH)
PULL = comm.gossip(R, doubly_stochastic=False)
PUSH = comm.gossip(C, doubly_stochastic=False)
STRAGGLERS = bca.straggler_compute_time(N, 0.25, 4.0, seed=0)  # 2 of 8 agents, 4x slower.


@functools.cache
def problem():
    """test_push's heterogeneous least squares: (data, x*, x0, L)."""
    parts, x_star, _ = least_squares_problem()
    x0 = np.random.default_rng(4).normal(size=(N, D))
    return parts, x_star, x0, local_smoothness(parts)


def ticks(algorithm, num_ticks, n_devices=1):
    """States before and after every tick (leading axis ``num_ticks + 1``) and the
    per-tick metrics ``(num_ticks, n)``: bytes sent and ``sim_time``."""
    data, _, x0, _ = problem()
    agent_mesh = mesh.make_agent_mesh(N, n_devices)

    def local(x, data):
        state = algorithm.init(x, data, jax.random.key(0))

        def one(state, k):
            batch = Batch(data, jnp.int32(0), k)
            state, metrics = algorithm.step(state, batch, jax.random.fold_in(jax.random.key(1), k))
            sent = jnp.broadcast_to(metrics["bytes_sent"], (x.shape[0],))
            clock = jnp.broadcast_to(metrics.get("sim_time", jnp.zeros(())), (x.shape[0],))
            return state, (state, sent, clock)

        ks = jnp.arange(num_ticks, dtype=jnp.int32)
        return state, jax.lax.scan(one, state, ks)[1]

    out_specs = (AGENTS, (jax.P(None, mesh.AGENT_AXIS),) * 3)
    fn = jax.shard_map(local, mesh=agent_mesh, in_specs=AGENTS, out_specs=out_specs)
    first, (states, sent, clock) = jax.device_get(
        jax.jit(fn)(*(mesh.shard_agents(a, agent_mesh) for a in (x0, data)))
    )
    states = jax.tree.map(lambda a, s: np.concatenate([np.asarray(a)[None], s]), first, states)
    return states, np.asarray(sent), np.asarray(clock)


def test_every_agent_awake_is_cpp_step_for_step():
    rand_k = compression.rand_k(2)
    lr = 0.1 / problem()[3]
    steps = 40
    a, sent_a, clock = ticks(
        algos.b_cpp_async(LS.loss, PULL, PUSH, lr, compressor=rand_k, wake_prob=1.0), steps
    )
    c, sent_c, _ = ticks(algos.cpp(LS.loss, PULL, PUSH, lr, compressor=rand_k), steps)
    # Same compressor draws; CPP keeps C H_y as its own sum, async B-CPP mixes H_y + Q_y,
    # so the two agree to rounding (measured 1e-15), not bit for bit.
    np.testing.assert_allclose(a.params, c.params, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.tracker, c.tracker, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sent_a, sent_c)  # The first tick sends no y-message.
    np.testing.assert_array_equal(a.wakes[-1], np.full(N, steps))
    np.testing.assert_allclose(clock[:, 0], np.arange(1, steps + 1), rtol=1e-15)


def test_tick_matrices_are_stochastic_for_random_wake_patterns():
    rng = np.random.default_rng(3)
    for gamma in (0.3, 1.0):
        for _ in range(50):
            woken = rng.random(N) < rng.random()
            pushes = woken & (rng.random(N) < 0.7)
            r_k, c_k = bca.tick_matrices(R, C, woken, pushes, gamma)
            assert r_k.min() >= 0 and c_k.min() >= 0
            np.testing.assert_allclose(r_k.sum(axis=1), 1.0, rtol=0, atol=4 * EPS)
            np.testing.assert_allclose(c_k.sum(axis=0), 1.0, rtol=0, atol=4 * EPS)
            # Sleeping agents keep their row of R_k and their column of C_k.
            np.testing.assert_array_equal(r_k[~woken], np.eye(N)[~woken])
            np.testing.assert_array_equal(c_k[:, ~pushes], np.eye(N)[:, ~pushes])


def test_ticks_apply_the_tick_matrices_of_who_woke():
    # Identity compressor: Y <- C_k Y + G_new - G_old; woken rows of X <- R_k Xhat - alpha Y.
    gamma, lr = 0.7, 0.05
    algorithm = algos.b_cpp_async(
        LS.loss,
        PULL,
        PUSH,
        lr,
        compressor=compression.identity(),
        wake_prob=0.6,
        compute_time=STRAGGLERS,
        gamma=gamma,
    )
    states = ticks(algorithm, 25)[0]
    patterns = set()
    for k in range(25):
        before, after = (jax.tree.map(lambda s, k=k + t: s[k], states) for t in (0, 1))
        woken = after.wakes > before.wakes
        pushes = woken & (before.wakes > 0)
        patterns.add(tuple(woken))
        r_k, c_k = bca.tick_matrices(R, C, woken, pushes, gamma)
        tracker = c_k @ before.tracker + after.prev_grad - before.prev_grad
        np.testing.assert_allclose(after.tracker, tracker, rtol=0, atol=1e-13)
        # Receivers use the latest message: this tick's x of senders, else the last one.
        latest = np.where(woken[:, None], before.params, before.h_x)
        params = np.where(woken[:, None], r_k @ latest - lr * after.tracker, before.params)
        np.testing.assert_allclose(after.params, params, rtol=0, atol=1e-13)
    assert len(patterns) > 10  # The check saw many different wake patterns.


@pytest.fixture(scope="module")
def straggler_run():
    _, _, _, lipschitz = problem()
    algorithm = algos.b_cpp_async(
        LS.loss,
        PULL,
        PUSH,
        0.4 / lipschitz,
        compressor=compression.qsgd(4),
        wake_prob=0.5,
        compute_time=STRAGGLERS,
    )
    return algorithm, *ticks(algorithm, 1500)


def test_tracker_sum_equals_gradient_sum_under_compression(straggler_run):
    _, states, _, _ = straggler_run
    y_sum = states.tracker.sum(axis=1)
    g_sum = states.prev_grad.sum(axis=1)
    scale = np.abs(states.prev_grad).sum(axis=1).max()
    # Rounding of one sum of n terms per tick, accumulated over the ticks.
    np.testing.assert_allclose(y_sum, g_sum, rtol=0, atol=len(y_sum) * N * EPS * scale)


def test_converges_on_an_unbalanced_digraph_with_stragglers(straggler_run):
    _, states, sent, clock = straggler_run
    _, x_star, _, _ = problem()
    err = np.linalg.norm(states.params - x_star, axis=(1, 2))
    report = f"||X - 1 x*||: {err[0]:.2e} at the start, {err[750]:.2e}, {err[-1]:.2e} at 1500"
    # An exact method: linear decrease to x* (measured 9.0, 2.1e-4, 1.0e-7), no plateau.
    assert err[-1] < 1e-6 * err[0] and err[-1] < 0.01 * err[750], report
    # Wake rates follow the speeds: p = 0.5 for fast agents, 0.5 / 4 for stragglers.
    rates = states.wakes[-1] / 1500
    expected = bca.wake_probabilities(STRAGGLERS, 0.5)[0]
    np.testing.assert_allclose(rates, expected, atol=5 * np.sqrt(0.25 / 1500))
    # Bytes: one QSGD-4 message per wake-up, a second from the second wake-up on.
    message = compression.message_bits(compression.qsgd(4), jnp.zeros((1, D))) / 8
    np.testing.assert_allclose(sent.sum(axis=0), (2 * states.wakes[-1] - 1) * message)
    np.testing.assert_allclose(clock[-1], 1500 * 0.5, rtol=1e-15)  # Tick length 0.5.


def test_one_and_eight_devices_agree(straggler_run):
    algorithm, states, _, _ = straggler_run
    eight, _, _ = ticks(algorithm, 30, n_devices=8)
    np.testing.assert_array_equal(eight.wakes, states.wakes[:31])
    np.testing.assert_allclose(eight.params, states.params[:31], rtol=0, atol=1e-13)


def test_bad_input_raises_before_compiling():
    qsgd = compression.qsgd(2)
    for bad in (0.0, 1.5, -0.1, None, True):
        with pytest.raises(
            ValueError, match=r"b_cpp_async: wake_prob must be a number in \(0, 1\]"
        ):
            algos.b_cpp_async(LS.loss, PULL, PUSH, 0.1, compressor=qsgd, wake_prob=bad)
    two_rings = np.kron(np.eye(2), directed.directed_ring(4)).astype(bool)
    pull = comm.gossip(directed.row_stochastic(two_rings), doubly_stochastic=False)
    push = comm.gossip(directed.column_stochastic(two_rings), doubly_stochastic=False)
    with pytest.raises(ValueError, match="b_cpp_async: .*not strongly connected"):
        algos.b_cpp_async(LS.loss, pull, push, 0.1, compressor=qsgd, wake_prob=0.5)
    for times in (np.ones(N - 1), np.r_[np.ones(N - 1), 0.0], np.r_[np.ones(N - 1), np.inf]):
        with pytest.raises(ValueError, match="compute_time must be 8 finite positive"):
            algos.b_cpp_async(
                LS.loss, PULL, PUSH, 0.1, compressor=qsgd, wake_prob=0.5, compute_time=times
            )
    with pytest.raises(ValueError, match=r"straggler_fraction must be in \[0, 1\]"):
        bca.straggler_compute_time(N, 1.5, 10.0)
    with pytest.raises(ValueError, match="straggler_slowdown must be a finite number >= 1"):
        bca.straggler_compute_time(N, 0.3, 0.5)
