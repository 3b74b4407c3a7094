"""Undirected communication graphs, built on the host as boolean adjacency matrices.

Every constructor returns a bool adjacency ``A`` of shape ``(n, n)`` that is
symmetric and has a zero diagonal: ``A[i, j]`` is True when agents ``i`` and ``j``
exchange messages. Self-loops are never stored; mixing-weight constructors
(:mod:`core.weights`) add the self-weight ``w_ii`` themselves.

**Format** (the rule of :mod:`core.sparse`): a ``scipy.sparse.csr_array`` when
``sparse=True``, or when ``sparse=None`` (the default) and ``n > 4096``
(:data:`core.sparse.SPARSE_MIN_N`); a dense NumPy ``bool`` array otherwise. Both are
built from the same edge list in O(nnz) time and memory (plus the ``n x n`` array
itself when dense), so ``ring(100_000)`` takes milliseconds. Only :func:`complete`
is inherently dense: it has ``n (n - 1)`` edges whatever the format.

Deterministic graphs (ring, torus, grid, exponential, complete, star) are connected by
construction. Random graphs take an explicit ``seed`` and are checked for connectivity
(``scipy.sparse.csgraph``), so a run never starts on a graph over which consensus is
impossible.

This module holds the constructors; the validation and the connectivity and degree
queries (:func:`check_adjacency`, :func:`check_connected`, :func:`degrees`, ...) live
in :mod:`core.adjacency` and are re-exported here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from decentjax.core import sparse as sparse_lib
from decentjax.core.adjacency import (
    BoolMatrix,  # noqa: F401 (public, kept importable from here)
    as_bool_adjacency,  # noqa: F401 (public, kept importable from here)
    check_adjacency,
    check_connected,
    connected_components,
    degrees,
    is_connected,
)

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "check_adjacency",
    "check_connected",
    "complete",
    "connected_components",
    "degrees",
    "erdos_renyi",
    "exponential",
    "from_networkx",
    "grid",
    "is_connected",
    "random_geometric",
    "ring",
    "star",
    "torus",
]


# --------------------------------------------------------------------------------------
# Argument checks shared by the constructors.
# --------------------------------------------------------------------------------------


def _check_int(func: str, name: str, value: object, minimum: int) -> int:
    """Returns ``value`` as an ``int`` or raises a ValueError naming it and the valid range."""
    # bool is an int subclass; ring(True) is almost certainly a bug, so reject it.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"{func}: {name} must be an integer >= {minimum}, got {name}={value!r} "
            f"of type {type(value).__name__}."
        )
    if value < minimum:
        raise ValueError(f"{func}: {name} must be an integer >= {minimum}, got {name}={value}.")
    return int(value)


def _check_real(func: str, name: str, value: object) -> float:
    """Returns ``value`` as a finite ``float`` or raises a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"{func}: {name} must be a real number, got {name}={value!r} "
            f"of type {type(value).__name__}."
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{func}: {name} must be finite, got {name}={value}.")
    return value


def _circulant(n: int, offsets: npt.ArrayLike, sparse: bool | None) -> Any:
    """Undirected circulant graph: node i links to (i + s) mod n for each offset s."""
    nodes = np.arange(n)
    offsets = np.asarray(offsets)
    rows = np.tile(nodes, len(offsets))
    cols = (rows + np.repeat(offsets, n)) % n
    return _edges(n, rows, cols, sparse)


def _edges(n: int, rows: npt.ArrayLike, cols: npt.ArrayLike, sparse: bool | None) -> Any:
    """Undirected graph from an edge list, in the format :func:`core.sparse.use_sparse` picks."""
    return sparse_lib.from_edges(
        n, rows, cols, symmetric=True, sparse=sparse_lib.use_sparse(n, sparse)
    )


def _lattice_shape(func: str, rows: object, cols: object, n: object) -> tuple[int, int]:
    rows = _check_int(func, "rows", rows, 1)
    cols = _check_int(func, "cols", cols, 1)
    if n is not None:
        n = _check_int(func, "n", n, 1)
        if rows * cols != n:
            raise ValueError(
                f"{func}: rows * cols must equal n, got rows={rows}, cols={cols} "
                f"(rows * cols = {rows * cols}) but n={n}."
            )
    return rows, cols


