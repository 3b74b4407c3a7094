"""Graphs at scale: sparse input, no n-sized constants, relabelled halo exchange (8 devices)."""

import re
import tracemalloc

import jax
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

from decentjax import algos
from decentjax.core import comm, directed, loop, mesh, metrics, relabel, sampling, topology, weights
from decentjax.core.time_varying import link_failures, time_varying
from decentjax.core.time_varying import sequence as time_varying_sequence
from decentjax.models import objectives

M, D = 4, 3  # samples per agent, features


def _rgg(n=512):
    return topology.random_geometric(n, np.sqrt(8 / (np.pi * n)), seed=0)


def _shuffled_grid(side=16):
    order = np.random.default_rng(0).permutation(side * side)
    return topology.grid(side, side)[np.ix_(order, order)]


def _knn(n=256, k=4):
    points = np.random.default_rng(1).random((n, 2))
    _, idx = cKDTree(points).query(points, k=k + 1)
    a = np.zeros((n, n), bool)
    a[np.repeat(np.arange(n), k), idx[:, 1:].ravel()] = True
    return a | a.T


LOCAL_GRAPHS = {"random_geometric": _rgg, "shuffled_grid": _shuffled_grid, "knn": _knn}


def _uneven_ring(n):
    """A ring whose edge weights differ per agent: per-agent tables on the shift path."""
    edge = np.random.default_rng(n).uniform(0.1, 0.4, size=n)  # w_{i, i+1}
    i = np.arange(n)
    w = sp.coo_array((np.r_[edge, edge], (np.r_[i, (i + 1) % n], np.r_[(i + 1) % n, i])))
    w = sp.csr_array(w)
    return w + sp.diags_array(1.0 - np.asarray(w.sum(axis=1)).ravel())


def _problem(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(n, D)))
    return {"x": x, "y": y}, rng.normal(size=(n, D))


def _runner(algorithm, n, op, devices=8):
    loss = objectives.least_squares().loss
    agent_mesh = mesh.make_agent_mesh(n, devices)
    evaluate = metrics.make_evaluator(loss, op)
    return loop.Runner(algorithm, sampling.iid(M), agent_mesh, evaluate, order=op.order), agent_mesh


def _run(method, op, parts, x0, epochs=2):
    """``epochs`` epochs of ``method`` over ``op``; final params in the user's order."""
    n = x0.shape[0]
    loss = objectives.least_squares().loss
    algorithm = method(loss, op, 0.05)
    runner, _ = _runner(algorithm, n, op)
    # In the user's order: the runner permutes on entry and back on exit.
    data = runner.shard_agents(parts)
    state = runner.init(runner.shard_agents(x0, what="params"), data, jax.random.key(0))
    state, history = loop.train(runner, state, data, jax.random.key(1), epochs, log_every=epochs)
    return np.asarray(runner.params(state)), history


