"""Tests for core.directed (directed graphs, R/C weights, Perron vectors, one-peer graphs).

Host-side NumPy only: structural invariants of every constructor, known degrees, the
stochasticity and support of R and C, Perron vectors to 1e-12, the push-sum correction
on an unbalanced graph, the exact averaging of the one-peer exponential graph, and every
error path with a message that names the offending value.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from decentjax.core import directed, topology

# name -> directed adjacency; every graph here must be strongly connected.
GRAPHS = {
    "ring2": directed.directed_ring(2),
    "ring7": directed.directed_ring(7),
    "ring100": directed.directed_ring(100),
    "exp2": directed.directed_exponential(2),
    "exp5": directed.directed_exponential(5),
    "exp16": directed.directed_exponential(16),
    "exp100": directed.directed_exponential(100),
    "unbalanced3": directed.unbalanced_example(3),
    "unbalanced6": directed.unbalanced_example(6),
    "unbalanced100": directed.unbalanced_example(100),
    "random1": directed.random_strongly_connected(1, 0.5, seed=0),
    "random12": directed.random_strongly_connected(12, 0.3, seed=0),
    "random100": directed.random_strongly_connected(100, 0.08, seed=1),
    "geometric20": directed.geometric_directed(20, 0.45, 0.5, seed=0),
    "geometric30_all": directed.geometric_directed(30, 0.4, 1.0, seed=3),
    "networkx_cycle": directed.from_networkx_digraph(nx.cycle_graph(5, create_using=nx.DiGraph)),
}
NAMES = list(GRAPHS)


def _adjacency_from_edges(n, edges):
    """A[dst, src] = True for each (src, dst): the module's j -> i convention."""
    a = np.zeros((n, n), dtype=bool)
    for src, dst in edges:
        a[dst, src] = True
    return a


# --------------------------------------------------------------------------------------
# Constructors.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_graph_invariants(name):
    a = GRAPHS[name]
    n = a.shape[0]
    assert a.dtype == np.bool_
    assert a.shape == (n, n)
    assert not np.diag(a).any()
    assert directed.is_strongly_connected(a)
    np.testing.assert_array_equal(directed.check_strongly_connected(a), a)
    np.testing.assert_array_equal(directed.out_degrees(a), a.sum(axis=0))
    np.testing.assert_array_equal(directed.in_degrees(a), a.sum(axis=1))


@pytest.mark.parametrize("n", [3, 5, 8])
def test_directed_ring_edges_and_degrees(n):
    a = directed.directed_ring(n)
    expected = _adjacency_from_edges(n, [(i, (i + 1) % n) for i in range(n)])
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(directed.in_degrees(a), np.ones(n))
    np.testing.assert_array_equal(directed.out_degrees(a), np.ones(n))
    assert not (a == a.T).all()  # one-way: i -> i + 1 but not back


def test_directed_exponential_degrees_and_edges():
    a = directed.directed_exponential(16)
    # floor(log2(15)) + 1 = 4 offsets: 1, 2, 4, 8.
    np.testing.assert_array_equal(directed.out_degrees(a), np.full(16, 4))
    np.testing.assert_array_equal(directed.in_degrees(a), np.full(16, 4))
    edges = [(i, (i + s) % 16) for i in range(16) for s in (1, 2, 4, 8)]
    np.testing.assert_array_equal(a, _adjacency_from_edges(16, edges))


@pytest.mark.parametrize("n", [2, 3, 5, 9, 17, 33])
def test_directed_exponential_out_degree_formula(n):
    expected = int(np.floor(np.log2(n - 1))) + 1
    np.testing.assert_array_equal(
        directed.out_degrees(directed.directed_exponential(n)), np.full(n, expected)
    )


def test_unbalanced_example_is_unbalanced():
    a = directed.unbalanced_example(5)
    assert directed.is_strongly_connected(a)
    assert directed.out_degrees(a)[0] == 4
    assert directed.in_degrees(a)[0] == 1
    assert (directed.out_degrees(a) != directed.in_degrees(a)).any()


def test_random_strongly_connected_is_reproducible_and_random():
    a1 = directed.random_strongly_connected(15, 0.3, seed=7)
    a2 = directed.random_strongly_connected(15, 0.3, seed=7)
    a3 = directed.random_strongly_connected(15, 0.3, seed=8)
    np.testing.assert_array_equal(a1, a2)
    assert (a1 != a3).any()
    assert (a1 != a1.T).any()  # genuinely directed
    np.testing.assert_array_equal(
        directed.random_strongly_connected(6, 1.0, seed=0), ~np.eye(6, dtype=bool)
    )


