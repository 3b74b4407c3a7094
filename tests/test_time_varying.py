"""Time-varying graphs (core/time_varying.py): link failures and periodic sequences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import comm, directed, loop, mesh, metrics, sampling, topology, weights
from decentjax.core import time_varying as tv
from decentjax.core.algorithm import Algorithm
from decentjax.models import objectives

N, D, M = 8, 5, 10
LS = objectives.least_squares()
AGENTS = jax.P(mesh.AGENT_AXIS)

GRAPHS = {
    "ring": topology.ring,
    "exponential": topology.exponential,
    "random": lambda n: topology.erdos_renyi(n, 0.3, seed=2),
}


def failure_ops(adjacency, p, path="auto"):
    """One operator per failure kind on an undirected graph: W (MH), R and C."""
    return {
        "symmetric": tv.link_failures(
            comm.gossip(weights.metropolis_hastings(adjacency), path=path), p
        ),
        "pull": tv.link_failures(
            comm.gossip(directed.row_stochastic(adjacency), path=path, doubly_stochastic=False),
            p,
            kind="pull",
        ),
        "push": tv.link_failures(
            comm.gossip(directed.column_stochastic(adjacency), path=path, doubly_stochastic=False),
            p,
            kind="push",
        ),
    }


def round_keys(count, seed=0):
    """The keys the operator sees in ``count`` rounds (as ``time_varying`` derives them)."""
    return jax.vmap(lambda k: tv.round_key(jax.random.fold_in(jax.random.key(seed), k)))(
        jnp.arange(count)
    )


def mix_rounds(ops, x, keys, n_devices=8):
    """``W_k @ x`` of every operator in the dict ``ops`` for rounds ``k = 0..len(keys)-1``.

    One compiled program for all operators (compiling the draws dominates these
    tests' time). Returns a dict of arrays ``(len(keys), n, ...)``.
    """
    n = next(iter(ops.values())).n_agents
    agent_mesh = mesh.make_agent_mesh(n, n_devices)

    def local(x, keys):
        def one(k_and_key):
            out = {}
            for name, op in ops.items():
                with op.in_round(*k_and_key):
                    out[name] = op.mix(x)
            return out

        return jax.lax.map(one, (jnp.arange(len(keys), dtype=jnp.int32), keys))

    fn = jax.shard_map(
        local, mesh=agent_mesh, in_specs=(AGENTS, jax.P()), out_specs=jax.P(None, mesh.AGENT_AXIS)
    )
    return jax.device_get(jax.jit(fn)(mesh.shard_agents(x, agent_mesh), keys))


def device_round_matrices(ops, keys, n_devices=8):
    """``W_k`` as applied on device: row ``i`` of ``mix(I)`` is row ``i`` of ``W_k``."""
    n = next(iter(ops.values())).n_agents
    return mix_rounds(ops, np.eye(n), keys, n_devices)


def assert_stochastic(w, kind, msg):
    rows, cols = np.abs(w.sum(axis=1) - 1).max(), np.abs(w.sum(axis=0) - 1).max()
    assert w.min() >= 0, msg
    if kind in ("symmetric", "sequence"):
        assert rows < 1e-14 and cols < 1e-14, f"{msg}: row/col sums off by {rows:.1e}/{cols:.1e}"
    if kind == "symmetric":
        np.testing.assert_array_equal(w, w.T, err_msg=msg)
    if kind == "pull":
        assert rows < 1e-14, f"{msg}: row sums off by {rows:.1e}"
    if kind == "push":
        assert cols < 1e-14, f"{msg}: column sums off by {cols:.1e}"


# --------------------------------------------------------------------------------------
# The per-round mix against dense NumPy.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_device", [1, 2, 4])
def test_link_failure_mix_equals_dense_round_matrix(per_device):
    n = 8 * per_device
    rng = np.random.default_rng(per_device)
    tree = {
        "w": rng.normal(size=(n, 3, 2)),
        "b": rng.normal(size=(n,)),
        "f32": rng.normal(size=(n, 2)).astype(np.float32),  # Coefficients per dtype.
    }
    keys = round_keys(3, seed=per_device)
    # A Latin square over (graph, kind, agents per device): every pair of the three
    # appears once, with a third of the compile time of the full product.
    kinds = ["symmetric", "pull", "push"]
    ops = {
        (graph, kind): failure_ops(GRAPHS[graph](n), 0.3)[kind]
        for g, graph in enumerate(sorted(GRAPHS))
        for kind in [kinds[(g + per_device.bit_length() - 1) % 3]]
    }
    got = mix_rounds(ops, tree, keys)
    for (graph, kind), op in ops.items():
        for k in range(len(keys)):
            w = tv.round_matrix(op, keys[k])
            msg = f"{graph}, n={n}, {kind}, {op.path} path, round {k}"
            assert_stochastic(w, kind, msg)
            for leaf in tree:
                want = np.tensordot(w, tree[leaf].astype(np.float64), axes=1)
                atol = 1e-5 if leaf == "f32" else 1e-13
                assert got[graph, kind][leaf].dtype == tree[leaf].dtype, msg
                np.testing.assert_allclose(
                    got[graph, kind][leaf][k], want, rtol=0, atol=atol, err_msg=msg
                )
            assert not np.array_equal(w, op.matrix), f"{msg}: no link failed"


def test_both_paths_apply_the_same_round():
    n = 32
    a = topology.erdos_renyi(n, 0.3, seed=2)
    ops = {
        (path, kind): op
        for path in ("shift", "dense")
        for kind, op in failure_ops(a, 0.2, path=path).items()
    }
    keys = round_keys(3)
    got = device_round_matrices(ops, keys)
    for (path, kind), op in ops.items():
        assert op.path == path
        for k in range(len(keys)):
            np.testing.assert_allclose(
                got[path, kind][k], tv.round_matrix(op, keys[k]), rtol=0, atol=1e-15
            )


@pytest.mark.parametrize("per_device", [1, 2, 4])
def test_sequence_mix_equals_its_matrices(per_device):
    n = 8 * per_device
    a = weights.metropolis_hastings(topology.ring(n))
    b = weights.metropolis_hastings(topology.exponential(n))
    sequences = {
        "one-peer": directed.one_peer_exponential(n),
        "different supports": [a, b, weights.lazy(b)],
        "directed pull": [directed.row_stochastic(directed.directed_ring(n)), np.eye(n)],
    }
    ops = {
        name: tv.sequence(mats, doubly_stochastic=name != "directed pull")
        for name, mats in sequences.items()
    }
    x = np.random.default_rng(0).normal(size=(n, 3))
    got = mix_rounds(ops, x, round_keys(6))
    for name, mats in sequences.items():
        for k in range(6):
            w = tv.round_matrix(ops[name], k)
            np.testing.assert_array_equal(w, mats[k % len(mats)])
            assert_stochastic(w, "pull" if name == "directed pull" else "sequence", name)
            np.testing.assert_allclose(
                got[name][k], w @ x, rtol=0, atol=1e-13, err_msg=f"{name}, round {k}"
            )


# --------------------------------------------------------------------------------------
# Draws: failure rate, shared draws, device count.
# --------------------------------------------------------------------------------------


def test_failure_rate_and_shared_draws():
    n, p, rounds = 16, 0.2, 400
    ops = failure_ops(topology.ring(n), p)
    a = directed.directed_exponential(n)
    ops["directed"] = tv.link_failures(
        comm.gossip(directed.row_stochastic(a), doubly_stochastic=False), p, kind="pull"
    )
    w = device_round_matrices(ops, round_keys(rounds, seed=5))
    ring = topology.ring(n)
    rates = {}
    for kind, graph in [("symmetric", ring), ("pull", ring), ("push", ring), ("directed", a)]:
        rates[kind] = ((w[kind] == 0) & graph[None]).sum() / (rounds * graph.sum())
    # 400 rounds x 32 directed edges: each rate's std is about 0.0032 around p (0.0045
    # for the 16 undirected edges of the symmetric kind).
    assert all(abs(r - p) < 0.02 for r in rates.values()), f"failure rates {rates}, want {p}"
    failed = {kind: (w[kind] == 0) & ring[None] for kind in ("symmetric", "pull", "push")}
    # One draw per undirected edge: both directions fail together.
    np.testing.assert_array_equal(failed["symmetric"], np.swapaxes(failed["symmetric"], 1, 2))
    # R and C on the same graph with the same round keys lose the same physical links,
    # while a pull operator's two directions fail independently.
    np.testing.assert_array_equal(failed["pull"], failed["push"])
    assert not np.array_equal(failed["pull"], np.swapaxes(failed["pull"], 1, 2))


def test_round_matrices_do_not_depend_on_the_device_count():
    ops = failure_ops(topology.exponential(16), 0.3)
    keys = round_keys(5)
    one, eight = (device_round_matrices(ops, keys, d) for d in (1, 8))
    for kind in ops:
        np.testing.assert_array_equal(one[kind], eight[kind], err_msg=kind)


# --------------------------------------------------------------------------------------
# The wrapper.
# --------------------------------------------------------------------------------------


def gossip_averaging(op):
    """Plain gossip averaging ``X <- W_k X`` as an Algorithm (no gradients)."""

    def init(params, data, key):
        del data, key
        return params

    def step(params, batch, key):
        del batch, key
        return op.mix(params), {"bytes_sent": op.bytes_per_mix(params)}

    return Algorithm(init=init, step=step, params=lambda s: s, name="gossip")


def run_steps(algorithm, x0, steps, n_devices=8):
    """Every step's params of ``algorithm`` from ``x0``: ``(steps, n, ...)``, and the state."""
    agent_mesh = mesh.make_agent_mesh(x0.shape[0], n_devices)

    def local(x):
        state = algorithm.init(x, x, jax.random.key(0))

        def one(state, k):
            state, _ = algorithm.step(state, None, jax.random.fold_in(jax.random.key(1), k))
            return state, algorithm.params(state)

        return jax.lax.scan(one, state, jnp.arange(steps))

    fn = jax.shard_map(
        local, mesh=agent_mesh, in_specs=AGENTS, out_specs=(AGENTS, jax.P(None, mesh.AGENT_AXIS))
    )
    state, xs = jax.jit(fn)(mesh.shard_agents(x0, agent_mesh))
    return jax.device_get(xs), jax.device_get(state)


def test_one_peer_exponential_averages_exactly_in_one_period():
    op = tv.sequence(directed.one_peer_exponential(N))
    assert (op.period, op.max_out_degree) == (3, 1)
    x0 = np.random.default_rng(0).normal(size=(N, D))
    xs, state = run_steps(tv.time_varying(gossip_averaging(op), op), x0, 6)
    for k in (2, 5):  # After rounds 0..2 and again after 3..5.
        err = np.abs(xs[k] - x0.mean(axis=0)).max()
        assert err < 1e-12, f"max |x_i - mean| after {k + 1} rounds: {err:.1e}"
    assert np.abs(xs[1] - x0.mean(axis=0)).max() > 1e-2  # Not after two rounds.
    np.testing.assert_array_equal(state.round, np.full(N, 6, np.int32))


def test_every_mix_in_a_step_uses_the_same_round():
    op = tv.link_failures(comm.gossip(weights.metropolis_hastings(topology.ring(N))), 0.5)

    def twice(x):
        return {"first": op.mix(x), "second": op.mix(x)}

    def init(params, data, key):
        del data, key
        return {"first": params, "second": params}

    def step(state, batch, key):
        del batch, key
        return twice(state["first"]), {"bytes_sent": 0}

    alg = tv.time_varying(Algorithm(init, step, lambda s: s), op)
    x0 = np.random.default_rng(1).normal(size=(N, D))
    xs, _ = run_steps(alg, x0, 3)
    np.testing.assert_array_equal(xs["first"], xs["second"])
    w0, w1 = (
        tv.round_matrix(op, tv.round_key(jax.random.fold_in(jax.random.key(1), k))) for k in (0, 1)
    )
    assert not np.array_equal(w0, w1)  # Redrawn every step.
    np.testing.assert_allclose(xs["first"][0], w0 @ x0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(xs["first"][1], w1 @ w0 @ x0, rtol=0, atol=1e-14)


@functools.cache
def least_squares_problem():
    """Heterogeneous least squares: each agent's targets come from its own model."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(N, D)) * 3.0) + rng.normal(size=(N, M))
    a, b = x.reshape(-1, D), y.reshape(-1)
    return {"x": x, "y": y}, np.linalg.solve(a.T @ a, a.T @ b)


def run(algorithm, ops, epochs, *, n_devices=1, x0=None):
    """Full-gradient run of ``time_varying(algorithm, ops)``: (history, final params, state)."""
    parts, x_star = least_squares_problem()
    wrapped = tv.time_varying(algorithm, ops)
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    first = ops if isinstance(ops, tv.TimeVaryingGossip) else ops[0]
    evaluate = metrics.make_evaluator(LS.loss, first, x_star=x_star)
    runner = loop.Runner(wrapped, sampling.full_batch(M), agent_mesh, evaluate)
    data = mesh.shard_agents(parts, agent_mesh)
    x0 = np.broadcast_to(np.linspace(-1, 1, D), (N, D)).copy() if x0 is None else x0
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    state, history = loop.train(
        runner, state, data, jax.random.key(1), epochs, log_every=max(1, epochs // 2)
    )
    return history, np.asarray(jax.device_get(wrapped.params(state))), jax.device_get(state)


def lazy_ring_failures(p):
    return tv.link_failures(
        comm.gossip(weights.lazy(weights.metropolis_hastings(topology.ring(N)))), p
    )


def directed_ring_failures(p):
    a = directed.directed_ring(N)
    pull = comm.gossip(directed.row_stochastic(a), doubly_stochastic=False)
    push_op = comm.gossip(directed.column_stochastic(a), doubly_stochastic=False)
    return tv.link_failures(pull, p, kind="pull"), tv.link_failures(push_op, p, kind="push")


def _make(name, p):
    """(algorithm, operators, steps) for the convergence test."""
    if name in ("gt", "ed", "dsgd"):
        op = lazy_ring_failures(p)
        make, lr = {
            "gt": (algos.gradient_tracking, 0.05),
            "ed": (algos.exact_diffusion, 0.1),
            "dsgd": (algos.dsgd, 0.05),
        }[name]
        return make(LS.loss, op, lr), op, 1500
    pull, push_op = directed_ring_failures(p)
    # 0.05 diverges on the directed ring of 8 even without failures; 0.02 does not.
    if name == "push-pull":
        return algos.push_pull(LS.loss, pull, push_op, 0.02), (pull, push_op), 3000
    return algos.push_diging(LS.loss, push_op, 0.02), push_op, 3000


@pytest.mark.parametrize("name", ["gt", "ed", "push-pull", "push-diging"])
def test_exact_methods_converge_under_link_failures(name):
    algorithm, ops, steps = _make(name, 0.2)
    history, x, state = run(algorithm, ops, steps)
    _, x_star = least_squares_problem()
    err = np.linalg.norm(x - x_star[None])
    # Measured (p = 0.2): gt 2.2e-14, ed 6.7e-12 (rounding drift, see exact_diffusion),
    # push-pull 6.3e-14, push-diging 1.5e-14.
    assert err < 1e-10, f"{name}, p = 0.2: ||X - 1 x*^T|| = {err:.3e} after {steps} steps"
    assert (state.round == steps).all()
    # A broadcast counts whether or not its links fail: exactly the failure-free
    # count (vectors of D float64, push-sum weights of one; trackers from step 2).
    vec = D * 8
    want = {
        "gt": (2 * steps - 1) * vec,
        "ed": steps * vec,
        "push-pull": (2 * steps - 1) * vec,
        "push-diging": steps * (vec + 8) + (steps - 1) * vec,
    }[name]
    assert history[-1]["bytes_sent"] == want


def test_dsgd_does_not_reach_x_star_under_link_failures():
    algorithm, op, steps = _make("dsgd", 0.2)
    _, x, _ = run(algorithm, op, steps)
    _, x_star = least_squares_problem()
    err = np.linalg.norm(x - x_star[None])
    # Measured 4.6 (4.3 without failures).
    assert err > 1.0, f"DSGD, p = 0.2: ||X - 1 x*^T|| = {err:.3e}: should stall at its bias"


def test_one_and_eight_devices_agree():
    # Push-Pull with both directed kinds; the symmetric kind's rounds are compared
    # across device counts in test_round_matrices_do_not_depend_on_the_device_count.
    x0 = np.random.default_rng(7).normal(size=(N, D))
    ops = directed_ring_failures(0.3)
    h1, x1, _ = run(algos.push_pull(LS.loss, *ops, 0.02), ops, 30, n_devices=1, x0=x0)
    h8, x8, _ = run(algos.push_pull(LS.loss, *ops, 0.02), ops, 30, n_devices=8, x0=x0)
    np.testing.assert_allclose(x1, x8, rtol=0, atol=1e-13)
    assert [r["bytes_sent"] for r in h1] == [r["bytes_sent"] for r in h8]


# --------------------------------------------------------------------------------------
# Interface and errors.
# --------------------------------------------------------------------------------------


def test_interface_delegates_to_the_nominal_operator():
    base = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    op = tv.link_failures(base, 0.2)
    tree = {"a": jnp.zeros((N, 3)), "b": jnp.zeros((N,), jnp.float32)}
    assert op.matrix is base.matrix and op.n_agents == N and op.period is None
    assert op.bytes_per_mix(tree) == base.bytes_per_mix(tree) == 3 * 8 + 4
    assert op.bytes_per_mean(tree) == base.bytes_per_mean(tree)
    assert op.max_out_degree == base.max_out_degree == 2
    seq = tv.sequence(directed.one_peer_exponential(N))
    np.testing.assert_allclose(seq.matrix, np.mean(directed.one_peer_exponential(N), axis=0))
    assert seq.offsets == (0, 1, 2, 4)
    assert seq.bytes_per_mix(tree) == op.bytes_per_mix(tree)


def test_errors():
    ring = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    for p in (-0.1, 1.0, 1.5, True, "0.2"):
        with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\)"):
            tv.link_failures(ring, p)
    with pytest.raises(ValueError, match="kind must be"):
        tv.link_failures(ring, 0.2, kind="broadcast")
    r = comm.gossip(directed.row_stochastic(directed.directed_ring(N)), doubly_stochastic=False)
    with pytest.raises(ValueError, match="kind='symmetric' needs a symmetric W"):
        tv.link_failures(r, 0.2)
    unbalanced = directed.unbalanced_example(N)
    r = comm.gossip(directed.row_stochastic(unbalanced), doubly_stochastic=False)
    with pytest.raises(ValueError, match=r"column \d+ of C sums to .* column-stochastic"):
        tv.link_failures(r, 0.2, kind="push")
    c = comm.gossip(directed.column_stochastic(unbalanced), doubly_stochastic=False)
    with pytest.raises(ValueError, match=r"row \d+ of R sums to .* row-stochastic"):
        tv.link_failures(c, 0.2, kind="pull")
    with pytest.raises(ValueError, match=r"matrix 0 has shape \(8, 8\) but matrix 1 has"):
        tv.sequence([np.eye(8), np.eye(4)])
    with pytest.raises(ValueError, match="at least one matrix"):
        tv.sequence([])
    bad = directed.one_peer_exponential(N)
    bad[1] = bad[1] * 0.9
    with pytest.raises(ValueError, match=r"row 0 of matrix 1 of the sequence sums to 0.9"):
        tv.sequence(bad)
    with pytest.raises(ValueError, match="matrix 0 of the sequence is not symmetric"):
        tv.sequence(directed.one_peer_exponential(N), symmetric=True)
    with pytest.raises(ValueError, match="sequence does not mix: .* disconnected"):
        tv.sequence(directed.one_peer_exponential(N)[1:])  # Offsets 2 and 4 only.
    with pytest.raises(ValueError, match=r"column 0 of matrix 0 .* column-stochastic"):
        tv.sequence([np.full((N, N), 0.5 / N)], doubly_stochastic=False)
    with pytest.raises(TypeError, match="round index"):
        tv.round_matrix(tv.sequence(directed.one_peer_exponential(N)), jax.random.key(0))
    with pytest.raises(TypeError, match="round_key"):
        tv.round_matrix(tv.link_failures(ring, 0.2), 3)
    with pytest.raises(ValueError, match="TimeVaryingGossip operator"):
        tv.time_varying(algos.dsgd(LS.loss, ring, 0.1), ring)
    op = tv.link_failures(ring, 0.2)
    with pytest.raises(RuntimeError, match="outside a time-varying step"):
        run_steps(gossip_averaging(op), np.zeros((N, D)), 1)