# --------------------------------------------------------------------------------------
# Deterministic graphs.
# --------------------------------------------------------------------------------------


def ring(n: int, *, sparse: bool | None = None) -> Any:
    """Cycle graph: node ``i`` is linked to ``i - 1`` and ``i + 1`` (mod ``n``).

    Args:
      n: number of nodes, ``n >= 2``. ``n = 2`` gives a single edge (degree 1), since
        both neighbours of a node are the same node.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix; every node has degree 2 when ``n >= 3``.

    Raises:
      ValueError: if ``n`` is not an integer >= 2.
    """
    n = _check_int("ring", "n", n, 2)
    return _circulant(n, [1], sparse)


def torus(rows: int, cols: int, *, n: int | None = None, sparse: bool | None = None) -> Any:
    """Periodic 2-D lattice: each node links to its 4 neighbours with wrap-around.

    Node ``(r, c)`` has index ``r * cols + c``. When a side is 1 or 2, neighbours
    coincide (with the node itself or with each other) and are merged, so there are
    no self-loops or duplicate edges: ``torus(1, m)`` is ``ring(m)`` for ``m >= 3`` and
    ``torus(2, 2)`` is a 4-cycle.

    Args:
      rows: number of lattice rows, ``>= 1``.
      cols: number of lattice columns, ``>= 1``.
      n: optional expected node count; if given it must equal ``rows * cols``. Use it
        when a config sets the agent count and the lattice shape separately.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(rows * cols, rows * cols)`` bool adjacency matrix; every node has degree 4
      when ``rows >= 3`` and ``cols >= 3``.

    Raises:
      ValueError: if ``rows`` or ``cols`` is not an integer >= 1, or ``n`` is given and
        differs from ``rows * cols``.
    """
    rows, cols = _lattice_shape("torus", rows, cols, n)
    idx = np.arange(rows * cols).reshape(rows, cols)
    pairs = [(idx.ravel(), np.roll(idx, 1, axis=axis).ravel()) for axis in (0, 1)]
    return _edges(rows * cols, *np.concatenate(pairs, axis=1), sparse)


def grid(rows: int, cols: int, *, n: int | None = None, sparse: bool | None = None) -> Any:
    """Non-periodic 2-D lattice: each node links to its up/down/left/right neighbours.

    Node ``(r, c)`` has index ``r * cols + c``. Corner nodes have degree 2, border nodes
    3 and interior nodes 4 (the D-RR papers' "grid-16" is ``grid(4, 4)``).

    Args:
      rows: number of lattice rows, ``>= 1``.
      cols: number of lattice columns, ``>= 1``.
      n: optional expected node count; if given it must equal ``rows * cols``.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(rows * cols, rows * cols)`` bool adjacency matrix.

    Raises:
      ValueError: if ``rows`` or ``cols`` is not an integer >= 1, or ``n`` is given and
        differs from ``rows * cols``.
    """
    rows, cols = _lattice_shape("grid", rows, cols, n)
    idx = np.arange(rows * cols).reshape(rows, cols)
    vertical = (idx[:-1, :].ravel(), idx[1:, :].ravel())
    horizontal = (idx[:, :-1].ravel(), idx[:, 1:].ravel())
    return _edges(rows * cols, *np.concatenate([vertical, horizontal], axis=1), sparse)


def exponential(n: int, *, sparse: bool | None = None) -> Any:
    """Undirected (static) exponential graph.

    Node ``i`` links to ``(i + 2**h) mod n`` for ``h = 0, ..., floor(log2(n - 1))``, and
    the links are then symmetrised, as in Kun Huang's ``Exponential_graph``
    (ALGORITHMS.md §1.1(6)). Offsets ``+2**h`` and ``-2**h`` can coincide (e.g. 8 and
    -8 when ``n = 16``), so for ``n = 16`` every node has degree 7, not 8.

    Args:
      n: number of nodes, ``n >= 2``.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix (circulant, so all degrees are equal).

    Raises:
      ValueError: if ``n`` is not an integer >= 2.
    """
    n = _check_int("exponential", "n", n, 2)
    # h runs over 0..floor(log2(n - 1)), i.e. (n - 1).bit_length() values; integer
    # arithmetic avoids float rounding in log2 at powers of two.
    num_hops = (n - 1).bit_length()
    return _circulant(n, [2**h for h in range(num_hops)], sparse)