def test_random_strongly_connected_redraws_sparse_graphs():
    # p = 0.15 on 10 nodes is rarely strongly connected at the first draw; the
    # constructor must still return a strongly connected graph.
    a = directed.random_strongly_connected(10, 0.15, seed=0, max_tries=1000)
    assert directed.is_strongly_connected(a)


def test_geometric_directed_drops_directions_but_keeps_links():
    undirected = topology.random_geometric(25, 0.4, seed=5)
    a = directed.geometric_directed(25, 0.4, 0.7, seed=5)
    # Every directed link comes from an undirected one, and every undirected link keeps
    # at least one direction.
    assert not (a & ~undirected).any()
    np.testing.assert_array_equal(a | a.T, undirected)
    assert (a != a.T).any()
    assert directed.is_strongly_connected(a)
    np.testing.assert_array_equal(a, directed.geometric_directed(25, 0.4, 0.7, seed=5))
    np.testing.assert_array_equal(directed.geometric_directed(25, 0.4, 0.0, seed=5), undirected)


def test_from_networkx_digraph_orientation_and_order():
    g = nx.DiGraph()
    g.add_nodes_from(["c", "a", "b"])
    g.add_edges_from([("c", "a"), ("a", "b"), ("b", "c"), ("b", "b")])  # with a self-loop
    a = directed.from_networkx_digraph(g)
    # Nodes in insertion order c=0, a=1, b=2; edge u -> v is A[v, u].
    np.testing.assert_array_equal(a, _adjacency_from_edges(3, [(0, 1), (1, 2), (2, 0)]))


def test_from_networkx_digraph_round_trip():
    a = directed.random_strongly_connected(10, 0.3, seed=2)
    g = nx.DiGraph()
    g.add_nodes_from(range(10))
    g.add_edges_from((int(j), int(i)) for i, j in np.argwhere(a))  # A[i, j] means j -> i
    np.testing.assert_array_equal(directed.from_networkx_digraph(g), a)
    assert nx.is_strongly_connected(g) == directed.is_strongly_connected(a)


def test_check_directed_adjacency_accepts_numeric_and_drops_diagonal():
    a = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=np.float32)
    clean = directed.check_directed_adjacency(a)
    assert clean.dtype == np.bool_
    np.testing.assert_array_equal(clean, [[0, 1, 0], [0, 0, 1], [1, 0, 0]])


# --------------------------------------------------------------------------------------
# Weights.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_row_and_column_stochastic(name):
    a = GRAPHS[name]
    n = a.shape[0]
    r = directed.row_stochastic(a)
    c = directed.column_stochastic(a)
    np.testing.assert_allclose(r.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c.sum(axis=0), 1.0, rtol=0, atol=1e-14)
    # Sparsity: A plus the diagonal, nothing else.
    np.testing.assert_array_equal(r > 0, a | np.eye(n, dtype=bool))
    np.testing.assert_array_equal(c > 0, a | np.eye(n, dtype=bool))
    # Uniform over self and in-neighbours (R), self and out-neighbours (C).
    np.testing.assert_allclose(np.diag(r), 1.0 / (directed.in_degrees(a) + 1), atol=1e-15)
    np.testing.assert_allclose(np.diag(c), 1.0 / (directed.out_degrees(a) + 1), atol=1e-15)
    np.testing.assert_array_equal(directed.check_row_stochastic(r), r)
    np.testing.assert_array_equal(directed.check_column_stochastic(c), c)


def test_circulant_weights_are_doubly_stochastic():
    a = directed.directed_exponential(16)
    r = directed.row_stochastic(a)
    np.testing.assert_allclose(r, directed.column_stochastic(a), atol=1e-15)
    np.testing.assert_allclose(r.sum(axis=0), 1.0, atol=1e-14)
    np.testing.assert_allclose(r[r > 0], 1.0 / 5.0)


def test_row_stochastic_known_values():
    a = directed.unbalanced_example(3)  # 0 -> 1, 1 -> 2, 2 -> 0, 0 -> 2
    r = directed.row_stochastic(a)
    c = directed.column_stochastic(a)
    expected_r = [[1 / 2, 0, 1 / 2], [1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3]]
    expected_c = [[1 / 3, 0, 1 / 2], [1 / 3, 1 / 2, 0], [1 / 3, 1 / 2, 1 / 2]]
    np.testing.assert_allclose(r, expected_r, atol=1e-15)
    np.testing.assert_allclose(c, expected_c, atol=1e-15)


