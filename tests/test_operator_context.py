"""Operators are immutable; per-step contexts are bound (core/operator_context.py).

Time-varying rounds and compression memories reach ``mix`` through
:func:`core.operator_context.bind`, never through attributes of the operator, so a
wrapped step is a function of its arguments: the wrappers compose in either order,
runs nest, threads do not see each other's rounds, and tracing twice is harmless.
"""

import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import comm, compression, directed, mesh, operator_context, topology, weights
from decentjax.core import compressed_gossip as cg
from decentjax.core import time_varying as tv
from decentjax.core.algorithm import Algorithm, Batch
from decentjax.models import objectives

N, M, D = 8, 6, 3
LS = objectives.least_squares()
AGENTS = jax.P(mesh.AGENT_AXIS)
# float64 throughout; a few steps of a contraction: rounding of order 1e-15 per step.
EXACT = {"rtol": 0, "atol": 1e-12}


def problem():
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(N, D))
    data = {"x": rng.normal(size=(N, M, D)), "y": rng.normal(size=(N, M))}
    return x0, data


def ring_failures(p=0.3):
    return tv.link_failures(comm.gossip(weights.metropolis_hastings(topology.ring(N))), p)


def run(algorithm, steps, *, n_devices=4, seed=1):
    """``(params after every step, final state)`` of ``algorithm`` on :func:`problem`."""
    x0, data = problem()
    agent_mesh = mesh.make_agent_mesh(N, n_devices)

    def local(x, data):
        state = algorithm.init(x, data, jax.random.key(0))

        def one(state, k):
            batch = Batch(data, jnp.int32(0), k.astype(jnp.int32))
            state, _ = algorithm.step(state, batch, jax.random.fold_in(jax.random.key(seed), k))
            return state, algorithm.params(state)

        return jax.lax.scan(one, state, jnp.arange(steps))

    fn = jax.shard_map(
        local, mesh=agent_mesh, in_specs=AGENTS, out_specs=(AGENTS, jax.P(None, mesh.AGENT_AXIS))
    )
    state, xs = jax.jit(fn)(*(mesh.shard_agents(a, agent_mesh) for a in (x0, data)))
    return np.asarray(jax.device_get(xs)), jax.device_get(state)


def test_operators_are_frozen_and_hold_no_step_state():
    base = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    ops = [
        base,
        ring_failures(),
        tv.sequence(directed.one_peer_exponential(N)),
        cg.compressed_gossip(base, compression.top_k(1)),
        cg.compressed_gossip(ring_failures(), compression.rand_k(1), mode="ef"),
    ]
    for op in ops:
        name = type(op).__name__
        assert type(op).__dataclass_params__.frozen, f"{name} is not a frozen dataclass"
        private = [f.name for f in dataclasses.fields(op) if f.name.startswith("_")]
        assert not private, f"{name} keeps per-step fields {private}"
        with pytest.raises(dataclasses.FrozenInstanceError):
            op.mode = "ef"  # Any attribute: frozen instances take none.


def test_compressed_over_time_varying_in_either_order():
    """'ef' compression of a link-failure graph: both wrapping orders, same numbers."""
    failures = ring_failures()
    op = cg.compressed_gossip(failures, compression.rand_k(1), consensus_step=0.5, mode="ef")
    method = algos.gradient_tracking(LS.loss, op, 0.05)
    outside = tv.time_varying(cg.compress_communication(method, op), failures)
    inside = cg.compress_communication(tv.time_varying(method, failures), op)
    xs_outside, state_outside = run(outside, 6)
    xs_inside, state_inside = run(inside, 6)
    np.testing.assert_allclose(xs_outside, xs_inside, **EXACT)
    np.testing.assert_array_equal(state_outside.round, np.full(N, 6))
    np.testing.assert_array_equal(state_inside.inner.round, np.full(N, 6))
    # The compressor and the failures both act: neither alone gives these iterates.
    xs_tv, _ = run(tv.time_varying(algos.gradient_tracking(LS.loss, failures, 0.05), failures), 6)
    assert np.abs(xs_outside - xs_tv).max() > 1e-3
    # With the identity and a unit step, 'ef' is exact gossip: the plain time-varying run.
    exact = cg.compressed_gossip(failures, compression.identity(), mode="ef")
    method = algos.gradient_tracking(LS.loss, exact, 0.05)
    for wrapped in (
        tv.time_varying(cg.compress_communication(method, exact), failures),
        cg.compress_communication(tv.time_varying(method, failures), exact),
    ):
        np.testing.assert_allclose(run(wrapped, 6)[0], xs_tv, **EXACT)


def mixes_around(op, nested: Algorithm) -> Algorithm:
    """A method that mixes, runs one step of ``nested`` (under a nested jit), mixes again.

    State ``(x, nested_state)``; the nested run uses the same operators as this one.
    """

    def init(params, data, key):
        return params, nested.init(params, data, key)

    def step(state, batch, key):
        x, inner = state
        x = op.mix(x)
        inner, _ = jax.jit(nested.step)(inner, batch, jax.random.fold_in(key, 7))
        return (op.mix(x), inner), {"bytes_sent": 0.0}

    return Algorithm(init, step, lambda state: state[0])


def plain_mixes(op) -> Algorithm:
    """:func:`mixes_around` without the nested run."""

    def step(state, batch, key):
        del batch, key
        return op.mix(op.mix(state)), {"bytes_sent": 0.0}

    return Algorithm(lambda params, data, key: params, step, lambda state: state)