def complete(n: int, *, sparse: bool | None = None) -> Any:
    """Complete graph: every pair of distinct nodes is linked.

    Args:
      n: number of nodes, ``n >= 1`` (one node gives the trivial, connected graph).
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix; every node has degree ``n - 1``. It has
      ``n (n - 1)`` entries in either format, so a sparse one saves nothing: the
      complete graph at huge ``n`` is inherently dense (use the server's
      :func:`core.weights.averaging` / ``comm.gossip(...).mean`` instead).

    Raises:
      ValueError: if ``n`` is not an integer >= 1.
    """
    n = _check_int("complete", "n", n, 1)
    rows, cols = np.triu_indices(n, k=1)
    return _edges(n, rows, cols, sparse)


def star(n: int, *, sparse: bool | None = None) -> Any:
    """Star graph: node 0 is the hub, linked to every other node; leaves are not linked.

    Args:
      n: number of nodes, ``n >= 2``.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix; the hub has degree ``n - 1``, leaves 1.

    Raises:
      ValueError: if ``n`` is not an integer >= 2.
    """
    n = _check_int("star", "n", n, 2)
    leaves = np.arange(1, n)
    return _edges(n, np.zeros_like(leaves), leaves, sparse)


# --------------------------------------------------------------------------------------
# Random graphs (explicit seeds; always connected or an error).
# --------------------------------------------------------------------------------------


def erdos_renyi(n: int, p: float, *, seed: int, sparse: bool | None = None) -> Any:
    """Erdős–Rényi graph G(n, p): each pair of nodes is linked independently w.p. ``p``.

    The graph is drawn once from ``numpy.random.default_rng(seed)`` and is *not*
    redrawn: a disconnected draw is an error, so a given ``(n, p, seed)`` always means
    the same graph. (The D-RR code uses ``nx.erdos_renyi_graph(16, 0.8)``, which
    draws from Python's global ``random``; the graph here differs but has the same
    distribution.)

    Args:
      n: number of nodes, ``n >= 1``.
      p: edge probability in ``[0, 1]``.
      seed: seed for ``numpy.random.default_rng``.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix of a connected graph.

    Raises:
      ValueError: if ``n`` or ``p`` is out of range, or the drawn graph is
        disconnected (the message suggests a larger ``p`` or another seed).
    """
    n = _check_int("erdos_renyi", "n", n, 1)
    p = _check_real("erdos_renyi", "p", p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"erdos_renyi: p must be in [0, 1], got p={p}.")
    rows, cols = _gnp_pairs(n, p, np.random.default_rng(seed), ordered=False)
    a = _edges(n, rows, cols, sparse)
    labels = connected_components(a)
    if labels.max() > 0:
        # ln(n)/n is the sharp connectivity threshold of G(n, p).
        threshold = math.log(n) / n
        raise ValueError(
            f"erdos_renyi(n={n}, p={p}, seed={seed}) drew a disconnected graph "
            f"({labels.max() + 1} components); use a larger p (G(n, p) is connected with "
            f"high probability above about ln(n)/n = {threshold:.3g}) or another seed."
        )
    return a


