"""Asynchrony (core/asynchrony.py, core/async_links.py): AD-PSGD, asynchronous push-sum.

Small problems (8 agents, d = 3, float64) and a few ticks; every program is one
``jit(shard_map(...))`` of a handful of unrolled steps, with the step keys chosen
here so the drawn wake-ups, delays and matchings can be replayed on the host.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax import algos
from decentjax.algos import async_pairwise as ad_psgd_lib
from decentjax.core import (
    async_links,
    asynchrony,
    comm,
    directed,
    mesh,
    metrics,
    runs,
    sampling,
    time_varying,
    topology,
)
from decentjax.core.algorithm import Batch
from decentjax.models import objectives

N, D, M, TICKS = 8, 3, 4, 6
LS = objectives.least_squares()
# Exact equalities: float64 rounding of a few sums per step, far below this.
EXACT = 1e-12


@functools.cache
def problem():
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(N, M, D)), "y": rng.normal(size=(N, M))}
    return data, rng.normal(size=(N, D))


def zero_loss(params, batch):
    del batch
    return 0.0 * jnp.sum(params)


def tick_key(seed, t):
    """The key of tick ``t`` of a run (what the run loop's per-step keys are to a step)."""
    return jax.random.fold_in(jax.random.key(seed), t)


def run_ticks(alg, params, *, ticks=TICKS, n_devices=8, seed=1, keep=None):
    """``ticks`` full-batch steps of ``alg`` from ``params``; ``keep(state)`` after each.

    One ``jit(shard_map(scan))`` over ``n_devices`` devices; tick ``t`` gets
    ``tick_key(seed, t)``. ``keep`` defaults to ``alg.params``.
    """
    data, _ = problem()
    keep = alg.params if keep is None else keep
    agent_mesh = mesh.make_agent_mesh(N, n_devices)

    def body(params, data):
        def one(state, t):
            batch = Batch(data, jnp.int32(0), t)
            state, _ = alg.step(state, batch, tick_key(seed, t))
            return state, keep(state)

        # As the run loop passes it: a state argument is varying over the agent axis.
        state = jax.tree.map(mesh.as_varying, alg.init(params, data, jax.random.key(0)))
        return jax.lax.scan(one, state, jnp.arange(ticks, dtype=jnp.int32))[1]

    agents = jax.P(mesh.AGENT_AXIS)
    run = jax.jit(
        jax.shard_map(
            body, mesh=agent_mesh, in_specs=(agents, agents), out_specs=jax.P(None, "agents")
        )
    )
    placed = (mesh.shard_agents(params, agent_mesh), mesh.shard_agents(data, agent_mesh))
    return jax.device_get(run(*placed))


# --------------------------------------------------------------------------------------
# AD-PSGD.
# --------------------------------------------------------------------------------------


def test_ad_psgd_all_awake_equals_dsgd_with_the_same_matchings():
    """Everyone awake, no delay: AD-PSGD is DSGD-CTA with W_t = (I + P_{c_t}) / 2."""
    graph = topology.exponential(N)
    model = asynchrony.async_model(N)
    lr = 0.1
    alg = ad_psgd_lib.ad_psgd(LS.loss, graph, model, lr)
    matchings = ad_psgd_lib.edge_colouring(graph)
    colours = [int(ad_psgd_lib.draw_matching(tick_key(1, t), len(matchings))) for t in range(TICKS)]
    assert len(set(colours)) > 1  # the test sees different matchings
    # The drawn rounds first; then every matching once, so that the period's union graph
    # (which time_varying.sequence checks) is the whole, connected graph.
    rounds = [ad_psgd_lib.matching_matrix(matchings[c]) for c in colours]
    op = time_varying.sequence(rounds + [ad_psgd_lib.matching_matrix(p) for p in matchings])
    dsgd = time_varying.time_varying(algos.dsgd(LS.loss, op, lr, variant="cta"), op)
    _, x0 = problem()
    got = run_ticks(alg, x0)
    want = run_ticks(dsgd, x0)
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT)
    assert np.abs(got[-1] - x0).max() > 0.1  # it moved


