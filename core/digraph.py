r"""Directed graphs on the host: validation, strong connectivity, degrees, constructors.

**Edge convention.** A directed adjacency matrix is a bool matrix ``A`` of shape
``(n, n)`` with a zero diagonal, and

    ``A[i, j] = True``  means the edge  ``j -> i``:  agent ``i`` *receives* from ``j``.

Row ``i`` lists the in-neighbours of ``i`` (whom ``i`` pulls from) and column ``j``
lists the out-neighbours of ``j`` (whom ``j`` pushes to). This is the orientation of
gossip, ``X <- W X``: row ``i`` of the result is ``sum_j w_ij x_j``, so a weight
``w_ij > 0`` needs the edge ``j -> i``, i.e. ``A[i, j]`` (ALGORITHMS.md §0, §1.1(7)).
Beware: networkx (``nx.to_numpy_array``) and ``scipy.sparse.csgraph`` use the
transpose, ``M[u, v]`` for ``u -> v``; :func:`from_networkx_digraph` converts.

**Format**: the rule of :mod:`core.sparse`, as in :mod:`core.topology`: builders
return a ``scipy.sparse.csr_array`` for ``sparse=True`` or (default ``None``) above
4096 nodes, a dense ``bool`` array otherwise; the checks and queries take either (or
a networkx ``DiGraph``), return the format they were given, and run in O(nnz)
(``scipy.sparse.csgraph``).

The weights on these graphs (row-/column-stochastic, Perron vectors) live in
:mod:`core.directed_weights`; both are re-exported by :mod:`core.directed`, the public
face. Argument checks are those of :mod:`core.topology` (errors are ``ValueError``
naming the bad value and what would be valid; random graphs take an explicit seed).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse import csgraph

from decentjax.core import adjacency, topology
from decentjax.core import sparse as sparse_lib

if TYPE_CHECKING:
    import networkx as nx

BoolMatrix = topology.BoolMatrix

# The argument checks of core.topology already produce the messages we want; reusing
# them keeps the two graph modules' errors identical in form.
_check_int = topology._check_int
_check_real = topology._check_real


# --------------------------------------------------------------------------------------
# Validation and graph queries.
# --------------------------------------------------------------------------------------


def check_directed_adjacency(A: Any) -> Any:
    """Validates a directed adjacency matrix and returns it as a clean bool array.

    ``A[i, j]`` means the edge ``j -> i`` (see the module docstring). As in
    :func:`core.topology.check_adjacency`, a nonzero diagonal is accepted and dropped,
    because the weight constructors add the self-loops themselves.

    Args:
      A: array-like or ``scipy.sparse`` matrix of shape ``(n, n)``, ``n >= 1``, with bool
        entries or numeric entries that are exactly 0 or 1. It need not be symmetric. A
        networkx ``DiGraph`` is converted by :func:`from_networkx_digraph`.

    Returns:
      A new bool matrix of shape ``(n, n)`` with a zero diagonal, in the format of
      ``A`` (dense ndarray or ``csr_array``).

    Raises:
      ValueError: if ``A`` is not 2-D and square with ``n >= 1``, or has an entry other
        than 0/1/True/False (or a non-numeric dtype). The message names the offending
        shape, dtype or entry.
    """
    if adjacency._is_networkx(A):
        return from_networkx_digraph(A)
    a = adjacency.as_bool_adjacency(A, "directed adjacency matrix")
    if sparse_lib.issparse(a):
        return sparse_lib.without_diagonal(a)
    a = a.copy()
    np.fill_diagonal(a, False)
    return a


def _strong_labels(a: Any) -> tuple[int, npt.NDArray[np.int32]]:
    """Number of strongly connected components of a clean adjacency, and each node's label."""
    # SCCs of a graph and of its transpose coincide, so the edge orientation of
    # scipy's csgraph (row -> column) versus ours (column -> row) does not matter here.
    count, labels = csgraph.connected_components(
        a.astype(np.int8), directed=True, connection="strong"
    )
    return int(count), labels


def _reachable(a: Any, start: int, *, forward: bool) -> npt.NDArray[np.bool_]:
    """Nodes reachable from ``start`` along edges (forward) or against them (backward)."""
    # csgraph follows row -> column; our A[i, j] is j -> i, so forward is A^T.
    step = sp.csr_array(a.T if forward else a, dtype=np.int8)
    order = csgraph.breadth_first_order(step, start, directed=True, return_predecessors=False)
    seen = np.zeros(a.shape[0], dtype=np.bool_)
    seen[order] = True
    return seen