# --------------------------------------------------------------------------------------
# Perron vectors and the push-sum correction.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_perron_vectors(name):
    a = GRAPHS[name]
    n = a.shape[0]
    r = directed.row_stochastic(a)
    c = directed.column_stochastic(a)
    u = directed.perron_left(r)
    v = directed.perron_right(c)
    np.testing.assert_allclose(u @ r, u, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c @ v, v, rtol=0, atol=1e-12)
    assert abs(u.sum() - n) < 1e-12 and abs(v.sum() - n) < 1e-12
    # >= 0, not > 0: on unbalanced100 the exact u has entries far below rounding.
    assert u.min() >= 0 and v.min() >= 0
    rr, cc = directed.check_push_pull_pair(r, c)
    np.testing.assert_array_equal(rr, r)
    np.testing.assert_array_equal(cc, c)


def test_perron_vectors_match_eigendecomposition():
    a = directed.random_strongly_connected(30, 0.15, seed=4)
    r = directed.row_stochastic(a)
    vals, vecs = np.linalg.eig(r.T)
    ref = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    ref *= 30 / ref.sum()
    np.testing.assert_allclose(directed.perron_left(r), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [9, 100])
def test_perron_of_balanced_graph_is_uniform(n):
    # Circulant graphs are balanced, so u = v = 1 exactly; n = 100 rings mix slowest.
    for a in (directed.directed_ring(n), directed.directed_exponential(n)):
        u = directed.perron_left(directed.row_stochastic(a))
        v = directed.perron_right(directed.column_stochastic(a))
        np.testing.assert_allclose(u, 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(v, 1.0, rtol=0, atol=1e-12)


def test_perron_left_of_strongly_unbalanced_graph():
    # On unbalanced_example(n), node j >= 1 is heard only by node j + 1, which also
    # listens to node 0, so u halves at each step back from node n - 1 to node 1; for
    # n = 100, u_1 is about 2^-98 n, below rounding, and is returned as 0 (not negative).
    r = directed.row_stochastic(directed.unbalanced_example(100))
    u = directed.perron_left(r)
    assert u.min() >= 0
    assert u[0] > 10 and u[-1] > 10 and u[1] < 1e-12
    np.testing.assert_allclose(u[-6:-1] / u[-5:], 0.5, rtol=1e-12)
    np.testing.assert_allclose(u @ r, u, rtol=0, atol=1e-12)


def test_pulling_misses_mean_but_push_sum_recovers_it():
    a = directed.unbalanced_example(6)
    n = a.shape[0]
    r = directed.row_stochastic(a)
    c = directed.column_stochastic(a)
    x = np.arange(n, dtype=np.float64) ** 2
    mean = x.mean()

    # R is not column stochastic, so it does not preserve the sum of x.
    assert np.abs(r.sum(axis=0) - 1.0).max() > 0.1
    rk = np.linalg.matrix_power(r, 500)
    pulled = rk @ x
    u = directed.perron_left(r)
    # Consensus, but on the u-weighted average, which is far from the plain mean.
    np.testing.assert_allclose(pulled, u @ x / n, rtol=0, atol=1e-10)
    assert np.abs(pulled - mean).min() > 0.5

    # Push-sum: the ratio of C^k x to C^k 1 converges to the mean at every agent.
    ck = np.linalg.matrix_power(c, 500)
    ratio = (ck @ x) / (ck @ np.ones(n))
    np.testing.assert_allclose(ratio, mean, rtol=0, atol=1e-10)
    # And C^k -> v 1^T / n, with v the right Perron vector.
    v = directed.perron_right(c)
    np.testing.assert_allclose(ck, np.outer(v, np.ones(n)) / n, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------
# One-peer exponential graph.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 8, 16, 20])
def test_one_peer_exponential_matrices_doubly_stochastic(n):
    mats = directed.one_peer_exponential(n)
    assert len(mats) == int(np.ceil(np.log2(n)))
    for h, w in enumerate(mats):
        assert w.shape == (n, n)
        np.testing.assert_array_equal(w.sum(axis=1), 1.0)
        np.testing.assert_array_equal(w.sum(axis=0), 1.0)
        assert (w >= 0).all()
        # One peer: node i keeps 1/2 and pulls 1/2 from i + 2^h.
        np.testing.assert_array_equal(np.diag(w), 0.5)
        np.testing.assert_array_equal(w[np.arange(n), (np.arange(n) + 2**h) % n], 0.5)
        assert np.count_nonzero(w) == 2 * n


def test_one_peer_exponential_not_symmetric():
    mats = directed.one_peer_exponential(8)
    assert not np.array_equal(mats[0], mats[0].T)


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_one_peer_exponential_period_product_is_exact_average(n):
    prod = np.eye(n)
    for w in directed.one_peer_exponential(n):
        prod = w @ prod
    np.testing.assert_array_equal(prod, np.full((n, n), 1.0 / n))


def test_one_peer_exponential_not_exact_for_non_power_of_two():
    prod = np.eye(6)
    for w in directed.one_peer_exponential(6):
        prod = w @ prod
    assert np.abs(prod - 1.0 / 6).max() > 1e-3


# --------------------------------------------------------------------------------------
# Error paths.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "match"),
    [
        (directed.directed_ring, (1,), {}, r"directed_ring: n must be an integer >= 2, got n=1"),
        (directed.directed_ring, (3.0,), {}, r"n must be an integer"),
        (directed.directed_exponential, (True,), {}, r"directed_exponential: n must be"),
        (directed.unbalanced_example, (2,), {}, r"unbalanced_example: n must be .* >= 3"),
        (directed.one_peer_exponential, (1,), {}, r"one_peer_exponential: n must be .* >= 2"),
        (
            directed.random_strongly_connected,
            (5, 1.5),
            {"seed": 0},
            r"p must be in \[0, 1\], got p=1.5",
        ),
        (
            directed.random_strongly_connected,
            (5, 0.5),
            {"seed": 0, "max_tries": 0},
            r"max_tries must be an integer >= 1",
        ),
        (
            directed.geometric_directed,
            (10, 0.5, -0.1),
            {"seed": 0},
            r"drop_prob must be in \[0, 1\], got drop_prob=-0.1",
        ),
        (directed.geometric_directed, (10, 0.0, 0.5), {"seed": 0}, r"radius must be > 0"),
    ],
)
def test_bad_arguments(func, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        func(*args, **kwargs)


def test_random_strongly_connected_gives_up():
    with pytest.raises(ValueError, match=r"drew no strongly connected graph in max_tries=3"):
        directed.random_strongly_connected(10, 0.0, seed=0, max_tries=3)


def test_geometric_directed_gives_up():
    with pytest.raises(ValueError, match=r"drew no connected graph"):
        directed.geometric_directed(30, 0.01, 0.5, seed=0, max_tries=2)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((2, 3), dtype=bool), r"shape \(n, n\) with n >= 1, got shape \(2, 3\)"),
        (np.zeros(4, dtype=bool), r"got shape \(4,\)"),
        (np.zeros((0, 0), dtype=bool), r"got shape \(0, 0\)"),
        (np.array([[0, 2], [1, 0]]), r"entries must be 0 or 1 .*got A\[0, 1\] = 2"),
        (np.array([[0, np.nan], [1, 0]]), r"got A\[0, 1\] = nan"),
        (np.array([["a", "b"], ["c", "d"]]), r"bool or 0/1 numeric entries, got dtype <U1"),
    ],
)
def test_check_directed_adjacency_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        directed.check_directed_adjacency(bad)
    with pytest.raises(ValueError, match=match):
        directed.row_stochastic(bad)