@pytest.mark.parametrize("graph", sorted(LOCAL_GRAPHS))
@pytest.mark.parametrize("method", ["dsgd", "gradient_tracking"])
def test_relabelled_halo_run_equals_dense_run_in_user_order(graph, method):
    w = weights.metropolis_hastings(LOCAL_GRAPHS[graph]())
    n = w.shape[0]
    halo = comm.gossip(sp.csr_array(w), order="rcm")
    assert halo.path_on(8) == "halo" and max(halo.band) <= n // 8
    assert not np.array_equal(halo.order, np.arange(n))
    parts, x0 = _problem(n)
    factory = getattr(algos, method)
    got, got_history = _run(factory, halo, parts, x0)
    want, want_history = _run(factory, comm.gossip(w, path="dense"), parts, x0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.max(np.abs(got - x0)) > 1e-3  # the run moved
    for key in ("loss", "consensus_error"):
        if key in want_history[-1]:
            np.testing.assert_allclose(got_history[-1][key], want_history[-1][key], rtol=1e-10)


def test_relabelled_runner_refuses_data_it_did_not_place():
    w = weights.metropolis_hastings(_shuffled_grid(16))
    op = comm.gossip(w, order="rcm")
    parts, x0 = _problem(256)
    algorithm = algos.dsgd(objectives.least_squares().loss, op, 0.05)
    runner, agent_mesh = _runner(algorithm, 256, op)
    placed = runner.shard_agents(parts)
    with pytest.raises(ValueError, match=r"not placed by this Runner.*runner.shard_agents"):
        runner.init(mesh.shard_agents(x0, agent_mesh), placed, jax.random.key(0))
    state = runner.init(runner.shard_agents(x0, what="params"), placed, jax.random.key(0))
    # Data in the runner's order but placed by hand: refused as well (it cannot tell).
    by_hand = mesh.shard_agents(relabel.to_internal(parts, op.order), agent_mesh)
    with pytest.raises(ValueError, match="data leaf .* not placed by this Runner"):
        runner.run_epochs(state, by_hand, jax.random.key(1), 0, 1)


@pytest.mark.parametrize("runner_order", ["none", "other"])
def test_runner_refuses_an_operator_of_another_order_before_compiling(runner_order):
    w = weights.metropolis_hastings(_shuffled_grid(16))
    op = comm.gossip(w, order="rcm")
    order = None if runner_order == "none" else np.arange(256)
    parts, x0 = _problem(256)
    loss = objectives.least_squares().loss
    agent_mesh = mesh.make_agent_mesh(256, 8)
    runner = loop.Runner(
        algos.dsgd(loss, op, 0.05),
        sampling.iid(M),
        agent_mesh,
        metrics.make_evaluator(loss, op),
        order=order,
    )
    data, params = runner.shard_agents(parts), runner.shard_agents(x0, what="params")
    state = runner.init(params, data, jax.random.key(0))  # init does not mix
    with pytest.raises(ValueError, match="operator is relabelled .* order=op.order"):
        runner.lower_epochs(state, data, jax.random.key(1), 1)
    # And an unrelabelled operator in a relabelled runner.
    plain = comm.gossip(w, path="dense")
    relabelled_runner = loop.Runner(
        algos.dsgd(loss, plain, 0.05),
        sampling.iid(M),
        agent_mesh,
        metrics.make_evaluator(loss, plain),
        order=op.order,
    )
    data = relabelled_runner.shard_agents(parts)
    state = relabelled_runner.init(
        relabelled_runner.shard_agents(x0, what="params"), data, jax.random.key(0)
    )
    with pytest.raises(ValueError, match="operator is not relabelled"):
        relabelled_runner.lower_epochs(state, data, jax.random.key(1), 1)


@pytest.mark.parametrize("kind", ["symmetric", "pull", "push"])
def test_link_failures_host_side_is_linear_in_nnz(kind):
    n = 50_000  # one dense float64 W would be 20 GB, a boolean n x n mask 2.5 GB
    op = comm.gossip(_uneven_ring(n))
    tracemalloc.start()
    try:
        failing = link_failures(op, 0.2, kind=kind)
        degree = failing.max_out_degree
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert degree == 2 and failing.offsets == (0, 1, n - 1)
    # O(nnz): a few (n,) and (|S|, n) float64 tables, 2.4 MB each.
    assert peak < 64 * 8 * n, peak


def test_directed_operators_and_their_failures_build_without_an_n_by_n_array():
    n = 20_000  # one dense float64 matrix is 3.2 GB; the dense host path makes several
    tracemalloc.start()
    try:
        a = directed.directed_exponential(n, sparse=True)
        pull = comm.gossip(directed.row_stochastic(a), doubly_stochastic=False)
        push = comm.gossip(directed.column_stochastic(a), doubly_stochastic=False)
        algos.push_pull(objectives.least_squares().loss, pull, push, 0.05)  # its host checks
        failing = [link_failures(op, 0.2, kind=k) for op, k in ((pull, "pull"), (push, "push"))]
        rounds = time_varying_sequence(directed.one_peer_exponential(n, sparse=True))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pull.path == push.path == "shift" and len(pull.offsets) == 16
    assert [f.max_out_degree for f in failing] == [15, 15] and rounds.max_out_degree == 1
    assert peak < 8 * n * n / 16, peak


def test_relabelled_push_pull_takes_the_halo_path_and_equals_the_plain_run():
    n = 512
    a = directed.geometric_directed(n, np.sqrt(8 / (np.pi * n)), 0.3, seed=0)
    shuffle = np.random.default_rng(0).permutation(n)
    a = np.asarray(a)[np.ix_(shuffle, shuffle)]  # labels that put edges far apart
    r, c = directed.row_stochastic(a), directed.column_stochastic(a)
    order = relabel.reverse_cuthill_mckee(r)  # one order for both operators
    ops = [comm.gossip(m, doubly_stochastic=False, order=order) for m in (r, c)]
    plain = [comm.gossip(m, doubly_stochastic=False, path="dense") for m in (r, c)]
    assert [op.path_on(8) for op in ops] == ["halo", "halo"]

    def push_pull(ops):
        return lambda loss, op, lr: algos.push_pull(loss, *ops, lr)

    got, _ = _run(push_pull(ops), ops[0], *_problem(n))
    want, _ = _run(push_pull(plain), plain[0], *_problem(n))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.max(np.abs(got - _problem(n)[1])) > 1e-3  # the run moved
    loss = objectives.least_squares().loss
    runner, _ = _runner(algos.push_pull(loss, *ops, 0.05), n, ops[0])
    data = runner.shard_agents(_problem(n)[0])
    state = runner.init(runner.shard_agents(_problem(n)[1]), data, jax.random.key(0))
    hlo = runner.lower_epochs(state, data, jax.random.key(1), 1).compile().as_text()
    assert "collective-permute" in hlo and "all-gather" not in hlo


def _mix(op, x, devices):
    agent_mesh = mesh.make_agent_mesh(x.shape[0], devices)
    spec = jax.P(mesh.AGENT_AXIS)
    program = jax.jit(jax.shard_map(op.mix, mesh=agent_mesh, in_specs=spec, out_specs=spec))
    return np.asarray(program(mesh.shard_agents(x, agent_mesh)))


@pytest.mark.parametrize("devices", [1, 2, 4, 8])
def test_halo_mix_equals_dense_reference(devices):
    w = weights.metropolis_hastings(_shuffled_grid(16))
    op = comm.gossip(w, path="halo", order="rcm")
    x = np.random.default_rng(devices).normal(size=(256, 2, 3))
    want = np.tensordot(op.matrix, x, axes=1)  # op.matrix is W in the operator's labels
    np.testing.assert_allclose(_mix(op, x, devices), want, rtol=0, atol=1e-12)
    ring = comm.gossip(weights.metropolis_hastings(topology.ring(256)), path="halo")
    np.testing.assert_allclose(
        _mix(ring, x, devices), np.tensordot(ring.matrix, x, axes=1), rtol=0, atol=1e-12
    )


def test_halo_wider_than_a_block_falls_back_to_the_all_gather():
    w = weights.metropolis_hastings(_rgg(256))
    assert comm.gossip(w, order="rcm").path == "dense"  # what auto picks for this band
    op = comm.gossip(w, order="rcm", path="halo")
    assert max(op.band) > 256 // 8
    assert op.path_on(8) == "dense" and "halo wider than a block" in op.describe(8)
    x = np.random.default_rng(0).normal(size=(256, 3))
    np.testing.assert_allclose(_mix(op, x, 8), op.matrix @ x, rtol=0, atol=1e-12)


def _mix_hlo(op, n, d, devices=8):
    agent_mesh = mesh.make_agent_mesh(n, devices)
    spec = jax.P(mesh.AGENT_AXIS)
    program = jax.jit(jax.shard_map(op.mix, mesh=agent_mesh, in_specs=spec, out_specs=spec))
    x = jax.ShapeDtypeStruct((n, d), np.float32, sharding=mesh.agent_sharding(agent_mesh))
    return program.lower(x).compile().as_text()


def _permuted_bytes(hlo):
    """Bytes of every collective-permute's result in an optimized HLO module."""
    total = 0
    for dtype, dims in re.findall(r"= (f32|f64)\[([\d,]*)\][^\n]*collective-permute\(", hlo):
        size = int(np.prod([int(s) for s in dims.split(",") if s]))
        total += size * (4 if dtype == "f32" else 8)
    return total


def test_halo_sends_only_the_halo_rows_and_no_all_gather():
    n, d = 512, 10
    op = comm.gossip(weights.metropolis_hastings(_rgg(n)), order="rcm")
    hlo = _mix_hlo(op, n, d)
    assert "collective-permute" in hlo and "all-gather" not in hlo
    sent = _permuted_bytes(hlo)
    halo_rows = sum(op.band)
    assert 0 < sent <= 2 * halo_rows * d * 4
    assert op.rows_sent(8) == halo_rows < n // 8 * 7  # fewer rows than the all-gather
    assert "halo path" in op.describe(8, d * 4) and str(halo_rows * d * 4) in op.describe(8, d * 4)


@pytest.mark.parametrize(
    "name,adjacency",
    [
        ("ring", lambda: topology.ring(64)),
        ("torus", lambda: topology.torus(8, 8)),
        ("grid", lambda: topology.grid(8, 8)),
        ("random_geometric", lambda: _rgg(512)),
    ],
)
def test_local_graph_programs_use_collective_permutes_not_all_gather(name, adjacency):
    a = adjacency()
    op = comm.gossip(
        weights.metropolis_hastings(a), order="rcm" if name == "random_geometric" else None
    )
    hlo = _mix_hlo(op, a.shape[0], 4)
    assert "collective-permute" in hlo and "all-gather" not in hlo, op.describe(8)


def test_expander_uses_the_all_gather():
    op = comm.gossip(weights.metropolis_hastings(topology.erdos_renyi(64, 0.5, seed=0)))
    assert op.path == "dense"
    assert "all-gather" in _mix_hlo(op, 64, 4)
    assert "all-gather" in op.describe(8)


_ITEMSIZE = {"f64": 8, "f32": 4, "s64": 8, "s32": 4, "u32": 4, "pred": 1}


def _constant_bytes(hlo):
    """Bytes of the constants of an optimized HLO module (their text is elided)."""
    total = 0
    for dtype, dims in re.findall(r"= (\w+)\[([\d,]*)\]\S* constant\(", hlo):
        total += int(np.prod([int(s) for s in dims.split(",") if s])) * _ITEMSIZE.get(dtype, 8)
    return total


def _chunk_program(n, path, kind="fixed"):
    """(constant bytes, StableHLO characters) of a chunk over an ``n``-agent graph.

    ``kind``: DSGD over an uneven ring (``"fixed"``), the same with link failures
    (``"failures"``), or Push-Pull over the unbalanced directed example (``"directed"``).
    """
    loss = objectives.least_squares().loss
    if kind == "directed":
        adjacency = directed.unbalanced_example(n)
        pull = comm.gossip(directed.row_stochastic(adjacency), doubly_stochastic=False, path=path)
        op = comm.gossip(directed.column_stochastic(adjacency), doubly_stochastic=False, path=path)
        algorithm = algos.push_pull(loss, pull, op, 0.05)
    else:
        op = comm.gossip(_uneven_ring(n), path=path)
        if kind == "failures":
            failing = link_failures(op, 0.2)
            algorithm = time_varying(algos.dsgd(loss, failing, 0.05), failing)
        else:
            algorithm = algos.dsgd(loss, op, 0.05)
    runner, agent_mesh = _runner(algorithm, n, op)
    parts, x0 = _problem(n)
    data = mesh.shard_agents(parts, agent_mesh)
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    lowered = runner.lower_epochs(state, data, jax.random.key(1), 1)
    return _constant_bytes(lowered.compile().as_text()), len(lowered.as_text())


@pytest.mark.parametrize(
    "path,kind",
    [("shift", "fixed"), ("dense", "fixed"), ("shift", "failures"), ("auto", "directed")],
)
def test_program_size_does_not_grow_with_n(path, kind):
    small_constants, small_text = _chunk_program(64, path, kind)
    large_constants, large_text = _chunk_program(1024, path, kind)
    # One (n,) float64 table alone is >= 4 KiB at n >= 512; scalars and shapes may differ.
    assert large_constants <= small_constants + 256, (small_constants, large_constants)
    # Shape strings gain a digit or two; a table in the text would add >= 8 KiB (hex).
    assert large_text < 1.05 * small_text, (small_text, large_text)


@pytest.mark.parametrize(
    "graph", ["ring", "torus", "random_geometric", "erdos_renyi", "complete", "uneven"]
)
def test_sparse_and_dense_input_give_the_same_operator_and_mix(graph):
    n = 64
    w = {
        "ring": lambda: weights.metropolis_hastings(topology.ring(n)),
        "torus": lambda: weights.metropolis_hastings(topology.torus(8, 8)),
        "random_geometric": lambda: weights.metropolis_hastings(_rgg(n)),
        "erdos_renyi": lambda: weights.metropolis_hastings(topology.erdos_renyi(n, 0.3, seed=2)),
        "complete": lambda: weights.metropolis_hastings(topology.complete(n)),
        "uneven": lambda: _uneven_ring(n).toarray(),
    }[graph]()
    dense, sparse = comm.gossip(w), comm.gossip(sp.csr_array(w))
    assert (dense.path, dense.offsets, dense.band) == (sparse.path, sparse.offsets, sparse.band)
    x = np.random.default_rng(0).normal(size=(n, 3))
    agent_mesh = mesh.make_agent_mesh(n, 8)
    spec = jax.P(mesh.AGENT_AXIS)
    for op in (dense, sparse):
        got = jax.jit(jax.shard_map(op.mix, mesh=agent_mesh, in_specs=spec, out_specs=spec))(
            mesh.shard_agents(x, agent_mesh)
        )
        np.testing.assert_allclose(np.asarray(got), w @ x, rtol=0, atol=1e-12)


def test_dense_path_reads_neighbour_lists_above_the_rows_limit():
    n = 2 * comm.DENSE_ROWS_MAX_N
    w = _uneven_ring(n)
    op = comm.gossip(w, path="dense")
    assert op.rows is None and op.neighbours[0].host.shape == (n, 3)
    x = np.random.default_rng(0).normal(size=(n, 2))
    agent_mesh = mesh.make_agent_mesh(n, 8)
    spec = jax.P(mesh.AGENT_AXIS)
    program = jax.jit(jax.shard_map(op.mix, mesh=agent_mesh, in_specs=spec, out_specs=spec))
    got = np.asarray(program(mesh.shard_agents(x, agent_mesh)))
    np.testing.assert_allclose(got, w @ x, rtol=0, atol=1e-12)


def test_sparse_input_is_rejected_with_the_dense_messages():
    ring = sp.csr_array(weights.metropolis_hastings(topology.ring(8)))
    two = sp.block_diag([ring, ring], format="csr")
    with pytest.raises(ValueError, match="disconnected"):
        comm.gossip(two)
    with pytest.raises(ValueError, match="row 0 of W sums to"):
        comm.gossip(ring * 2.0)
    with pytest.raises(ValueError, match="shape"):
        comm.gossip(sp.csr_array(np.ones((3, 4)) / 4))
    with pytest.raises(ValueError, match="order must be a permutation"):
        comm.gossip(ring, order=np.zeros(8, int))


def test_relabel_round_trip_and_order_of_dense_input():
    w = weights.metropolis_hastings(_shuffled_grid(8))
    op = comm.gossip(w, order="rcm")
    np.testing.assert_array_equal(op.matrix, w[np.ix_(op.order, op.order)])
    x = np.arange(64.0)[:, None]
    np.testing.assert_array_equal(relabel.to_user(relabel.to_internal(x, op.order), op.order), x)


def test_methods_check_sparse_operators_on_the_host():
    loss = objectives.least_squares().loss
    w = sp.csr_array(weights.metropolis_hastings(topology.ring(16)))
    algos.d_rr(loss, comm.gossip(w), 0.1)
    algos.exact_diffusion(loss, comm.gossip((w + sp.eye_array(16)) / 2), 0.1)
    with pytest.raises(ValueError, match="lambda_min"):
        algos.exact_diffusion(loss, comm.gossip(w), 0.1)  # the ring's lambda_min is -1/3
    column = sp.csr_array(directed.column_stochastic(directed.unbalanced_example(16)))
    with pytest.raises(ValueError, match="row 0 sums to"):
        algos.push_pull(
            loss,
            comm.gossip(column, doubly_stochastic=False),
            comm.gossip(column, doubly_stochastic=False),
            0.1,
        )
