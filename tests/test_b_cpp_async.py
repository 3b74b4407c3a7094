"""Asynchronous B-CPP (algos/push_compressed_async.py): wake-ups, R_k / C_k, invariants."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from test_push import LS, D, N, least_squares_problem, local_smoothness

from decentjax import algos
from decentjax.algos import push_compressed_async as bca
from decentjax.core import async_links, asynchrony, comm, compression, directed, mesh
from decentjax.core.algorithm import Batch
from decentjax.launch import async_methods, experiment

AGENTS = jax.P(mesh.AGENT_AXIS)
EPS = np.finfo(np.float64).eps
GRAPH = directed.unbalanced_example(N)
R = directed.row_stochastic(GRAPH)
C = directed.column_stochastic(GRAPH)
PULL = comm.gossip(R, doubly_stochastic=False)
PUSH = comm.gossip(C, doubly_stochastic=False)
STRAGGLERS = asynchrony.stragglers(N, 0.25, 4.0, seed=0)  # 2 of 8 agents, 4x slower.


def model(wake_prob=1.0, **kwargs):
    """The fastest agents wake with ``wake_prob`` per tick, stragglers 4x less often."""
    return asynchrony.async_model(N, compute_time=STRAGGLERS, tick=wake_prob, **kwargs)


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
        algos.b_cpp_async(LS.loss, PULL, PUSH, asynchrony.async_model(N), lr, compressor=rand_k),
        steps,
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
        model(0.6),
        lr,
        compressor=compression.identity(),
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


def qsgd_run(step, **kwargs):
    """1500 ticks of QSGD-4 B-CPP, step ``step / L``, fast agents waking with p = 0.5."""
    _, _, _, lipschitz = problem()
    max_delay = kwargs.pop("max_delay", 0)
    algorithm = algos.b_cpp_async(
        LS.loss,
        PULL,
        PUSH,
        model(0.5, max_delay=max_delay),
        step / lipschitz,
        compressor=compression.qsgd(4),
        **kwargs,
    )
    return algorithm, *ticks(algorithm, 1500)


@pytest.fixture(scope="module")
def straggler_run():
    return qsgd_run(0.4)


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
    expected = model(0.5).wake_prob
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
    for bad in (None, 0.5, asynchrony.async_model(N - 1)):
        with pytest.raises(ValueError, match=r"b_cpp_async: model must be core.asynchrony"):
            algos.b_cpp_async(LS.loss, PULL, PUSH, bad, 0.1, compressor=qsgd)
    two_rings = np.kron(np.eye(2), directed.directed_ring(4)).astype(bool)
    pull = comm.gossip(directed.row_stochastic(two_rings), doubly_stochastic=False)
    push = comm.gossip(directed.column_stochastic(two_rings), doubly_stochastic=False)
    with pytest.raises(ValueError, match="b_cpp_async: .*not strongly connected"):
        algos.b_cpp_async(LS.loss, pull, push, model(0.5), 0.1, compressor=qsgd)
    # A delay bound the ring buffers cannot hold is refused when the model is built.
    with pytest.raises(ValueError, match="max_delay=3 ticks does not fit a ring buffer of 3"):
        model(0.5, max_delay=3, buffer=3)


def in_flight(channel):
    """Stacked ``(buffer, arrival ticks)`` of a channel -> mass in flight ``(T, n, d)``."""
    return channel[0].messages.sum(axis=(2, 3))


@pytest.fixture(scope="module")
def delayed_run():
    return qsgd_run(0.2, max_delay=3, beta=0.5)


def test_delays_keep_the_invariants_counting_messages_in_flight(delayed_run):
    _, states, _, _ = delayed_run
    y_flight, x_flight = in_flight(states.y_links), in_flight(states.x_links)
    assert np.abs(y_flight).max() > 0 and np.abs(x_flight).max() > 0  # Messages did wait.
    scale = np.abs(states.prev_grad).sum(axis=1).max()
    ticks_n = states.tracker.shape[0]
    # 1^T Y + 1^T M_y = 1^T G: rounding of a few sums of n (K L) terms per tick.
    np.testing.assert_allclose(
        states.tracker.sum(axis=1) + y_flight.sum(axis=1),
        states.prev_grad.sum(axis=1),
        rtol=0,
        atol=ticks_n * N * EPS * scale,
    )
    # The receivers' copy H_x^R plus beta times the x-messages in flight is R H_x.
    expected = np.einsum("ij,tjd->tid", R, states.h_x)
    x_scale = np.abs(states.h_x).max()
    np.testing.assert_allclose(
        states.h_x_pulled + 0.5 * x_flight, expected, rtol=0, atol=ticks_n * N * EPS * x_scale
    )
    # A delay bound of 3 ticks: no edge holds a message due later than 3 ticks ahead.
    now = np.arange(ticks_n)[:, None, None]
    assert np.all(states.x_links[1] <= now - 1 + 3) and np.all(states.y_links[1] <= now - 1 + 3)


def test_converges_with_delays(delayed_run):
    _, states, _, _ = delayed_run
    _, x_star, _, _ = problem()
    err = np.linalg.norm(states.params - x_star, axis=(1, 2))
    report = f"||X - 1 x*||: {err[0]:.2e} at the start, {err[750]:.2e}, {err[-1]:.2e} at 1500"
    # Linear decrease, slower than without delays (measured 9.0, 0.40, 0.036; delays of
    # 0 and 1 tick reach 5e-3 and 1e-2 at 1500), no plateau.
    assert err[750] < 0.2 * err[0] and err[-1] < 0.2 * err[750], report


def test_one_and_eight_devices_agree_with_delays(delayed_run):
    algorithm, states, _, _ = delayed_run
    eight, _, _ = ticks(algorithm, 30, n_devices=8)
    np.testing.assert_array_equal(eight.x_links[1], states.x_links[1][:31])
    np.testing.assert_allclose(eight.params, states.params[:31], rtol=0, atol=1e-13)
    np.testing.assert_allclose(eight.tracker, states.tracker[:31], rtol=0, atol=1e-13)


def test_zero_delay_through_the_buffers_is_the_within_tick_delivery():
    lr = 0.2 / problem()[3]
    run = {
        length: ticks(
            algos.b_cpp_async(
                LS.loss, PULL, PUSH, model(0.5, buffer=length), lr, compressor=compression.qsgd(4)
            ),
            40,
        )[0]
        for length in (1, 2)
    }
    assert run[1].x_links is None and run[2].x_links is not None
    np.testing.assert_array_equal(run[1].wakes, run[2].wakes)
    # Same messages; only the order of the per-edge sums differs (rounding).
    for field in ("params", "tracker", "h_x_pulled"):
        a, b = getattr(run[1], field), getattr(run[2], field)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e3 * EPS * np.abs(a).max(), err_msg=field)


def test_a_marker_is_not_seen_before_it_arrives():
    # Zero loss, identity compressor, beta = 1: only agent 0 starts non-zero, so an agent's
    # view H_x^R (= R Xhat with the latest messages) turns non-zero exactly when the first
    # non-zero message reaches it: agent 0's marker, or a message of an agent it reached.
    algorithm = algos.b_cpp_async(
        lambda params, batch: 0.0 * jnp.sum(params),
        PULL,
        PUSH,
        asynchrony.async_model(N, max_delay=3),
        0.1,
        compressor=compression.identity(),
    )
    steps = 25
    data, _, _, _ = problem()
    x0 = np.zeros((N, D))
    x0[0] = 1.0 + np.arange(D)
    agent_mesh = mesh.make_agent_mesh(N, 1)

    def local(x, data):
        state = algorithm.init(x, data, jax.random.key(0))

        def one(state, k):
            state, _ = algorithm.step(state, Batch(data, jnp.int32(0), k), jax.random.key(k))
            return state, state

        return jax.lax.scan(one, state, jnp.arange(steps, dtype=jnp.int32))[1]

    fn = jax.shard_map(
        local, mesh=agent_mesh, in_specs=AGENTS, out_specs=jax.P(None, mesh.AGENT_AXIS)
    )
    states = jax.device_get(jax.jit(fn)(*(mesh.shard_agents(a, agent_mesh) for a in (x0, data))))
    arrival = np.asarray(states.x_links[1])  # (tick, receiver, slot): every edge sends.
    edges = async_links.links(PULL)
    slots = edges.weights.host
    senders = (
        (np.arange(N)[:, None] + np.asarray(edges.offsets)[None]) % N
        if edges.offsets is not None
        else edges.cols.host
    )
    # First tick at which each agent's view can be non-zero, by relaxing over the edges.
    seen = np.full(N, np.inf)
    seen[0] = 0
    for _ in range(N):
        for i in range(N):
            for k in np.flatnonzero(slots[i]):
                s = senders[i, k]
                first = 0 if s == 0 else seen[s] + 1  # First non-zero message of s.
                if first < steps:
                    seen[i] = min(seen[i], arrival[int(first), i, k])
    view = np.abs(states.h_x_pulled).max(axis=2) > 0  # (tick, agent)
    observed = np.where(view.any(axis=0), view.argmax(axis=0), np.inf)
    assert np.any(arrival[0] > 0)  # Some first messages were delayed.
    np.testing.assert_array_equal(observed, seen)


def test_the_launch_keeps_its_own_clock():
    # A config with an asynchrony section builds b_cpp_async from it and does not wrap it in
    # synchronous rounds (which would count its ticks as rounds waiting for the slowest).
    config = ml_collections.ConfigDict(
        {"n_agents": N, "asynchrony": {"straggler_fraction": 0.25, "straggler_slowdown": 4.0}}
    )
    build = experiment.DIRECTED_ALGORITHMS["b_cpp_async"]
    algorithm = build(LS.loss, PULL, PUSH, 0.1, config, compression.qsgd(4))
    assert async_methods.timed(config, "b_cpp_async@qsgd4", algorithm) is algorithm