def test_ad_psgd_stale_gradients_and_devices():
    """Half the agents asleep per tick: 1 and 8 devices agree; sleepers keep their snapshot."""
    graph = topology.ring(N)
    model = asynchrony.async_model(N, wake_prob=0.5)
    alg = ad_psgd_lib.ad_psgd(LS.loss, graph, model, 0.1)
    _, x0 = problem()
    keep = lambda s: (s.params, s.snapshot)  # noqa: E731
    one = run_ticks(alg, x0, n_devices=1, keep=keep)
    eight = run_ticks(alg, x0, n_devices=8, keep=keep)
    np.testing.assert_allclose(one, eight, rtol=0, atol=EXACT)
    params, snapshot = eight
    # Stale: some agent's copy was averaged after it read its snapshot.
    assert np.abs(params - snapshot).max() > 1e-3


# --------------------------------------------------------------------------------------
# Asynchronous push-sum.
# --------------------------------------------------------------------------------------


@functools.cache
def push_operator(kind="unbalanced"):
    graph = {"unbalanced": directed.unbalanced_example, "ring": directed.directed_ring}[kind](N)
    return comm.gossip(directed.column_stochastic(graph), doubly_stochastic=False)


def test_async_push_sum_all_awake_equals_sgp():
    push = push_operator()
    model = asynchrony.async_model(N)
    _, x0 = problem()
    keep = lambda s: (s.numerator, s.weight)  # noqa: E731
    want = run_ticks(algos.push_sum_sgp(LS.loss, push, 0.05), x0, keep=keep)
    got = run_ticks(algos.async_push_sum(LS.loss, push, model, 0.05), x0, keep=keep)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=EXACT)
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=EXACT)


@functools.cache
def delayed_run(n_devices):
    """Zero gradients, half the agents awake, delays up to 3 ticks: (numerators, weights,
    in-flight numerators, in-flight weights) per tick."""
    model = asynchrony.async_model(N, wake_prob=0.5, max_delay=3)
    alg = algos.async_push_sum(zero_loss, push_operator(), model, 0.1)

    def keep(s):
        flight_x, flight_v = async_links.in_flight_total(s.in_flight)
        return s.numerator, s.weight, flight_x, flight_v

    _, x0 = problem()
    return run_ticks(alg, x0, ticks=12, n_devices=n_devices, keep=keep)


def test_async_push_sum_conserves_mass_and_keeps_weights_positive():
    numerator, weight, flight_x, flight_v = delayed_run(8)
    _, x0 = problem()
    total = numerator.sum(axis=1) + flight_x.sum(axis=1)  # (ticks, d)
    np.testing.assert_allclose(total, np.broadcast_to(x0.sum(0), total.shape), atol=EXACT)
    np.testing.assert_allclose(weight.sum(1) + flight_v.sum(1), N, rtol=0, atol=EXACT)
    assert weight.min() > 0
    assert flight_v.sum(1).max() > 0.1  # mass really was in flight


def test_async_push_sum_one_vs_eight_devices_with_delays():
    for a, b in zip(delayed_run(1), delayed_run(8), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=EXACT)


