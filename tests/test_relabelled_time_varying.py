"""Time-varying operators on relabelled graphs (halo path) and their O(nnz) tables (8 devices)."""

import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from test_time_varying import mix_rounds  # one compiled program for all rounds

from decentjax import algos
from decentjax.core import (
    comm,
    directed,
    loop,
    mesh,
    metrics,
    relabel,
    sampling,
    time_varying_tables,
    topology,
    weights,
)
from decentjax.core import time_varying as tv
from decentjax.models import objectives

M, D, N = 4, 3, 256  # samples per agent, features, agents (a 16 x 16 grid)
AGENTS = jax.P(mesh.AGENT_AXIS)
LOSS = objectives.least_squares().loss


def _shuffled_grid(side=16):
    order = np.random.default_rng(0).permutation(side * side)
    return topology.grid(side, side)[np.ix_(order, order)]


def _problem(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, M, D))
    y = np.einsum("nmd,nd->nm", x, rng.normal(size=(n, D)))
    return {"x": x, "y": y}, rng.normal(size=(n, D))


def _round_keys(count):
    return jax.vmap(lambda k: tv.round_key(jax.random.fold_in(jax.random.key(7), k)))(
        jnp.arange(count)
    )


# --------------------------------------------------------------------------------------
# Item 1: link failures and sequences on a relabelled base, by the halo exchange.
# --------------------------------------------------------------------------------------


def _failure_run(op, parts, x0, epochs=2):
    """DSGD under link failures of ``op``; final params (user order) and the chunk's HLO."""
    failing = tv.link_failures(op, 0.3)
    algorithm = tv.time_varying(algos.dsgd(LOSS, failing, 0.05), failing)
    agent_mesh = mesh.make_agent_mesh(N, 8)
    runner = loop.Runner(
        algorithm,
        sampling.iid(M),
        agent_mesh,
        metrics.make_evaluator(LOSS, failing),
        order=failing.order,
    )
    data = runner.shard_agents(parts)
    state = runner.init(runner.shard_agents(x0, what="params"), data, jax.random.key(0))
    hlo = None
    if failing.order is not None:  # the relabelled program, compiled once more to read it
        hlo = runner.lower_epochs(state, data, jax.random.key(1), epochs).compile().as_text()
    state, _ = loop.train(runner, state, data, jax.random.key(1), epochs, log_every=epochs)
    return np.asarray(runner.params(state)), failing, hlo


@pytest.fixture(scope="module")
def failure_runs():
    w = weights.metropolis_hastings(_shuffled_grid())
    parts, x0 = _problem(N)
    relabelled = _failure_run(comm.gossip(w, order="rcm"), parts, x0)
    plain = _failure_run(comm.gossip(w), parts, x0)
    return relabelled, plain, x0


def test_relabelled_link_failure_run_equals_the_plain_run_in_user_order(failure_runs):
    (got, failing, _), (want, plain, _), x0 = failure_runs
    assert failing.order is not None and not np.array_equal(failing.order, np.arange(N))
    assert failing.path_on(8) == "halo" and plain.path_on(8) == "dense"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.max(np.abs(got - x0)) > 1e-3  # the run moved


def test_relabelled_link_failure_program_exchanges_halos_only(failure_runs):
    (_, failing, hlo), (_, plain, _), _ = failure_runs
    assert "collective-permute" in hlo and "all-gather" not in hlo, failing.describe(8)
    assert "dense path" in plain.describe(8)  # the unrelabelled graph has no band
    assert f"sends {sum(failing.band)} rows" in failing.describe(8)


def test_relabelled_failures_and_sequences_draw_by_user_id():
    """Round ``k`` of a relabelled operator is the plain one's, permuted; on the device too."""
    a = _shuffled_grid()
    w = weights.metropolis_hastings(a)
    order = relabel.reverse_cuthill_mckee(w)
    # Symmetric failures run through a Runner above; push keeps the weight at the sender,
    # whose out-edge tables are the other layout (pull differs from it in the keeper).
    c = directed.column_stochastic(a)
    pairs = {
        "push": [
            tv.link_failures(comm.gossip(c, doubly_stochastic=False, order=o), 0.3, kind="push")
            for o in (order, None)
        ]
    }
    rounds = [w, weights.lazy(w)]
    pairs["sequence"] = [tv.sequence(rounds, order=o) for o in (order, None)]
    keys = _round_keys(2)
    ops = {kind: pair[0] for kind, pair in pairs.items()}
    assert {op.path_on(8) for op in ops.values()} == {"halo"}
    x = np.random.default_rng(0).normal(size=(N, 2))
    got = mix_rounds(ops, relabel.to_internal(x, order), keys)
    for kind, (ours, plain) in pairs.items():
        for k in range(len(keys)):
            which = k if kind == "sequence" else keys[k]
            want = tv.round_matrix(plain, which)  # dense, as the base matrices
            mine = tv.round_matrix(ours, which)
            np.testing.assert_array_equal(mine, want[np.ix_(order, order)], err_msg=kind)
            assert not np.array_equal(want, plain.matrix) or kind == "sequence", kind
            np.testing.assert_allclose(
                relabel.to_user(got[kind][k], order), want @ x, rtol=0, atol=1e-13, err_msg=kind
            )


# --------------------------------------------------------------------------------------
# Items 2 and 3: O(nnz) tables for graphs with many offsets; no b x n matrix.
# --------------------------------------------------------------------------------------