def test_not_strongly_connected_names_node_that_cannot_reach_zero():
    # 0 -> 1 -> 2, nothing back: node 0 reaches everyone, so the message names a node
    # that cannot reach node 0.
    a = _adjacency_from_edges(3, [(0, 1), (1, 2)])
    assert not directed.is_strongly_connected(a)
    with pytest.raises(ValueError, match=r"3 strongly connected components; e.g. node 1 cannot "):
        directed.check_strongly_connected(a)


def test_not_strongly_connected_names_node_zero_cannot_reach():
    # Two directed rings {0, 1, 2} and {3, 4} joined only by 3 -> 0.
    edges = [(0, 1), (1, 2), (2, 0), (3, 4), (4, 3), (3, 0)]
    a = _adjacency_from_edges(5, edges)
    with pytest.raises(ValueError, match=r"2 strongly connected components; e.g. node 0 cannot "):
        directed.check_strongly_connected(a)
    with pytest.raises(ValueError, match=r"node 0 cannot reach node 3"):
        directed.check_strongly_connected(a)


def test_from_networkx_digraph_rejects_undirected_and_empty():
    with pytest.raises(ValueError, match=r"needs a directed graph, got an undirected Graph"):
        directed.from_networkx_digraph(nx.cycle_graph(4))
    with pytest.raises(ValueError, match=r"at least one node"):
        directed.from_networkx_digraph(nx.DiGraph())