def test_marker_is_not_visible_before_it_arrives():
    """Agent 0 alone holds mass (a marker); on the directed ring only agent 1 hears it.

    Agent 1's numerator must stay exactly 0 until the first tick t + delay_t at which a
    message of agent 0 arrives, and be the marker's share from then on.
    """
    max_delay, ticks = 3, 6
    model = asynchrony.async_model(N, max_delay=max_delay)
    push = push_operator("ring")
    alg = algos.async_push_sum(zero_loss, push, model, 0.1)

    def delays(seed):  # replays the delays agent 1 draws for its in-edge (from agent 0)
        keys = [
            jax.random.fold_in(tick_key(seed, t), asynchrony.DELAY_STREAM) for t in range(ticks)
        ]
        draw = lambda k: jax.random.randint(k, (1,), 0, max_delay + 1, jnp.int32)[0]  # noqa: E731
        return [int(draw(jax.random.fold_in(k, 1))) for k in keys]

    seed = next(s for s in range(100) if delays(s)[0] >= 2)  # the first message is late
    first = min(t + d for t, d in enumerate(delays(seed)))
    x0 = np.zeros((N, D))
    x0[0] = 1e6
    numerator = run_ticks(alg, x0, ticks=ticks, seed=seed, keep=lambda s: s.numerator)
    assert first >= 2
    assert np.all(numerator[:first, 1] == 0.0)
    assert np.all(numerator[first:, 1] > 0.0)


def test_in_flight_ring_buffer_delivers_at_the_arrival_tick():
    """The buffer primitive alone: a marker sent at tick 0 appears only at tick delay."""
    push = push_operator("ring")
    edges = async_links.links(push)
    length = 4
    agent_mesh = mesh.make_agent_mesh(N, 8)
    delay = np.arange(N, dtype=np.int32)[:, None] % length  # receiver i: delay i mod 4

    def body(x, delay):
        buffer = async_links.in_flight_init(edges, x, length)
        weights = async_links.edge_weights(edges, x.shape[0], x)
        buffer = async_links.send(edges, buffer, edges.receive(x), weights, delay, jnp.int32(0))
        seen = []
        for t in range(length):
            arrived, buffer = async_links.deliver(buffer, jnp.int32(t))
            seen.append(arrived)
        return jnp.stack(seen)

    agents = jax.P("agents")
    run = jax.jit(
        jax.shard_map(
            body, mesh=agent_mesh, in_specs=(agents, agents), out_specs=jax.P(None, "agents")
        )
    )
    x = np.zeros((N, D))
    x[0] = 7.0
    seen = jax.device_get(run(*(mesh.shard_agents(v, agent_mesh) for v in (x, delay))))
    # Agent 1 hears agent 0 with weight C[1, 0] = 1/2 at tick delay[1] = 1, never before.
    np.testing.assert_array_equal(seen[0, 1], 0.0)
    np.testing.assert_allclose(seen[1, 1], 3.5, rtol=0, atol=0)
    assert np.all(seen[2:, 1] == 0.0) and np.all(seen[:, 2:] == 0.0)


# --------------------------------------------------------------------------------------
# Simulated clock, the Runner, bad input.
# --------------------------------------------------------------------------------------


def test_synchronous_rounds_wait_for_the_straggler():
    """One agent 10x slower: a synchronous round lasts its Geometric(0.1) ticks."""
    times = asynchrony.stragglers(N, 1 / N, 10.0, seed=0)
    model = asynchrony.async_model(N, compute_time=times)
    assert model.tick == 1.0 and sorted(model.wake_prob)[0] == pytest.approx(0.1)
    alg = asynchrony.synchronous(algos.push_sum_sgp(LS.loss, push_operator(), 0.05), model)
    rounds = 200
    _, x0 = problem()
    clock = run_ticks(alg, x0, ticks=rounds, keep=lambda s: s.clock)
    steps = np.diff(clock[:, 0], prepend=0.0)
    assert np.all(clock == clock[:, :1]) and steps.min() >= 1.0
    # Geometric(0.1): mean 10, standard deviation sqrt(0.9)/0.1; 4 standard errors.
    assert abs(steps.mean() - 10.0) < 4 * np.sqrt(0.9) / 0.1 / np.sqrt(rounds)
    assert np.all(np.diff(clock[:, 0]) == np.round(np.diff(clock[:, 0])))  # whole ticks


