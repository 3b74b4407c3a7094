"""Tests for core.topology (graphs) and core.weights (mixing matrices).

Both modules are host-side NumPy, so these tests use small graphs and exact checks:
structural invariants for every graph, known degrees and weights, the spectral gap
against an eigendecomposition, and every error path with a message that names the
offending value.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from decentjax.core import topology, weights

# name -> adjacency; every graph here must be connected.
GRAPHS = {
    "ring2": topology.ring(2),
    "ring3": topology.ring(3),
    "ring8": topology.ring(8),
    "torus3x4": topology.torus(3, 4),
    "torus1x5": topology.torus(1, 5),
    "torus2x2": topology.torus(2, 2),
    "torus2x3": topology.torus(2, 3),
    "torus1x2": topology.torus(1, 2),
    "grid4x4": topology.grid(4, 4),
    "grid1x5": topology.grid(1, 5),
    "grid3x2": topology.grid(3, 2),
    "exp2": topology.exponential(2),
    "exp5": topology.exponential(5),
    "exp16": topology.exponential(16),
    "complete1": topology.complete(1),
    "complete5": topology.complete(5),
    "star6": topology.star(6),
    "er16": topology.erdos_renyi(16, 0.5, seed=0),
    "geometric20": topology.random_geometric(20, 0.4, seed=0),
    "petersen": topology.from_networkx(nx.petersen_graph()),
    "karate": topology.from_networkx(nx.karate_club_graph()),
}
# Graphs with at least 2 nodes, for weight checks that need a second eigenvalue.
MULTI_NODE = [name for name, a in GRAPHS.items() if a.shape[0] >= 2]
REGULAR = [name for name in MULTI_NODE if len(set(GRAPHS[name].sum(axis=1).tolist())) == 1]

# name -> (adjacency -> W). Each must give a symmetric doubly stochastic W with the
# graph's sparsity pattern on every graph in MULTI_NODE.
WEIGHT_FNS = {
    "metropolis_hastings": weights.metropolis_hastings,
    "metropolis_drr_loop": lambda a: weights.metropolis_drr(a, self_loop_in_degree=True),
    "metropolis_drr_noloop": lambda a: weights.metropolis_drr(a, self_loop_in_degree=False),
    "lazy_metropolis_hastings": lambda a: weights.lazy(weights.metropolis_hastings(a)),
    "laplacian": weights.laplacian,
    "averaging": lambda a: weights.averaging(a.shape[0]),
}


def _second_largest_abs_eigenvalue(w: np.ndarray) -> float:
    return float(np.sort(np.abs(np.linalg.eigvalsh(w)))[-2])


# --------------------------------------------------------------------------------------
# Graph invariants and known structure.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_is_symmetric_bool_without_self_loops_and_connected(name):
    a = GRAPHS[name]
    n = a.shape[0]
    assert a.dtype == np.bool_
    assert a.shape == (n, n)
    np.testing.assert_array_equal(a, a.T)
    assert not a.diagonal().any()
    assert topology.is_connected(a)
    np.testing.assert_array_equal(topology.check_connected(a), a)
    np.testing.assert_array_equal(topology.check_adjacency(a), a)


@pytest.mark.parametrize("n", [3, 4, 8, 17])
def test_ring_degree_two(n):
    a = topology.ring(n)
    assert a.shape == (n, n)
    np.testing.assert_array_equal(topology.degrees(a), np.full(n, 2))
    assert a[0, 1] and a[0, n - 1]


def test_ring_of_two_is_a_single_edge():
    np.testing.assert_array_equal(topology.ring(2), [[False, True], [True, False]])


@pytest.mark.parametrize(("rows", "cols"), [(3, 3), (3, 4), (5, 3)])
def test_torus_degree_four(rows, cols):
    a = topology.torus(rows, cols)
    assert a.shape == (rows * cols, rows * cols)
    np.testing.assert_array_equal(topology.degrees(a), np.full(rows * cols, 4))
    # Node (0, 0) wraps to (rows - 1, 0) and (0, cols - 1).
    assert a[0, (rows - 1) * cols] and a[0, cols - 1]


@pytest.mark.parametrize(
    ("rows", "cols", "degree"),
    [(1, 1, 0), (1, 2, 1), (2, 1, 1), (2, 2, 2), (2, 3, 3), (1, 3, 2), (2, 5, 3)],
)
def test_torus_small_sides_merge_duplicate_neighbours(rows, cols, degree):
    a = topology.torus(rows, cols)
    np.testing.assert_array_equal(topology.degrees(a), np.full(rows * cols, degree))


def test_torus_with_one_row_is_a_ring():
    np.testing.assert_array_equal(topology.torus(1, 6), topology.ring(6))
    np.testing.assert_array_equal(topology.torus(6, 1), topology.ring(6))


def test_grid_degrees_and_edges():
    a = topology.grid(4, 4, n=16)
    expected = np.array([[2, 3, 3, 2], [3, 4, 4, 3], [3, 4, 4, 3], [2, 3, 3, 2]]).ravel()
    np.testing.assert_array_equal(topology.degrees(a), expected)
    assert a.sum() // 2 == 2 * 4 * 4 - 4 - 4
    assert not a[0, 3]  # no wrap-around
    np.testing.assert_array_equal(topology.grid(1, 5), topology.ring(5) & ~_wrap_edge(5))


def _wrap_edge(n: int) -> np.ndarray:
    e = np.zeros((n, n), dtype=bool)
    e[0, n - 1] = e[n - 1, 0] = True
    return e


def test_exponential_16_neighbours():
    a = topology.exponential(16)
    # Offsets +-1, +-2, +-4 and 8 (= -8 mod 16): 7 neighbours.
    np.testing.assert_array_equal(topology.degrees(a), np.full(16, 7))
    np.testing.assert_array_equal(np.flatnonzero(a[0]), [1, 2, 4, 8, 12, 14, 15])
    # Circulant: row i is row 0 shifted by i.
    np.testing.assert_array_equal(a[5], np.roll(a[0], 5))


@pytest.mark.parametrize(("n", "degree"), [(2, 1), (3, 2), (5, 4), (9, 6), (17, 8)])
def test_exponential_degrees(n, degree):
    # n=17: offsets +-1, +-2, +-4, +-8, +-16, and +-16 = -+1 mod 17 merge with +-1 -> 8.
    np.testing.assert_array_equal(topology.degrees(topology.exponential(n)), np.full(n, degree))


def test_complete_and_star_degrees():
    np.testing.assert_array_equal(topology.degrees(topology.complete(5)), np.full(5, 4))
    np.testing.assert_array_equal(topology.complete(1), [[False]])
    np.testing.assert_array_equal(topology.degrees(topology.star(6)), [5, 1, 1, 1, 1, 1])


def test_erdos_renyi_is_reproducible_from_its_seed():
    a = topology.erdos_renyi(16, 0.5, seed=7)
    np.testing.assert_array_equal(a, topology.erdos_renyi(16, 0.5, seed=7))
    assert not np.array_equal(a, topology.erdos_renyi(16, 0.5, seed=8))
    np.testing.assert_array_equal(topology.erdos_renyi(6, 1.0, seed=0), topology.complete(6))
    np.testing.assert_array_equal(topology.erdos_renyi(1, 0.0, seed=0), [[False]])


def test_random_geometric_is_reproducible_and_radius_controls_density():
    a = topology.random_geometric(15, 0.5, seed=3)
    np.testing.assert_array_equal(a, topology.random_geometric(15, 0.5, seed=3))
    np.testing.assert_array_equal(
        topology.random_geometric(7, math.sqrt(2), seed=0), topology.complete(7)
    )


def test_from_networkx_petersen_and_karate():
    a = topology.from_networkx(nx.petersen_graph())
    assert a.shape == (10, 10)
    np.testing.assert_array_equal(topology.degrees(a), np.full(10, 3))
    karate = nx.karate_club_graph()
    b = topology.from_networkx(karate)
    np.testing.assert_array_equal(b, nx.to_numpy_array(karate) != 0)
    np.testing.assert_array_equal(topology.degrees(b), [d for _, d in karate.degree()])


def test_from_networkx_uses_insertion_order_and_drops_self_loops():
    g = nx.Graph()
    g.add_nodes_from(["c", "a", "b"])
    g.add_edges_from([("c", "a"), ("a", "b"), ("b", "b")])
    a = topology.from_networkx(g)
    # Node order is c, a, b: edges c-a = (0, 1), a-b = (1, 2); the loop b-b is dropped.
    np.testing.assert_array_equal(a, [[0, 1, 0], [1, 0, 1], [0, 1, 0]])


def test_check_adjacency_accepts_numeric_zero_one_and_drops_diagonal():
    a = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]])  # self-loops, as in the D-RR code
    out = topology.check_adjacency(a)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, topology.grid(1, 3))
    np.testing.assert_array_equal(topology.check_adjacency(a.astype(float)), out)
    assert a[0, 0] == 1  # the input is not modified


def test_degrees_and_components_of_a_disconnected_graph():
    a = np.zeros((5, 5), dtype=bool)
    a[0, 1] = a[1, 0] = True
    a[3, 4] = a[4, 3] = True
    np.testing.assert_array_equal(topology.degrees(a), [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(topology.connected_components(a), [0, 0, 1, 2, 2])
    assert not topology.is_connected(a)


# --------------------------------------------------------------------------------------
# Graph error paths.
# --------------------------------------------------------------------------------------


def test_check_connected_rejects_disconnected_graph():
    a = np.zeros((4, 4), dtype=bool)
    a[0, 1] = a[1, 0] = True
    a[2, 3] = a[3, 2] = True
    with pytest.raises(ValueError, match=r"graph is disconnected: 2 components \(sizes 2, 2\)"):
        topology.check_connected(a)
    with pytest.raises(ValueError, match="graph is disconnected: 3 components"):
        topology.check_connected(np.zeros((3, 3), dtype=bool))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros(3, dtype=bool), r"got shape \(3,\)"),
        (np.zeros((2, 3), dtype=bool), r"got shape \(2, 3\)"),
        (np.zeros((2, 2, 2), dtype=bool), r"got shape \(2, 2, 2\)"),
        (np.zeros((0, 0), dtype=bool), r"n >= 1, got shape \(0, 0\)"),
        (np.array([[0, 2], [2, 0]]), r"must be 0 or 1 .*A\[0, 1\] = 2"),
        (np.array([[0, 0.5], [0.5, 0]]), r"A\[0, 1\] = 0.5"),
        (np.array([[0, np.nan], [np.nan, 0]]), r"A\[0, 1\] = nan"),
        (np.array([[0, 1j], [1j, 0]]), "got dtype complex128"),
        (np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0]]), r"symmetric.*A\[0, 1\] = True"),
    ],
)
def test_check_adjacency_rejects(value, match):
    with pytest.raises(ValueError, match=match):
        topology.check_adjacency(value)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: topology.ring(1), r"ring: n must be an integer >= 2, got n=1"),
        (lambda: topology.ring(4.0), r"ring: n must be an integer >= 2, got n=4.0"),
        (lambda: topology.ring(True), r"got n=True of type bool"),
        (lambda: topology.torus(0, 3), r"torus: rows must be an integer >= 1, got rows=0"),
        (lambda: topology.torus(3, -1), r"torus: cols must be an integer >= 1, got cols=-1"),
        (lambda: topology.torus(3, 3, n=8), r"rows=3, cols=3 \(rows \* cols = 9\) but n=8"),
        (lambda: topology.grid(2, 2, n=5), r"grid: rows \* cols must equal n.*n=5"),
        (lambda: topology.grid(2, 0), r"grid: cols must be an integer >= 1, got cols=0"),
        (lambda: topology.exponential(1), r"exponential: n must be an integer >= 2, got n=1"),
        (lambda: topology.complete(0), r"complete: n must be an integer >= 1, got n=0"),
        (lambda: topology.star(1), r"star: n must be an integer >= 2, got n=1"),
        (lambda: topology.erdos_renyi(0, 0.5, seed=0), r"erdos_renyi: n .* got n=0"),
        (lambda: topology.erdos_renyi(5, 1.5, seed=0), r"p must be in \[0, 1\], got p=1.5"),
        (lambda: topology.erdos_renyi(5, -0.1, seed=0), r"p must be in \[0, 1\], got p=-0.1"),
        (lambda: topology.erdos_renyi(5, math.nan, seed=0), r"p must be finite, got p=nan"),
        (lambda: topology.erdos_renyi(5, "0.5", seed=0), r"p must be a real number"),
        (lambda: topology.random_geometric(5, 0.0, seed=0), r"radius must be > 0, got radius=0"),
        (lambda: topology.random_geometric(5, -1, seed=0), r"got radius=-1"),
        (lambda: topology.random_geometric(0, 0.5, seed=0), r"n must be an integer >= 1"),
        (
            lambda: topology.random_geometric(5, 0.5, seed=0, max_tries=0),
            r"max_tries must be an integer >= 1, got max_tries=0",
        ),
    ],
)
def test_constructor_argument_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_erdos_renyi_with_p_zero_is_disconnected():
    with pytest.raises(
        ValueError, match=r"erdos_renyi\(n=8, p=0.0, seed=0\) drew a disconnected graph.*larger p"
    ):
        topology.erdos_renyi(8, 0.0, seed=0)


def test_random_geometric_gives_up_after_max_tries():
    with pytest.raises(
        ValueError, match=r"radius=0.01, seed=1\) drew no connected graph in max_tries=3 draws"
    ):
        topology.random_geometric(30, 0.01, seed=1, max_tries=3)


def test_from_networkx_rejects_directed_and_empty_graphs():
    with pytest.raises(ValueError, match="undirected graph, got a directed DiGraph"):
        topology.from_networkx(nx.DiGraph([(0, 1), (1, 0)]))
    with pytest.raises(ValueError, match="got 0 nodes"):
        topology.from_networkx(nx.Graph())


# --------------------------------------------------------------------------------------
# Mixing matrices: invariants over every (weights, graph) pair.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("graph", MULTI_NODE)
@pytest.mark.parametrize("weight_fn", WEIGHT_FNS)
def test_weights_are_symmetric_doubly_stochastic_on_the_graph(weight_fn, graph):
    a = GRAPHS[graph]
    w = WEIGHT_FNS[weight_fn](a)
    n = a.shape[0]
    assert w.dtype == np.float64
    assert w.shape == (n, n)
    np.testing.assert_allclose(w, w.T, rtol=0, atol=1e-15)
    np.testing.assert_allclose(w.sum(axis=0), np.ones(n), rtol=0, atol=1e-14)
    np.testing.assert_allclose(w.sum(axis=1), np.ones(n), rtol=0, atol=1e-14)
    assert (w >= 0).all()
    expected_support = topology.complete(n) if weight_fn == "averaging" else a
    np.testing.assert_array_equal(weights.support(w), expected_support)
    np.testing.assert_array_equal(weights.check_mixing_matrix(w), w)
    gap = weights.spectral_gap(w)
    assert 0 < gap <= 1
    np.testing.assert_allclose(gap, 1 - _second_largest_abs_eigenvalue(w), rtol=0, atol=1e-12)
    np.testing.assert_allclose(weights.mixing_rate(w), 1 - gap, rtol=0, atol=1e-15)


@pytest.mark.parametrize("graph", REGULAR)
def test_uniform_weights_on_regular_graphs(graph):
    a = GRAPHS[graph]
    w = weights.uniform(a)
    d = a[0].sum()
    np.testing.assert_allclose(w[a], 1 / (d + 1), rtol=0, atol=0)
    np.testing.assert_allclose(w.diagonal(), 1 / (d + 1), rtol=0, atol=0)
    weights.check_mixing_matrix(w)
    np.testing.assert_allclose(
        weights.spectral_gap(w), 1 - _second_largest_abs_eigenvalue(w), rtol=0, atol=1e-12
    )


def test_regular_table_covers_the_expected_graphs():
    assert {"ring8", "torus3x4", "exp16", "complete5", "petersen"} <= set(REGULAR)
    assert "star6" not in REGULAR and "grid4x4" not in REGULAR


def test_single_agent_weights_are_one():
    a = topology.complete(1)
    for fn in WEIGHT_FNS.values():
        np.testing.assert_array_equal(fn(a), [[1.0]])
    np.testing.assert_array_equal(weights.uniform(a), [[1.0]])
    assert weights.spectral_gap(weights.averaging(1)) == 1.0


# --------------------------------------------------------------------------------------
# Mixing matrices: known values.
# --------------------------------------------------------------------------------------


def test_uniform_ring_and_torus_values():
    w = weights.uniform(topology.ring(8))
    np.testing.assert_allclose(w[0, [7, 0, 1]], [1 / 3] * 3, rtol=0, atol=0)
    assert w[0, 2] == 0
    # Circulant eigenvalues (1 + 2 cos(2 pi k / n)) / 3; the largest nontrivial is k=1.
    np.testing.assert_allclose(
        weights.spectral_gap(w), 1 - (1 + 2 * math.cos(2 * math.pi / 8)) / 3, rtol=1e-13
    )
    np.testing.assert_allclose(weights.uniform(topology.ring(2)), np.full((2, 2), 0.5))
    w = weights.uniform(topology.torus(3, 3))
    np.testing.assert_allclose(w[0, [0, 1, 2, 3, 6]], [0.2] * 5, rtol=0, atol=0)


def test_metropolis_hastings_values():
    np.testing.assert_allclose(
        weights.metropolis_hastings(topology.ring(6)), weights.uniform(topology.ring(6))
    )
    w = weights.metropolis_hastings(topology.star(5))
    np.testing.assert_allclose(w[0], np.full(5, 1 / 5), rtol=0, atol=1e-15)
    np.testing.assert_allclose(w.diagonal()[1:], np.full(4, 4 / 5), rtol=0, atol=1e-15)
    # Grid corner (degree 2) to border node (degree 3): 1 / (1 + 3).
    assert weights.metropolis_hastings(topology.grid(3, 3))[0, 1] == 0.25


def test_metropolis_drr_matches_the_reference_code():
    # Ring with the self-loop in the degree (as in Kun Huang's Ring_graph): 1/6 and 2/3,
    # and 1/12 and 5/6 after the lazy step the D-RR optimisers apply.
    w = weights.metropolis_drr(topology.ring(8), self_loop_in_degree=True)
    np.testing.assert_allclose(w[0, [1, 7]], [1 / 6, 1 / 6], rtol=0, atol=1e-15)
    np.testing.assert_allclose(w.diagonal(), np.full(8, 2 / 3), rtol=0, atol=1e-15)
    w_lazy = weights.lazy(w)
    np.testing.assert_allclose(w_lazy[0, [0, 1]], [5 / 6, 1 / 12], rtol=0, atol=1e-15)
    # Grid without the self-loop: corner (degree 2) to border (degree 3) is 1/(2*3).
    w = weights.metropolis_drr(topology.grid(4, 4), self_loop_in_degree=False)
    np.testing.assert_allclose(w[0, 1], 1 / 6, rtol=0, atol=1e-15)
    np.testing.assert_allclose(w[5, 6], 1 / 8, rtol=0, atol=1e-15)  # interior pair


def test_lazy_halves_off_diagonal_and_moves_eigenvalues():
    w = weights.metropolis_hastings(topology.erdos_renyi(10, 0.4, seed=2))
    w_lazy = weights.lazy(w)
    off = ~np.eye(10, dtype=bool)
    np.testing.assert_allclose(w_lazy[off], w[off] / 2, rtol=0, atol=0)
    np.testing.assert_allclose(w_lazy.diagonal(), (1 + w.diagonal()) / 2, rtol=0, atol=0)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(w_lazy), (1 + np.linalg.eigvalsh(w)) / 2, rtol=0, atol=1e-14
    )
    assert np.linalg.eigvalsh(w_lazy).min() >= 0


def test_laplacian_values():
    a = topology.ring(6)
    # Default alpha = 1 / (d_max + 1) = 1/3 on a ring equals uniform weights.
    np.testing.assert_allclose(weights.laplacian(a), weights.uniform(a), rtol=0, atol=1e-15)
    w = weights.laplacian(a, alpha=0.25)
    np.testing.assert_allclose(w[0, [0, 1, 5]], [0.5, 0.25, 0.25], rtol=0, atol=0)
    w = weights.laplacian(topology.star(5), alpha=0.25)
    np.testing.assert_allclose(w.diagonal(), [0.0, 0.75, 0.75, 0.75, 0.75], rtol=0, atol=0)


def test_averaging_has_gap_one():
    w = weights.averaging(7)
    np.testing.assert_allclose(w, np.full((7, 7), 1 / 7), rtol=0, atol=0)
    np.testing.assert_allclose(weights.spectral_gap(w), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(weights.mixing_rate(w), 0.0, rtol=0, atol=1e-15)


def test_sparser_graphs_mix_slower():
    gaps = [
        weights.spectral_gap(weights.metropolis_hastings(a))
        for a in (topology.ring(16), topology.torus(4, 4), topology.exponential(16))
    ]
    assert gaps[0] < gaps[1] < gaps[2]


def test_check_mixing_matrix_accepts_non_symmetric_doubly_stochastic_when_asked():
    # W = (I + P) / 2 with P a cyclic shift: doubly stochastic, not symmetric, mixes.
    w = 0.5 * (np.eye(3) + np.roll(np.eye(3), 1, axis=1))
    out = weights.check_mixing_matrix(w, symmetric=False)
    np.testing.assert_array_equal(out, w)
    np.testing.assert_allclose(weights.mixing_rate(w), 0.5, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(weights.support(w), [[0, 1, 0], [0, 0, 1], [1, 0, 0]])


def test_check_mixing_matrix_converts_to_a_float64_copy():
    w = np.eye(1, dtype=np.int64)
    out = weights.check_mixing_matrix(w)
    assert out.dtype == np.float64
    w = weights.metropolis_hastings(topology.ring(4))
    out = weights.check_mixing_matrix(w)
    out[0, 0] = 5.0
    assert w[0, 0] != 5.0
    # Rounding-level asymmetry and sums are tolerated.
    w_rounded = w.copy()
    w_rounded[0, 1] += 1e-13
    w_rounded[0, 0] -= 1e-13
    weights.check_mixing_matrix(w_rounded)
    weights.check_mixing_matrix(w * (1 + 1e-14))


# --------------------------------------------------------------------------------------
# Mixing matrices: error paths.
# --------------------------------------------------------------------------------------


def _bad_row() -> np.ndarray:
    w = weights.metropolis_hastings(topology.ring(5))
    w[3, 3] -= 0.25
    return w


def _disconnected() -> np.ndarray:
    w = np.zeros((6, 6))
    w[:3, :3] = weights.uniform(topology.ring(3))
    w[3:, 3:] = weights.uniform(topology.ring(3))
    return w


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.ones(3) / 3, r"W must be a 2-D square array .* got shape \(3,\)"),
        (np.ones((2, 3)) / 3, r"got shape \(2, 3\)"),
        (np.ones((2, 2, 2)) / 2, r"got shape \(2, 2, 2\)"),
        (np.zeros((0, 0)), r"n >= 1, got shape \(0, 0\)"),
        (np.eye(3, dtype=bool), "got dtype bool"),
        (np.eye(2, dtype=complex), "got dtype complex128"),
        (np.where(np.eye(3) == 1, np.nan, 0.0), r"W\[0, 0\] = nan; .* finite entries"),
        (np.array([[np.inf, 0], [0, 1.0]]), r"W\[0, 0\] = inf"),
        (np.array([[1.5, -0.5], [-0.5, 1.5]]), r"W\[0, 1\] = -0.5 is negative"),
        (_bad_row(), r"row 3 of W sums to 0.75; a mixing matrix needs every row to sum to 1"),
        (np.array([[0.5, 0.5], [1.0, 0.0]]), r"column 0 of W sums to 1.5"),
        (
            0.5 * (np.eye(3) + np.roll(np.eye(3), 1, axis=1)),
            r"largest asymmetry \|W - W\^T\| is 0.5 at \(0, 1\)",
        ),
        (_disconnected(), r"support graph is disconnected \(2 components, sizes \[3, 3\]\)"),
        (np.eye(3), r"disconnected \(3 components"),
        (weights.laplacian(topology.ring(4), alpha=0.5), r"eigenvalue of modulus 1.*lazy\(W\)"),
    ],
)
def test_check_mixing_matrix_rejects(value, match):
    with pytest.raises(ValueError, match=match):
        weights.check_mixing_matrix(value)


def test_lazy_repairs_the_bipartite_laplacian():
    w = weights.laplacian(topology.ring(4), alpha=0.5)
    weights.check_mixing_matrix(weights.lazy(w))


def test_uniform_rejects_irregular_graphs():
    with pytest.raises(
        ValueError,
        match=r"regular graphs; node 1 has degree 1, node 0 degree 5; use metropolis_hastings",
    ):
        weights.uniform(topology.star(6))
    with pytest.raises(ValueError, match="node 0 has degree 2, node 4 degree 4"):
        weights.uniform(topology.grid(3, 3))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: weights.laplacian(topology.ring(5), alpha=0.0), r"\(0, 0.5\].*got alpha=0.0"),
        (lambda: weights.laplacian(topology.ring(5), alpha=-0.1), r"got alpha=-0.1"),
        (lambda: weights.laplacian(topology.ring(5), alpha=0.6), r"d_max=2, got alpha=0.6"),
        (lambda: weights.laplacian(topology.ring(5), alpha=True), r"alpha=True"),
        (lambda: weights.averaging(0), r"averaging: n must be an integer >= 1, got n=0"),
        (lambda: weights.averaging(2.5), r"got n=2.5"),
        (lambda: weights.metropolis_hastings(np.ones((2, 3))), r"got shape \(2, 3\)"),
        (lambda: weights.uniform(np.array([[0, 1], [0, 0]])), "symmetric"),
        (lambda: weights.lazy(np.ones(4)), r"got shape \(4,\)"),
        (lambda: weights.mixing_rate(np.ones((3, 2))), r"got shape \(3, 2\)"),
        (lambda: weights.support(np.ones((1, 2))), r"got shape \(1, 2\)"),
    ],
)
def test_weight_argument_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_laplacian_accepts_the_upper_bound_alpha():
    w = weights.laplacian(topology.ring(5), alpha=0.5)
    np.testing.assert_allclose(w.diagonal(), np.zeros(5), rtol=0, atol=0)
    weights.check_mixing_matrix(w)  # odd ring: not bipartite, so it still mixes


def _graph_cases():
    n = 12
    ring = weights.metropolis_hastings(topology.ring(n))
    cycle = np.roll(np.eye(n), 1, axis=1)  # directed cycle: a permutation, never mixes
    two = np.zeros((n, n))
    two[: n // 2, : n // 2] = weights.metropolis_hastings(topology.ring(n // 2))
    two[n // 2 :, n // 2 :] = weights.metropolis_hastings(topology.ring(n // 2))
    bipartite = 0.5 * (np.roll(np.eye(n), 1, axis=1) + np.roll(np.eye(n), -1, axis=1))
    er = weights.metropolis_hastings(topology.erdos_renyi(n, 0.3, seed=1))
    return [
        ("ring", ring, True),
        ("exponential", weights.metropolis_hastings(topology.exponential(n)), True),
        ("erdos_renyi", er, True),
        ("two_rings", two, True),
        ("bipartite_even_ring_zero_self_weight", bipartite, True),
        ("directed_cycle", cycle, False),
        ("lazy_directed_cycle", 0.5 * (np.eye(n) + cycle), False),
        ("product_of_cycles", 0.5 * (cycle + cycle @ cycle @ cycle), False),
    ]


@pytest.mark.parametrize("name, w, symmetric", _graph_cases(), ids=lambda c: str(c)[:30])
def test_graph_mixing_check_agrees_with_the_dense_spectrum(name, w, symmetric, monkeypatch):
    # The O(nnz) decision used for large n must be the dense SVD's decision.
    mixes = weights.mixing_rate(w) < 1.0 - 1e-12
    monkeypatch.setattr(weights, "DENSE_SPECTRUM_MAX_N", 0)
    if mixes:
        weights.check_mixing_matrix(w, symmetric=symmetric)
    else:
        with pytest.raises(ValueError, match="W does not mix"):
            weights.check_mixing_matrix(w, symmetric=symmetric)