def is_strongly_connected(A: Any) -> bool:
    """Returns whether a directed graph is strongly connected.

    Args:
      A: directed adjacency matrix, validated by :func:`check_directed_adjacency`.
        A single node is strongly connected.

    Returns:
      True when every node can reach every other node along directed edges.

    Raises:
      ValueError: if ``A`` is not a valid directed adjacency matrix.
    """
    count, _ = _strong_labels(check_directed_adjacency(A))
    return count == 1


def check_strongly_connected(A: Any) -> Any:
    """Validates a directed adjacency matrix and checks that it is strongly connected.

    Push-sum, Push-Pull and their relatives reach the exact average only when
    information from every agent reaches every other agent, so a graph that is not
    strongly connected is an error.

    Args:
      A: directed adjacency matrix, validated by :func:`check_directed_adjacency`.

    Returns:
      The cleaned ``bool`` adjacency matrix.

    Raises:
      ValueError: if ``A`` is invalid, or not strongly connected; the message gives the
        number of strongly connected components and a node that cannot reach another.
    """
    a = check_directed_adjacency(A)
    count, _ = _strong_labels(a)
    if count > 1:
        from_zero = _reachable(a, 0, forward=True)
        if not from_zero.all():
            src, dst = 0, int(np.argmin(from_zero))
        else:
            # Node 0 reaches everyone, so some node cannot reach node 0.
            src, dst = int(np.argmin(_reachable(a, 0, forward=False))), 0
        raise ValueError(
            f"directed graph is not strongly connected: {count} strongly connected "
            f"components; e.g. node {src} cannot reach node {dst} along directed edges "
            f"(A[i, j] = True means j -> i). Add edges so that every node can reach every "
            f"other one."
        )
    return a


def out_degrees(A: Any) -> npt.NDArray[np.int64]:
    """Returns each node's out-degree: how many agents it sends to (self-loop excluded).

    Args:
      A: directed adjacency matrix, validated by :func:`check_directed_adjacency`.

    Returns:
      An ``int64`` array of length ``n``: the column sums of ``A``.

    Raises:
      ValueError: if ``A`` is not a valid directed adjacency matrix.
    """
    return adjacency.row_counts(check_directed_adjacency(A), axis=0)


def in_degrees(A: Any) -> npt.NDArray[np.int64]:
    """Returns each node's in-degree: how many agents it receives from (self-loop excluded).

    Args:
      A: directed adjacency matrix, validated by :func:`check_directed_adjacency`.

    Returns:
      An ``int64`` array of length ``n``: the row sums of ``A``.

    Raises:
      ValueError: if ``A`` is not a valid directed adjacency matrix.
    """
    return adjacency.row_counts(check_directed_adjacency(A), axis=1)


# --------------------------------------------------------------------------------------
# Deterministic graphs.
# --------------------------------------------------------------------------------------


def _directed_edges(n: int, rows: Any, cols: Any, sparse: bool | None) -> Any:
    """Digraph with ``A[rows, cols] = True`` in the format of :func:`core.sparse.use_sparse`."""
    return sparse_lib.from_edges(
        n, rows, cols, symmetric=False, sparse=sparse_lib.use_sparse(n, sparse)
    )