@pytest.mark.parametrize("same_operator", [True, False])
def test_a_run_nested_inside_a_step_changes_neither(same_operator):
    failures = ring_failures()
    op = cg.compressed_gossip(failures, compression.rand_k(1), consensus_step=0.5, mode="ef")

    def wrap(method, op, failures):
        return tv.time_varying(cg.compress_communication(method, op), failures)

    if same_operator:
        nested_ops = op, failures
    else:
        other = tv.sequence(directed.one_peer_exponential(N))
        nested_ops = cg.compressed_gossip(other, compression.qsgd(4), mode="ef"), other
    nested = wrap(algos.gradient_tracking(LS.loss, nested_ops[0], 0.05), *nested_ops)
    outer = wrap(mixes_around(op, nested), op, failures)

    steps = 4
    xs, state = run(outer, steps)
    alone, _ = run(wrap(plain_mixes(op), op, failures), steps)
    np.testing.assert_allclose(xs, alone, **EXACT)
    # The nested run saw the keys fold_in(step key, 7): replay them alone.
    x0, data = problem()
    agent_mesh = mesh.make_agent_mesh(N, 4)

    def replay(x, data):
        s = nested.init(x, data, jax.random.key(0))
        for k in range(steps):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), k), 7)
            s, _ = nested.step(s, Batch(data, jnp.int32(0), jnp.int32(k)), key)
        return nested.params(s)

    fn = jax.shard_map(replay, mesh=agent_mesh, in_specs=AGENTS, out_specs=AGENTS)
    nested_alone = jax.jit(fn)(*(mesh.shard_agents(a, agent_mesh) for a in (x0, data)))
    # state = TimeVaryingState(CompressedState((x, nested_state), memory), round)
    nested_state = state.inner.inner[1]
    np.testing.assert_allclose(nested.params(nested_state), nested_alone, **EXACT)


def test_concurrent_traces_see_their_own_round():
    """Two threads trace steps of one operator in different rounds at the same time."""
    op = tv.sequence(directed.one_peer_exponential(N))
    barrier = threading.Barrier(2)

    def step(state, batch, key):
        del batch, key
        barrier.wait(timeout=60)  # Both threads have bound their round before either mixes.
        return op.mix(state), {"bytes_sent": 0.0}

    wrapped = tv.time_varying(Algorithm(lambda p, d, k: p, step, lambda s: s), op)
    x0, _ = problem()
    agent_mesh = mesh.make_agent_mesh(N, 4)

    def one_step(x, round_index):
        state = tv.TimeVaryingState(x, jnp.full((x.shape[0],), round_index, jnp.int32))
        return wrapped.step(state, None, jax.random.key(0))[0].inner

    def traced(round_index):
        fn = jax.shard_map(
            lambda x: one_step(x, round_index), mesh=agent_mesh, in_specs=AGENTS, out_specs=AGENTS
        )
        return np.asarray(jax.jit(fn)(mesh.shard_agents(x0, agent_mesh)))

    results = {}

    def worker(round_index):
        results[round_index] = traced(round_index)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [0, 1], "a thread failed (see its traceback above)"
    for k in (0, 1):
        np.testing.assert_allclose(results[k], tv.round_matrix(op, k) @ x0, **EXACT)
    assert operator_context.bound(op) is None


def test_tracing_a_step_twice_gives_the_same_step_and_leaves_nothing_bound():
    failures = ring_failures()
    op = cg.compressed_gossip(failures, compression.rand_k(1), consensus_step=0.5, mode="ef")
    wrapped = tv.time_varying(
        cg.compress_communication(algos.gradient_tracking(LS.loss, op, 0.05), op), failures
    )
    x0, data = problem()
    agent_mesh = mesh.make_agent_mesh(N, 4)
    before = {f.name: getattr(op, f.name) for f in dataclasses.fields(op)}

    def two_steps(x, data):
        state = wrapped.init(x, data, jax.random.key(0))
        for k in range(2):
            batch = Batch(data, jnp.int32(0), jnp.int32(k))
            state, _ = wrapped.step(state, batch, jax.random.key(k + 1))
        return wrapped.params(state)

    def compiled():  # A fresh function each time: a new trace, not a cache hit.
        fn = jax.shard_map(
            lambda x, d: two_steps(x, d), mesh=agent_mesh, in_specs=AGENTS, out_specs=AGENTS
        )
        return jax.jit(fn)

    args = [mesh.shard_agents(a, agent_mesh) for a in (x0, data)]
    shape = jax.eval_shape(compiled(), *args)
    first, second = (np.asarray(compiled()(*args)) for _ in range(2))
    assert shape.shape == first.shape == (N, D)
    np.testing.assert_array_equal(first, second)
    for o in (op, failures):
        assert operator_context.bound(o) is None
    assert {f.name: getattr(op, f.name) for f in dataclasses.fields(op)} == before

    def failing(state, batch, key):
        raise ValueError("boom")

    broken = tv.time_varying(Algorithm(lambda p, d, k: p, failing, lambda s: s), failures)
    with pytest.raises(ValueError, match="boom"):
        broken.step(tv.TimeVaryingState(x0, jnp.zeros((N,), jnp.int32)), None, jax.random.key(0))
    assert operator_context.bound(failures) is None