def _bad_row(r, row, delta):
    r = r.copy()
    r[row, row] += delta
    return r


R4 = directed.row_stochastic(directed.directed_ring(4))
C4 = directed.column_stochastic(directed.directed_ring(4))


@pytest.mark.parametrize(
    ("check", "bad", "match"),
    [
        (directed.check_row_stochastic, _bad_row(R4, 2, 0.1), r"row 2 of R sums to 1.1"),
        (directed.check_column_stochastic, _bad_row(C4, 3, -0.25), r"column 3 of C sums to 0.75"),
        (
            directed.check_row_stochastic,
            np.array([[1.5, -0.5], [0.5, 0.5]]),
            r"R\[0, 1\] = -0.5 is negative",
        ),
        (
            directed.check_column_stochastic,
            np.array([[0.5, 1.5], [0.5, -0.5]]),
            r"C\[1, 1\] = -0.5 is negative",
        ),
        (directed.check_row_stochastic, np.ones((2, 3)) / 3, r"R must be a 2-D square array"),
        (directed.check_column_stochastic, np.ones(3), r"C must be a 2-D square .*shape \(3,\)"),
        (directed.check_row_stochastic, np.eye(2, dtype=bool), r"R must have real float"),
        (
            directed.check_row_stochastic,
            np.array([[np.nan, 1.0], [0.5, 0.5]]),
            r"R\[0, 0\] = nan; a row-stochastic matrix needs finite entries",
        ),
        (
            directed.check_row_stochastic,
            np.eye(3),
            r"support graph of R is not valid: directed graph is not strongly connected: "
            r"3 strongly connected components",
        ),
        (
            directed.check_column_stochastic,
            directed.column_stochastic(_adjacency_from_edges(3, [(0, 1), (1, 2)])),
            r"support graph of C .* 3 strongly connected components",
        ),
        (
            directed.check_row_stochastic,
            np.roll(np.eye(4), 1, axis=1),  # a cyclic permutation: period 4
            r"R is periodic: .* multiple of 4",
        ),
        (
            directed.check_column_stochastic,
            np.array([[0.0, 1.0], [1.0, 0.0]]),
            r"C is periodic: .* multiple of 2",
        ),
    ],
)
def test_stochastic_check_errors(check, bad, match):
    with pytest.raises(ValueError, match=match):
        check(bad)


def test_perron_rejects_invalid_matrices():
    with pytest.raises(ValueError, match=r"row 0 of R sums to"):
        directed.perron_left(np.array([[0.9, 0.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"not strongly connected"):
        # Reducible: the Perron vector is not unique.
        directed.perron_right(np.eye(4))
    with pytest.raises(ValueError, match=r"periodic"):
        directed.perron_left(np.array([[0.0, 1.0], [1.0, 0.0]]))


def test_aperiodic_without_self_weights_is_accepted():
    # Cycles of lengths 2 and 3 (gcd 1): primitive although every diagonal entry is 0.
    a = _adjacency_from_edges(3, [(0, 1), (1, 0), (1, 2), (2, 0)])
    r = a / a.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(directed.check_row_stochastic(r), r)
    u = directed.perron_left(r)
    np.testing.assert_allclose(u @ r, u, atol=1e-12)


def test_check_push_pull_pair_errors(monkeypatch):
    r5 = directed.row_stochastic(directed.directed_ring(5))
    with pytest.raises(ValueError, match=r"same shape .*R of shape \(4, 4\) and C of shape"):
        directed.check_push_pull_pair(R4, directed.column_stochastic(directed.directed_ring(5)))
    with pytest.raises(ValueError, match=r"row 2 of R sums to 1.1"):
        directed.check_push_pull_pair(_bad_row(R4, 2, 0.1), C4)
    c5 = directed.column_stochastic(directed.directed_ring(5))
    with pytest.raises(ValueError, match=r"column 1 of C sums to 1.2"):
        directed.check_push_pull_pair(r5, _bad_row(c5, 1, 0.2))
    # Different graphs for R and C are fine.
    directed.check_push_pull_pair(
        directed.row_stochastic(directed.directed_ring(6)),
        directed.column_stochastic(directed.unbalanced_example(6)),
    )
    # u^T v > 0 holds for every valid pair (u, v > 0 on strongly connected graphs), so
    # the guard is exercised by faking a Perron vector orthogonal to u.
    monkeypatch.setattr(directed, "perron_right", lambda c: np.array([1.0, -1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match=r"u\^T v > 0 .* got u\^T v = \S+ \(\|u\| \|v\| = 4\)"):
        directed.check_push_pull_pair(R4, C4)