def test_star_failure_tables_are_order_nnz_and_the_mix_is_right():
    n = 2048  # |S| = n offsets: per-offset tables would hold n |S| = 4.2 M weights
    base = comm.gossip(weights.metropolis_hastings(topology.star(n, sparse=True)))
    nnz = base.matrix.nnz  # 3 n - 2
    tracemalloc.start()
    try:
        failing = tv.link_failures(base, 0.3)
        tables = failing.tables(8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(failing.offsets) == n and failing.path == "dense"
    entries = tables[0].n_agents  # 8 devices x the largest device's entries (the hub's)
    assert entries <= 4 * nnz, (entries, nnz)
    table_bytes = sum(t.host.nbytes for t in tables)
    assert table_bytes <= 4 * nnz * (4 * 4 + 8), table_bytes  # 4 int32 and 1 float64 each
    assert peak < 64 * 8 * nnz, peak  # per-offset float64 tables alone: 8 n^2 = 33 MB
    x = np.random.default_rng(0).normal(size=(n, 2))
    keys = _round_keys(1)
    got = mix_rounds({"star": failing}, x, keys)["star"][0]
    np.testing.assert_allclose(got, tv.round_matrix(failing, keys[0]) @ x, rtol=0, atol=1e-13)


def test_auto_path_never_builds_per_offset_tables_for_many_offsets():
    # A ring plus one random chord per agent from 60 lengths: |S| <= 123 <= n / 4, where
    # the fixed operator's "auto" takes the shift path, but each agent has 2-4 of them.
    n = 512
    rng = np.random.default_rng(0)
    i = np.arange(n)
    chords = (i + rng.choice(rng.choice(np.arange(2, n // 2), 60), n)) % n
    rows, cols = np.r_[i, i, (i + 1) % n, chords], np.r_[(i + 1) % n, chords, i, i]
    a = sp.csr_array((np.ones(4 * n, bool), (rows, cols)), shape=(n, n))
    a.setdiag(False)
    base = comm.gossip(weights.metropolis_hastings(a))
    assert base.path == "shift" and len(base.offsets) > comm.AUTO_SHIFT_MIN_OFFSETS
    failing = tv.link_failures(base, 0.2)
    assert failing.path == "dense" and failing.shift_tables == ()
    nnz = base.matrix.nnz
    assert failing.tables(8)[0].n_agents <= 2 * nnz < n * len(base.offsets) / 8
    # A circulant graph's per-offset tables are O(nnz): it keeps the shift path.
    exponential = comm.gossip(weights.metropolis_hastings(topology.exponential(n)))
    assert len(exponential.offsets) > comm.AUTO_SHIFT_MIN_OFFSETS
    assert tv.link_failures(exponential, 0.2).path == "shift"
    # An explicit path is kept.
    assert tv.link_failures(comm.gossip(base.matrix, path="shift"), 0.2).path == "shift"


def test_dense_time_varying_path_builds_no_block_by_n_matrix_and_states_memory():
    n, devices = 64, 8
    op = tv.link_failures(
        comm.gossip(weights.metropolis_hastings(topology.erdos_renyi(n, 0.3, seed=2))), 0.3
    )
    assert op.path == "dense"
    agent_mesh = mesh.make_agent_mesh(n, devices)

    def local(x, key):
        with op.in_round(0, key):
            return op.mix(x)

    fn = jax.jit(
        jax.shard_map(local, mesh=agent_mesh, in_specs=(AGENTS, jax.P()), out_specs=AGENTS)
    )
    x = jax.ShapeDtypeStruct((n, 5), np.float64, sharding=mesh.agent_sharding(agent_mesh))
    hlo = fn.lower(x, _round_keys(1)[0]).compile().as_text()
    assert "all-gather" in hlo
    assert f"[{n // devices},{n}]" not in hlo  # this device's rows of W_k, (b, n)
    text = op.describe(devices, 5 * 8)
    assert "dense path" in text and f"({n}, d) source" in text and "tables" in text


def test_entry_tables_group_rows_by_device_and_pad_with_self_loops():
    w = weights.metropolis_hastings(topology.star(16))
    tables, width, _ = time_varying_tables.entry_tables((w,), None, False, 4)
    ints = tables[0].host.reshape(4, width, 4)
    assert width == 16 + 3 * 2  # the hub's row and 3 leaves' two entries each
    for d in range(4):
        rows = ints[d, :, 0]
        assert np.all(np.diff(rows) >= 0)  # sorted within the device (segment_sum)
        pad = tables[1].host.reshape(4, width)[d] == 0
        np.testing.assert_array_equal(ints[d][pad][:, 2], ints[d][pad][:, 3])


# --------------------------------------------------------------------------------------
# Item 6: one check for dense and sparse W, with the shape in the message.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["dense", "sparse"])
def test_directed_operator_shape_message_names_the_shape(fmt):
    bad = np.ones((3, 4)) / 4
    bad = sp.csr_array(bad) if fmt == "sparse" else bad
    with pytest.raises(ValueError, match=r"got shape \(3, 4\)"):
        comm.gossip(bad, doubly_stochastic=False)
    with pytest.raises(ValueError, match=r"got shape \(3, 4\)"):
        comm.gossip(bad)


def test_sparse_w_is_checked_by_the_weights_check():
    from decentjax.core import gossip_tables

    assert not hasattr(gossip_tables, "check_sparse")
    shift = np.roll(np.eye(8), 1, axis=1)
    one_way = sp.csr_array(0.5 * np.eye(8) + 0.5 * shift)  # doubly stochastic, directed
    with pytest.raises(ValueError, match=r"W is not symmetric: .* at \(\d+, \d+\)"):
        comm.gossip(one_way)
    nan = sp.csr_array(weights.metropolis_hastings(topology.ring(8)))
    nan.data[0] = np.nan
    with pytest.raises(ValueError, match=r"W\[0, \d+\] = nan"):
        comm.gossip(nan)
    with pytest.raises(ValueError, match="non-finite"):
        comm.gossip(nan, doubly_stochastic=False)