def _circulant_edges(n: int, offsets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Node i sends to (i + s) mod n for each offset s: rows (i + s) % n, columns i."""
    cols = np.tile(np.arange(n), len(offsets))
    return (cols + np.repeat(np.asarray(offsets), n)) % n, cols


def directed_ring(n: int, *, sparse: bool | None = None) -> Any:
    """Directed cycle: node ``i`` sends to ``i + 1`` (mod ``n``).

    Args:
      n: number of nodes, ``n >= 2``. ``n = 2`` gives the two edges ``0 -> 1`` and
        ``1 -> 0``.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix, with ``A[(i + 1) % n, i] = True``; every
      node has in-degree 1 and out-degree 1.

    Raises:
      ValueError: if ``n`` is not an integer >= 2.
    """
    n = _check_int("directed_ring", "n", n, 2)
    return _directed_edges(n, *_circulant_edges(n, [1]), sparse)


def directed_exponential(n: int, *, sparse: bool | None = None) -> Any:
    """Directed (static) exponential graph: ``i -> (i + 2**h) mod n``.

    ``h`` runs over ``0, ..., floor(log2(n - 1))``, as in the directed version of Kun
    Huang's ``Exponential_graph`` (ALGORITHMS.md §1.1(6)). All offsets ``2**h`` are at
    most ``n - 1``, hence distinct and nonzero mod ``n``, so every node has in- and
    out-degree ``floor(log2(n - 1)) + 1`` (4 for ``n = 16``). With uniform weights
    :func:`row_stochastic` and :func:`column_stochastic` coincide on it and are doubly
    stochastic, because the graph is circulant (Ying et al. 2021's static exponential
    weights).

    Args:
      n: number of nodes, ``n >= 2``.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix, with ``A[(i + 2**h) % n, i] = True``.

    Raises:
      ValueError: if ``n`` is not an integer >= 2.
    """
    n = _check_int("directed_exponential", "n", n, 2)
    # (n - 1).bit_length() = floor(log2(n - 1)) + 1, without float rounding at powers of 2.
    offsets = [2**h for h in range((n - 1).bit_length())]
    return _directed_edges(n, *_circulant_edges(n, offsets), sparse)


def unbalanced_example(n: int, *, sparse: bool | None = None) -> Any:
    """A small strongly connected digraph whose in- and out-degrees differ.

    The directed ring ``i -> i + 1`` plus every edge ``0 -> j``: node 0 has out-degree
    ``n - 1`` but in-degree 1, so the graph is not balanced, ``R`` is not column
    stochastic and its left Perron vector is far from uniform (it halves at each step
    back along the ring from node ``n - 1`` to node 1). Plain pulling with ``R`` then
    converges to a weighted average instead of the mean; tests use this graph to show
    that push-sum / Push-Pull correct for that.

    Args:
      n: number of nodes, ``n >= 3`` (for ``n = 2`` the extra edge is already in the
        ring, which is balanced).
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix.

    Raises:
      ValueError: if ``n`` is not an integer >= 3.
    """
    n = _check_int("unbalanced_example", "n", n, 3)
    rows, cols = _circulant_edges(n, [1])
    leaves = np.arange(1, n)  # 0 -> j for every j != 0
    rows, cols = np.concatenate([rows, leaves]), np.concatenate([cols, 0 * leaves])
    return _directed_edges(n, rows, cols, sparse)


# --------------------------------------------------------------------------------------
# Random graphs (explicit seeds; always strongly connected or an error).
# --------------------------------------------------------------------------------------


def random_strongly_connected(
    n: int, p: float, *, seed: int, max_tries: int = 100, sparse: bool | None = None
) -> Any:
    """Random directed graph (directed Erdős–Rényi), redrawn until strongly connected.

    Each of the ``n (n - 1)`` off-diagonal directed edges is present independently with
    probability ``p``; draws that are not strongly connected are discarded and redrawn
    from the same generator, as in the reference code (ALGORITHMS.md §1.1(7)), so a
    given ``(n, p, seed)`` always means the same graph.

    Args:
      n: number of nodes, ``n >= 1``.
      p: edge probability in ``[0, 1]``.
      seed: seed for ``numpy.random.default_rng``.
      max_tries: number of draws before giving up, ``>= 1``.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix of a strongly connected digraph.

    Raises:
      ValueError: if an argument is out of range, or no strongly connected graph was
        drawn in ``max_tries`` draws (the message suggests a ``p``).
    """
    func = "random_strongly_connected"
    n = _check_int(func, "n", n, 1)
    p = _check_real(func, "p", p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{func}: p must be in [0, 1], got p={p}.")
    max_tries = _check_int(func, "max_tries", max_tries, 1)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        # The same draw as before up to 4096 nodes; O(nnz) above (topology._gnp_pairs).
        a = _directed_edges(n, *topology._gnp_pairs(n, p, rng, ordered=True), sparse)
        if _strong_labels(a)[0] == 1:
            return a
    # Like G(n, p), the directed G(n, p) becomes strongly connected around p = ln(n)/n.
    threshold = math.log(max(n, 2)) / n
    raise ValueError(
        f"{func}(n={n}, p={p}, seed={seed}) drew no strongly connected graph in "
        f"max_tries={max_tries} draws; use a larger p (strong connectivity needs about "
        f"ln(n)/n = {threshold:.3g} or more), more tries, or another seed."
    )


def geometric_directed(
    n: int,
    radius: float,
    drop_prob: float,
    *,
    seed: int,
    max_tries: int = 100,
    sparse: bool | None = None,
) -> Any:
    """Directed random geometric graph (ALGORITHMS.md §1.1(8)).

    First an undirected connected random geometric graph is drawn with
    :func:`core.topology.random_geometric` (points uniform in ``[0, 1]^2``, linked when
    at most ``radius`` apart). Then the undirected edges are visited in a random order
    and each, with probability ``drop_prob``, loses one of its two directions (chosen
    uniformly) -- unless that removal would break strong connectivity, in which case
    the edge stays two-way. The realised fraction of one-way edges can thus be below
    ``drop_prob``; ``drop_prob = 0`` gives the undirected graph as a symmetric digraph.

    Args:
      n: number of nodes, ``n >= 1``.
      radius: connection radius, ``> 0``.
      drop_prob: probability in ``[0, 1]`` that an edge is made one-way.
      seed: seed for the point draw and (through an independent child stream) the
        edge removals.
      max_tries: draws of the point set before giving up, ``>= 1`` (passed to
        :func:`core.topology.random_geometric`).
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix of a strongly connected digraph.

    Raises:
      ValueError: if an argument is out of range, or no connected geometric graph was
        drawn in ``max_tries`` draws.
    """
    func = "geometric_directed"
    drop_prob = _check_real(func, "drop_prob", drop_prob)
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"{func}: drop_prob must be in [0, 1], got drop_prob={drop_prob}.")
    # random_geometric validates n, radius and max_tries and guarantees connectivity;
    # a connected undirected graph is a strongly connected symmetric digraph.
    a = topology.random_geometric(n, radius, seed=seed, max_tries=max_tries, sparse=True)
    # A spawned child stream, so the removals are independent of the point draw,
    # which used default_rng(seed) itself.
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    rows, cols = sparse_lib.coo_indices(sp.triu(a, k=1, format="csr"))
    order = rng.permutation(rows.size)
    drop = rng.random(rows.size) < drop_prob
    flip = rng.random(rows.size) < 0.5
    sends: list[set[int]] = [set() for _ in range(n)]  # sends[j]: every i with j -> i
    for i, j in zip(*sparse_lib.coo_indices(a), strict=True):
        sends[int(j)].add(int(i))
    for k in order:
        if not drop[k]:
            continue
        i, j = (int(rows[k]), int(cols[k])) if flip[k] else (int(cols[k]), int(rows[k]))
        # Remove j -> i. The rest of the graph was strongly connected, so it stays so
        # iff j can still reach i (a search that stops at i: on a geometric graph a
        # detour through common neighbours is usually a few steps long).
        sends[j].discard(i)
        if not _reaches(sends, j, i):
            sends[j].add(i)
    receivers = [i for targets in sends for i in targets]
    senders = np.repeat(np.arange(n), [len(targets) for targets in sends])
    return _directed_edges(n, receivers, senders, sparse)


def _reaches(sends: list[set[int]], start: int, goal: int) -> bool:
    """Whether ``goal`` is reachable from ``start`` (breadth first, stopping at ``goal``)."""
    seen, queue = {start}, deque([start])
    while queue:
        for nxt in sends[queue.popleft()]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return False


# --------------------------------------------------------------------------------------
# networkx interop.
# --------------------------------------------------------------------------------------


def from_networkx_digraph(graph: nx.DiGraph, *, sparse: bool | None = None) -> Any:
    """Converts a directed networkx graph to a directed bool adjacency matrix.

    A networkx edge ``u -> v`` becomes ``A[index(v), index(u)] = True`` (``v`` receives
    from ``u``), where node ``k`` of the result is ``list(graph.nodes)[k]``, the order
    :func:`core.topology.from_networkx` uses too. Self-loops are dropped and multi-edges
    merged. Strong connectivity is not checked here; use
    :func:`check_strongly_connected`.

    Args:
      graph: a ``networkx.DiGraph`` (or ``MultiDiGraph``) with at least one node.
      sparse: output format: ``None`` (default) picks a ``csr_array`` when
        ``n > 4096``, ``True`` / ``False`` force sparse / dense (module docstring).

    Returns:
      The ``(n, n)`` bool adjacency matrix, ``n = graph.number_of_nodes()``.

    Raises:
      ValueError: if ``graph`` is undirected or has no nodes.
    """
    if not graph.is_directed():
        raise ValueError(
            f"from_networkx_digraph needs a directed graph, got an undirected "
            f"{type(graph).__name__}; use core.topology.from_networkx for undirected graphs, "
            f"or graph.to_directed() to make every link two-way."
        )
    nodes = list(graph.nodes)
    if not nodes:
        raise ValueError("from_networkx_digraph needs a graph with at least one node, got 0.")
    import networkx as nx

    coo = nx.to_scipy_sparse_array(graph, nodelist=nodes, weight=None, format="coo")
    return _directed_edges(len(nodes), coo.col, coo.row, sparse)  # u -> v is A[v, u]
