"""Sparse graphs end to end (issue 15, item 1 and the host side of item 4).

Every builder, weight rule, check and spectral quantity gives the same result for a
``scipy.sparse`` and a dense input (and builders for ``sparse=True`` / ``False``);
bad sparse input is rejected with the dense input's message; and a ring of 100,000
agents is built, weighted, checked and its spectral gap computed in seconds.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from decentjax.core import comm, directed, spectral, topology, weights
from decentjax.core import sparse as sparse_lib
from decentjax.core import time_varying as tv

EPS = float(np.finfo(np.float64).eps)

UNDIRECTED = {
    "ring": lambda s: topology.ring(10, sparse=s),
    "torus": lambda s: topology.torus(3, 4, sparse=s),
    "grid": lambda s: topology.grid(3, 5, sparse=s),
    "exponential": lambda s: topology.exponential(16, sparse=s),
    "complete": lambda s: topology.complete(6, sparse=s),
    "star": lambda s: topology.star(7, sparse=s),
    "erdos_renyi": lambda s: topology.erdos_renyi(30, 0.3, seed=1, sparse=s),
    "random_geometric": lambda s: topology.random_geometric(40, 0.35, seed=0, sparse=s),
    "networkx": lambda s: topology.from_networkx(nx.petersen_graph(), sparse=s),
}


def _ring_with_chord(sparse: bool):
    """Directed ring of 40 plus 0 -> 20: unbalanced and slowly mixing (its LU stays sparse)."""
    a = directed.directed_ring(40, sparse=False)
    a[20, 0] = True
    return sp.csr_array(a) if sparse else a


DIRECTED = {
    "ring_with_chord": _ring_with_chord,
    "directed_ring": lambda s: directed.directed_ring(9, sparse=s),
    "directed_exponential": lambda s: directed.directed_exponential(16, sparse=s),
    "unbalanced": lambda s: directed.unbalanced_example(8, sparse=s),
    "random": lambda s: directed.random_strongly_connected(20, 0.3, seed=2, sparse=s),
    "geometric": lambda s: directed.geometric_directed(30, 0.4, 0.5, seed=3, sparse=s),
    "networkx": lambda s: directed.from_networkx_digraph(
        nx.DiGraph([(0, 1), (1, 2), (2, 0), (0, 2)]), sparse=s
    ),
}


def _dense(m):
    return m.toarray() if sp.issparse(m) else m


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    return str(err.value)


@pytest.mark.parametrize("name", sorted(UNDIRECTED))
def test_undirected_builders_sparse_equal_dense(name):
    sparse, dense = UNDIRECTED[name](True), UNDIRECTED[name](False)
    assert isinstance(sparse, sp.csr_array) and sparse.dtype == np.bool_
    assert isinstance(dense, np.ndarray) and dense.dtype == np.bool_
    np.testing.assert_array_equal(sparse.toarray(), dense)
    assert topology.is_connected(sparse) and topology.is_connected(dense)
    np.testing.assert_array_equal(topology.degrees(sparse), topology.degrees(dense))


@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_directed_builders_sparse_equal_dense(name):
    sparse, dense = DIRECTED[name](True), DIRECTED[name](False)
    assert isinstance(sparse, sp.csr_array) and isinstance(dense, np.ndarray)
    np.testing.assert_array_equal(sparse.toarray(), dense)
    assert directed.is_strongly_connected(sparse)
    np.testing.assert_array_equal(directed.in_degrees(sparse), directed.in_degrees(dense))
    np.testing.assert_array_equal(directed.out_degrees(sparse), directed.out_degrees(dense))


def test_default_format_switches_above_the_threshold():
    n = sparse_lib.SPARSE_MIN_N
    assert isinstance(topology.ring(n), np.ndarray)
    big = topology.ring(n + 1)
    assert isinstance(big, sp.csr_array) and big.nnz == 2 * (n + 1)
    assert isinstance(directed.directed_ring(n + 1), sp.csr_array)
    with pytest.raises(ValueError, match="sparse must be None, True or False"):
        topology.ring(8, sparse="yes")


def test_erdos_renyi_sampler_above_the_threshold_has_the_right_density():
    n, p = sparse_lib.SPARSE_MIN_N + 904, 0.002  # 5000 nodes: the O(nnz) sampler.
    a = topology.erdos_renyi(n, p, seed=0)
    pairs = n * (n - 1) / 2
    edges = a.nnz / 2
    # Binomial(pairs, p): within 6 standard deviations.
    assert abs(edges - pairs * p) < 6 * math.sqrt(pairs * p * (1 - p))
    assert (a != a.T).nnz == 0 and not a.diagonal().any()


UNDIRECTED_RULES = {
    "metropolis_hastings": weights.metropolis_hastings,
    "metropolis_drr_loop": lambda a: weights.metropolis_drr(a, self_loop_in_degree=True),
    "metropolis_drr": lambda a: weights.metropolis_drr(a, self_loop_in_degree=False),
    "laplacian": weights.laplacian,
    "lazy_metropolis": lambda a: weights.lazy(weights.metropolis_hastings(a)),
}


@pytest.mark.parametrize("rule", sorted(UNDIRECTED_RULES))
@pytest.mark.parametrize("graph", sorted(UNDIRECTED))
def test_weight_rules_sparse_equal_dense(rule, graph):
    fn = UNDIRECTED_RULES[rule]
    w_sparse, w_dense = fn(UNDIRECTED[graph](True)), fn(UNDIRECTED[graph](False))
    assert isinstance(w_sparse, sp.csr_array) and isinstance(w_dense, np.ndarray)
    np.testing.assert_array_equal(w_sparse.toarray(), w_dense)
    checked = weights.check_mixing_matrix(w_sparse)
    assert isinstance(checked, sp.csr_array)
    np.testing.assert_array_equal(checked.toarray(), weights.check_mixing_matrix(w_dense))


@pytest.mark.parametrize("graph", ["ring", "torus", "exponential", "complete"])
def test_uniform_weights_sparse_equal_dense(graph):
    w_sparse = weights.uniform(UNDIRECTED[graph](True))
    np.testing.assert_array_equal(w_sparse.toarray(), weights.uniform(UNDIRECTED[graph](False)))


@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_stochastic_weights_and_perron_vectors_sparse_equal_dense(name):
    a_sparse, a_dense = DIRECTED[name](True), DIRECTED[name](False)
    for build, perron in (
        (directed.row_stochastic, directed.perron_left),
        (directed.column_stochastic, directed.perron_right),
    ):
        m_sparse, m_dense = build(a_sparse), build(a_dense)
        assert isinstance(m_sparse, sp.csr_array)
        np.testing.assert_array_equal(m_sparse.toarray(), m_dense)
        np.testing.assert_array_equal(perron(m_sparse), perron(m_dense))
    r, c = directed.check_push_pull_pair(
        directed.row_stochastic(a_sparse), directed.column_stochastic(a_sparse)
    )
    assert isinstance(r, sp.csr_array) and isinstance(c, sp.csr_array)


@pytest.mark.parametrize("name", ["ring_with_chord", "unbalanced", "random", "geometric"])
def test_sparse_perron_solve_equals_the_dense_one(name):
    # The method is picked by n (dense LU up to 1024 agents), so compare the sparse
    # solver with the dense one directly on small graphs: power iteration on the
    # well-mixing ones, sparse LU on the slowly mixing ring with a chord.
    r = directed.row_stochastic(DIRECTED[name](True))
    m = sp.csr_array(r.T)
    dense = directed._stationary(m.toarray(), "R")
    sparse = directed._accept(m, directed._stationary_sparse(m), "R")
    # Both solve to rounding; the systems' condition grows with the Perron vector's
    # spread, so the tolerance scales with its largest entry.
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e3 * len(dense) * EPS * dense.max())


def test_connected_components_sparse_equal_dense_and_ordered():
    a = np.zeros((7, 7), dtype=bool)
    for i, j in [(0, 5), (1, 2), (3, 4), (4, 6)]:
        a[i, j] = a[j, i] = True
    labels = topology.connected_components(sp.csr_array(a))
    np.testing.assert_array_equal(labels, topology.connected_components(a))
    np.testing.assert_array_equal(labels, [0, 1, 1, 2, 2, 0, 2])
    assert _message(topology.check_connected, sp.csr_array(a)) == _message(
        topology.check_connected, a
    )


def _ring_with_bad(value_at: tuple[int, int], value: float) -> np.ndarray:
    w = weights.metropolis_hastings(topology.ring(6))
    w[value_at] = value
    return w


BAD_ADJACENCY = {
    "not square": np.ones((3, 4), dtype=bool),
    "entry 2": np.array([[0, 2], [2, 0]]),
    "entry nan": np.array([[0.0, np.nan], [np.nan, 0.0]]),
    "asymmetric": np.triu(np.ones((4, 4)), k=1),
}


@pytest.mark.parametrize("name", sorted(BAD_ADJACENCY))
def test_bad_sparse_adjacency_rejected_with_the_dense_message(name):
    a = BAD_ADJACENCY[name]
    assert _message(topology.check_adjacency, sp.csr_array(a)) == _message(
        topology.check_adjacency, a
    )


BAD_MIXING = {
    "negative": _ring_with_bad((0, 3), -0.5),
    "row sum": _ring_with_bad((0, 0), 0.5),
    "asymmetric": 0.5 * (np.eye(5) + np.roll(np.eye(5), 1, axis=1)),
    "disconnected": np.kron(np.eye(2), weights.metropolis_hastings(topology.ring(3))),
    "bipartite": weights.laplacian(topology.ring(6), alpha=0.5),
    "nonfinite": _ring_with_bad((2, 2), np.inf),
}


@pytest.mark.parametrize("name", sorted(BAD_MIXING))
def test_bad_sparse_mixing_matrix_rejected_with_the_dense_message(name):
    w = BAD_MIXING[name]
    assert _message(weights.check_mixing_matrix, sp.csr_array(w)) == _message(
        weights.check_mixing_matrix, w
    )


def test_bad_sparse_stochastic_matrices_rejected_with_the_dense_message():
    not_strong = directed.row_stochastic(np.triu(np.ones((4, 4), dtype=bool), k=1))
    periodic = np.roll(np.eye(4), 1, axis=1)  # A permutation: strongly connected, period 4.
    for bad, check in (
        (not_strong, directed.check_row_stochastic),
        (periodic, directed.check_column_stochastic),
    ):
        assert _message(check, sp.csr_array(bad)) == _message(check, bad)


SPECTRA = {
    "ring": weights.metropolis_hastings(topology.ring(40)),
    "torus": weights.metropolis_hastings(topology.torus(5, 6)),
    "geometric": weights.metropolis_hastings(topology.random_geometric(60, 0.3, seed=1)),
    "erdos_renyi": weights.metropolis_hastings(topology.erdos_renyi(50, 0.2, seed=0)),
    "lazy exponential": weights.lazy(weights.metropolis_hastings(topology.exponential(32))),
    # No self-weights: Gershgorin cannot settle lambda_min, so W^T W is used.
    "odd ring, alpha = 1/2": weights.laplacian(topology.ring(9), alpha=0.5),
    # Doubly stochastic, not symmetric: W^T W.
    "one-peer average": sum(directed.one_peer_exponential(12)) / 4,
    "complete": weights.metropolis_hastings(topology.complete(8)),
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_iterative_spectral_gap_equals_dense(name):
    w = SPECTRA[name]
    n = w.shape[0]
    dense_gap = weights.spectral_gap(w, method="dense")
    dense_rate = weights.mixing_rate(w, method="dense")
    for given in (w, sp.csr_array(w)):
        gap = spectral.spectral_gap(given, method="iterative")
        rate = spectral.mixing_rate(given, method="iterative")
        # ARPACK's relative tolerance on 1/gap, plus the dense SVD's O(n eps) rounding.
        tol = spectral.ARPACK_TOL * dense_gap + 16 * n * EPS
        assert abs(gap - dense_gap) <= tol, (gap, dense_gap)
        assert abs(rate - dense_rate) <= tol, (rate, dense_rate)


def test_iterative_spectrum_of_a_disconnected_or_non_stochastic_matrix():
    disconnected = BAD_MIXING["disconnected"]
    assert spectral.spectral_gap(sp.csr_array(disconnected), method="iterative") == 0.0
    r = directed.row_stochastic(DIRECTED["unbalanced"](True))
    with pytest.raises(ValueError, match="needs a doubly stochastic W, but column 0 sums to 3"):
        spectral.mixing_rate(r, method="iterative")
    with pytest.raises(ValueError, match="method must be"):
        spectral.mixing_rate(SPECTRA["ring"], method="arpack")


def test_shift_decomposition_reads_sparse_and_dense_alike():
    w = weights.metropolis_hastings(topology.random_geometric(40, 0.35, seed=0))
    offsets, coeffs = sparse_lib.shift_decomposition(sp.csr_array(w))
    # The definition, densely: c_s[i] = w[i, (i + s) mod n] for every offset s in use.
    n = w.shape[0]
    i = np.arange(n)
    every = np.stack([w[i, (i + s) % n] for s in range(n)])
    ref_offsets = tuple(int(s) for s in np.flatnonzero(np.any(every != 0.0, axis=1)))
    assert offsets == ref_offsets
    np.testing.assert_array_equal(coeffs, every[list(ref_offsets)])
    dense_offsets, dense_coeffs = sparse_lib.shift_decomposition(w)  # dense input
    assert dense_offsets == offsets
    np.testing.assert_array_equal(dense_coeffs, coeffs)
    op_sparse, op_dense = comm.gossip(sp.csr_array(w)), comm.gossip(w)
    np.testing.assert_array_equal(op_sparse.matrix.toarray(), op_dense.matrix)


def test_time_varying_sequence_of_sparse_matrices_equals_dense():
    op_sparse = tv.sequence(directed.one_peer_exponential(8, sparse=True))
    op_dense = tv.sequence(directed.one_peer_exponential(8, sparse=False))
    assert op_sparse.offsets == op_dense.offsets
    assert op_sparse.path == op_dense.path == "shift"
    for got, want in zip(op_sparse.shift_tables, op_dense.shift_tables, strict=True):
        np.testing.assert_array_equal(got.host, want.host)  # per-round coefficients, ids
    for k in range(3):
        np.testing.assert_array_equal(
            _dense(tv.round_matrix(op_sparse, k)), tv.round_matrix(op_dense, k)
        )
    bad = [sp.csr_array(m) for m in directed.one_peer_exponential(8)]
    bad[1] = bad[1] * 0.5
    assert _message(tv.sequence, bad) == _message(tv.sequence, [m.toarray() for m in bad])


def test_ring_of_100000_weights_checks_and_gap_in_seconds():
    n = 100_000
    a = topology.ring(n)
    assert isinstance(a, sp.csr_array) and a.nnz == 2 * n
    w = weights.check_mixing_matrix(weights.metropolis_hastings(a))
    assert isinstance(w, sp.csr_array) and w.nnz == 3 * n
    gap = weights.spectral_gap(w)
    # W = I/3 + (P + P^T)/3: gap = (2/3)(1 - cos(2 pi / n)), written without cancellation.
    exact = (4.0 / 3.0) * math.sin(math.pi / n) ** 2
    # Rounding of the sparse solves is relative to ||I - W|| / gap, plus ARPACK's tolerance.
    tol = 64 * EPS * (4.0 / 3.0) / exact + spectral.ARPACK_TOL
    assert abs(gap - exact) <= tol * exact, (gap, exact)


def test_random_geometric_of_20000_with_metropolis_weights():
    n = 20_000
    # Mean degree about 14: a geometric graph is connected w.h.p. only above ln(n) ~ 10.
    a = topology.random_geometric(n, math.sqrt(14 / (math.pi * n)), seed=0)
    assert isinstance(a, sp.csr_array)
    assert 12 < a.nnz / n < 15
    w = weights.check_mixing_matrix(weights.metropolis_hastings(a))
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)), 1.0, rtol=0, atol=16 * EPS)