def test_runs_report_ticks_as_sim_time():
    """Two runs in one program (core.runs): each history has sim_time, 0 at the start."""
    model = asynchrony.async_model(
        N, compute_time=asynchrony.stragglers(N, 0.25, 10.0), max_delay=2
    )
    push = push_operator()
    agent_mesh = mesh.make_agent_mesh(N, 8)
    data, _ = problem()
    runner = runs.RunsRunner(
        lambda hyper: algos.async_push_sum(LS.loss, push, model, 0.05),
        sampling.iid(M, 1, 5),
        agent_mesh,
        metrics.make_evaluator(LS.loss, push),
        {},
        2,
    )
    placed = mesh.shard_agents(data, agent_mesh)
    keys = jax.random.split(jax.random.key(0), 2)
    params = runs.runs_init(lambda k: jax.random.normal(k, (D,)), agent_mesh, N)(keys)
    state = runner.init(params, placed, keys)
    _, histories, _ = runs.train_runs(runner, state, placed, keys, 2)
    for history in histories:  # 5 ticks per epoch, tick = 1
        assert [row["sim_time"] for row in history] == [0.0, 5.0, 10.0]
        assert 0 < history[2]["bytes_sent"] < 10 * (D + 1) * 8  # sleepers send nothing


def test_wake_models():
    """Poisson clocks and compute speeds as per-tick wake probabilities (host only)."""
    rates = np.linspace(0.5, 2.0, N)
    np.testing.assert_allclose(
        asynchrony.async_model(N, rates=rates, tick=0.5).wake_prob, 1 - np.exp(-0.5 * rates)
    )
    times = asynchrony.stragglers(N, 0.25, 4.0, seed=3)
    assert sorted(times) == [1.0] * 6 + [4.0] * 2
    np.testing.assert_array_equal(times, asynchrony.stragglers(N, 0.25, 4.0, seed=3))
    model = asynchrony.async_model(N, compute_time=2 * times)
    assert model.tick == 2.0 and sorted(model.wake_prob) == [0.25] * 2 + [1.0] * 6
    assert asynchrony.async_model(N).all_awake and not model.all_awake


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"wake_prob": 0.0}, "wake probabilities must lie in"),
        ({"wake_prob": 1.5}, "wake probabilities must lie in"),
        ({"rates": -1.0}, "rates must be > 0"),
        ({"compute_time": [1.0] * (N - 1) + [0.0]}, "compute_time must be > 0"),
        ({"max_delay": -1}, "max_delay must be >= 0"),
        ({"max_delay": 4, "buffer": 3}, "does not fit a ring buffer"),
        ({"wake_prob": 0.5, "rates": 1.0}, "at most one of"),
    ],
)
def test_bad_asynchrony_model_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        asynchrony.async_model(N, **kwargs)