def _gnp_pairs(
    n: int, p: float, rng: np.random.Generator, *, ordered: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs of G(n, p): unordered pairs ``i < j``, or ordered ``i != j`` (digraphs).

    Up to :data:`core.sparse.SPARSE_MIN_N` nodes the graph is drawn as before, one
    ``n x n`` block of uniforms, so a seed gives the same graph as in earlier releases.
    Above, in O(nnz): the edge count is Binomial(N, p) over the ``N`` candidate pairs
    and the pairs are a uniform sample without replacement (``Generator.choice``),
    which is the same distribution.
    """
    if n <= sparse_lib.SPARSE_MIN_N:
        coins = rng.random((n, n)) < p
        if ordered:
            np.fill_diagonal(coins, False)
            return np.nonzero(coins)
        return np.nonzero(np.triu(coins, k=1))
    total = n * (n - 1) if ordered else n * (n - 1) // 2
    picks = rng.choice(total, size=rng.binomial(total, p), replace=False)
    if ordered:  # Row i holds the n - 1 columns j != i.
        rows, cols = np.divmod(picks, n - 1)
        return rows, cols + (cols >= rows)
    # Pair k = i (i - 1) / 2 + j with j < i: invert the triangular numbers, then fix
    # the float square root's rounding by one step either way.
    rows = ((1 + np.sqrt(1 + 8 * picks.astype(np.float64))) // 2).astype(np.int64)
    rows -= rows * (rows - 1) // 2 > picks
    rows += (rows + 1) * rows // 2 <= picks
    return rows, picks - rows * (rows - 1) // 2


def random_geometric(
    n: int, radius: float, *, seed: int, max_tries: int = 100, sparse: bool | None = None
) -> Any:
    """Random geometric graph, redrawn until connected.

    ``n`` points are drawn uniformly in the unit square ``[0, 1]^2``; two nodes are
    linked when their Euclidean distance is at most ``radius``. Disconnected draws are
    discarded and the points redrawn (from the same generator), as in the reference
    code (ALGORITHMS.md §1.1(8)).

    Args:
      n: number of nodes, ``n >= 1``.
      radius: connection radius, ``> 0`` (any radius ``>= sqrt(2)`` gives the
        complete graph).
      seed: seed for ``numpy.random.default_rng``.
      max_tries: number of draws before giving up, ``>= 1``.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix of a connected graph.

    Raises:
      ValueError: if an argument is out of range, or no connected graph was drawn in
        ``max_tries`` draws (the message suggests a radius).
    """
    n = _check_int("random_geometric", "n", n, 1)
    radius = _check_real("random_geometric", "radius", radius)
    if radius <= 0:
        raise ValueError(f"random_geometric: radius must be > 0, got radius={radius}.")
    max_tries = _check_int("random_geometric", "max_tries", max_tries, 1)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        points = rng.random((n, 2))
        # A KD-tree finds the pairs within the radius in O(n log n + nnz).
        pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
        a = _edges(n, pairs[:, 0], pairs[:, 1], sparse)
        if is_connected(a):
            return a
    # sqrt(ln(n) / (pi n)) is the connectivity threshold of random geometric graphs.
    threshold = math.sqrt(math.log(max(n, 2)) / (math.pi * n))
    raise ValueError(
        f"random_geometric(n={n}, radius={radius}, seed={seed}) drew no connected graph in "
        f"max_tries={max_tries} draws; use a larger radius (connectivity needs about "
        f"sqrt(ln(n) / (pi n)) = {threshold:.3g} or more), more tries, or another seed."
    )


# --------------------------------------------------------------------------------------
# networkx interop.
# --------------------------------------------------------------------------------------


def from_networkx(graph: nx.Graph, *, sparse: bool | None = None) -> Any:
    """Converts an undirected networkx graph to a bool adjacency matrix.

    Node ``k`` of the result is ``list(graph.nodes)[k]``: networkx's insertion order,
    the same order ``nx.to_numpy_array`` uses. (Sorting was not chosen because node
    labels of mixed types cannot be sorted.) Self-loops are dropped and multi-edges
    merged. Connectivity is not checked here; use :func:`check_connected`.

    Args:
      graph: a ``networkx.Graph`` (or ``MultiGraph``) with at least one node.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix, ``n = graph.number_of_nodes()``.

    Raises:
      ValueError: if ``graph`` is directed or has no nodes.
    """
    if graph.is_directed():
        raise ValueError(
            f"from_networkx needs an undirected graph, got a directed {type(graph).__name__}; "
            f"convert it with graph.to_undirected() if the links are two-way."
        )
    nodes = list(graph.nodes)
    if not nodes:
        raise ValueError("from_networkx needs a graph with at least one node, got 0 nodes.")
    import networkx as nx

    coo = nx.to_scipy_sparse_array(graph, nodelist=nodes, weight=None, format="coo")
    return _edges(len(nodes), coo.row, coo.col, sparse)