def test_bad_graphs_raise_before_compiling():
    model = asynchrony.async_model(N)
    a = np.zeros((N, N), bool)  # two directed rings of 4: not strongly connected
    for i in range(N):
        a[(i + 1) % 4 + 4 * (i // 4), i] = True
    split = comm.gossip(directed.column_stochastic(a), doubly_stochastic=False)
    with pytest.raises(ValueError, match="not strongly connected"):
        algos.async_push_sum(LS.loss, split, model, 0.1)
    no_self = (np.ones((N, N)) - np.eye(N)) / (N - 1)  # column-stochastic, aperiodic
    zero_diagonal = comm.gossip(no_self, doubly_stochastic=False)
    with pytest.raises(ValueError, match=r"C\[i, i\] > 0"):
        algos.async_push_sum(LS.loss, zero_diagonal, model, 0.1)
    with pytest.raises(ValueError, match="ad-psgd"):
        ad_psgd_lib.ad_psgd(LS.loss, np.kron(np.eye(2), topology.ring(4)).astype(bool), model, 0.1)
    with pytest.raises(ValueError, match="asynchrony model is for 4 agents"):
        algos.async_push_sum(LS.loss, push_operator(), asynchrony.async_model(4), 0.1)


def test_launch_config_needs_its_asynchrony_section():
    from decentjax.launch import async_methods, experiment
    from decentjax.launch.configs import asynchrony as config_file

    config = config_file.get_config("adpsgd,s10,runlocal")
    experiment.validate(config)
    assert experiment.sampler_of(config, "ad_psgd") == ("iid", True)
    model = async_methods.asynchrony_model(config)
    assert sorted(model.wake_prob).count(0.1) == round(0.1 * config.n_agents)
    dsgd = algos.dsgd(LS.loss, comm.gossip(np.full((N, N), 1 / N)), 0.1)
    assert async_methods.timed(config, "dsgd", dsgd).init is not dsgd.init  # clocked
    with config.unlocked():
        del config.asynchrony
    with pytest.raises(ValueError, match="config.asynchrony section"):
        experiment.validate(config)
    with pytest.raises(ValueError, match="give one of adpsgd, push"):
        config_file.get_config("adpsgd,push")


def test_in_order_channels_keep_send_order_and_the_delay_bound():
    # 3 edges, random delays 0..3 and random sends over 300 ticks, run eagerly on numbers.
    rng = np.random.default_rng(0)
    max_delay, last = 3, jnp.full((1, 3), -1, jnp.int32)
    sends = []  # (edge, send tick + drawn delay, arrival tick)
    for t in range(300):
        sent = rng.random((1, 3)) < 0.7
        drawn = rng.integers(0, max_delay + 1, (1, 3)).astype(np.int32)
        delay, last = async_links.in_order_arrival(last, jnp.asarray(drawn), sent, jnp.int32(t))
        assert np.all((np.asarray(delay) >= drawn) & (np.asarray(delay) <= max_delay))
        sends += [(k, t + int(drawn[0, k]), t + int(delay[0, k])) for k in np.flatnonzero(sent[0])]
    for k in range(3):
        raw, arrivals = np.array([(r, a) for edge, r, a in sends if edge == k]).T  # send order
        assert np.all(np.diff(arrivals) >= 1)  # no overtaking, one arrival per tick
        assert np.any(np.diff(raw) < 1)  # which the drawn delays alone would break


def test_model_of_another_size_or_order_is_refused_while_tracing():
    """A model for another n, or unequal wake probabilities on a relabelled agent axis
    (they are in the user's order), raise before anything is compiled."""
    alg = asynchrony.synchronous(
        algos.push_sum_sgp(LS.loss, push_operator(), 0.05), asynchrony.async_model(N + 8)
    )
    _, x0 = problem()
    with pytest.raises(ValueError, match=f"for {N + 8} agents, the run has {N}"):
        run_ticks(alg, x0, ticks=1, keep=lambda s: s.clock)
    slow = asynchrony.async_model(N, compute_time=asynchrony.stragglers(N, 0.5, 10.0, seed=0))
    agent_mesh = mesh.make_agent_mesh(N, 1)

    f = jax.shard_map(
        functools.partial(_wake_relabelled, slow),
        mesh=agent_mesh,
        in_specs=jax.P(),
        out_specs=jax.P(mesh.AGENT_AXIS),
    )
    with pytest.raises(ValueError, match="relabelled agent axis"):
        jax.jit(f).lower(jax.random.key(0))
    even = asynchrony.async_model(N, wake_prob=0.5)  # equal probabilities: any order
    g = jax.shard_map(
        lambda key: _wake_relabelled(even, key), mesh=agent_mesh, in_specs=jax.P(),
        out_specs=jax.P(mesh.AGENT_AXIS),
    )  # fmt: skip
    assert jax.jit(g)(jax.random.key(0)).shape == (N,)


def _wake_relabelled(model, key):
    with mesh.user_agent_ids(jnp.arange(N)[::-1]):
        return asynchrony.wake(model, key, N)
