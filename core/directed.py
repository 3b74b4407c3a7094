r"""Directed communication graphs and their row-/column-stochastic weights, on the host.

**Edge convention.** A directed adjacency matrix is a NumPy ``bool`` array ``A`` of
shape ``(n, n)`` with a zero diagonal, and

    ``A[i, j] = True``  means the edge  ``j -> i``:  agent ``i`` *receives* from ``j``.

Row ``i`` lists the in-neighbours of ``i`` (whom ``i`` pulls from) and column ``j``
lists the out-neighbours of ``j`` (whom ``j`` pushes to). This is the orientation of
gossip, ``X <- W X``: row ``i`` of the result is ``sum_j w_ij x_j``, so a weight
``w_ij > 0`` needs the edge ``j -> i``, i.e. ``A[i, j]``. Both weight matrices below
therefore have their off-diagonal support exactly on ``A`` (ALGORITHMS.md §0, §1.1(7)).
Beware: networkx (``nx.to_numpy_array``) and ``scipy.sparse.csgraph`` use the
transpose, ``M[u, v]`` for ``u -> v``; :func:`from_networkx_digraph` converts.


* row-stochastic :math:`R`, :math:`R\mathbf 1 = \mathbf 1`, with
  :math:`R_{ij} = a_{ij} / \sum_{j'} a_{ij'}` after adding self-loops: each agent
  averages what it pulls, :math:`r_{ij} = 1/(|\mathcal N^{in}_i| + 1)`;
* column-stochastic :math:`C`, :math:`\mathbf 1^\top C = \mathbf 1^\top`, with
  :math:`C_{ij} = a_{ij} / \sum_{i'} a_{i'j}` after adding self-loops: each sender
  splits its mass equally among itself and its out-neighbours,
  :math:`c_{ij} = 1/(|\mathcal N^{out}_j| + 1)`.

On a strongly connected graph, :math:`R` has a unique left Perron vector :math:`u`
(:math:`u^\top R = u^\top`) and :math:`C` a unique right Perron vector :math:`v`
(:math:`C v = v`), both positive (entries below rounding level are returned as 0) and
normalised to sum to ``n``. Pulling with ``R``
alone converges to the *weighted* average :math:`u^\top x / n`, not the plain mean,
unless the graph is balanced; push-sum fixes this with the ratio
:math:`(C^k x) / (C^k \mathbf 1)`, and Push-Pull combines ``R`` and ``C`` (which may
live on different graphs) and needs :math:`u^\top v > 0`.

Also here: the one-peer exponential graph (Ying et al. 2021), a time-varying sequence
of doubly stochastic but non-symmetric matrices. Undirected graphs and doubly
stochastic weights live in :mod:`core.topology` and :mod:`core.weights`; this module
reuses their argument checks and conventions (errors are ``ValueError`` naming the bad
value and what would be valid; random graphs take an explicit seed).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.linalg
from scipy.sparse import csgraph

from core import topology, weights

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "check_column_stochastic",
    "check_directed_adjacency",
    "check_push_pull_pair",
    "check_row_stochastic",
    "check_strongly_connected",
    "column_stochastic",
    "directed_exponential",
    "directed_ring",
    "from_networkx_digraph",
    "geometric_directed",
    "in_degrees",
    "is_strongly_connected",
    "one_peer_exponential",
    "out_degrees",
    "perron_left",
    "perron_right",
    "random_strongly_connected",
    "row_stochastic",
    "unbalanced_example",
]

BoolMatrix = topology.BoolMatrix
FloatMatrix = weights.FloatMatrix

# The argument checks of core.topology already produce the messages we want; reusing
# them keeps the two graph modules' errors identical in form.
_check_int = topology._check_int
_check_real = topology._check_real

# A Perron vector whose residual or smallest entry misses these bounds means the
# linear solve was too ill-conditioned to trust; with n <= a few hundred and a
# strongly connected support this does not happen, so it is an error, not a warning.
_PERRON_RESIDUAL_TOL = 1e-9


# --------------------------------------------------------------------------------------
# Validation and graph queries.
# --------------------------------------------------------------------------------------


def check_directed_adjacency(A: npt.ArrayLike) -> BoolMatrix:
    """Validates a directed adjacency matrix and returns it as a clean bool array.

    ``A[i, j]`` means the edge ``j -> i`` (see the module docstring). As in
    :func:`core.topology.check_adjacency`, a nonzero diagonal is accepted and dropped,
    because the weight constructors add the self-loops themselves.

    Args:
      A: array-like of shape ``(n, n)``, ``n >= 1``, with bool entries or numeric
        entries that are exactly 0 or 1. It need not be symmetric.

    Returns:
      A new ``bool`` array of shape ``(n, n)`` with a zero diagonal.

    Raises:
      ValueError: if ``A`` is not 2-D and square with ``n >= 1``, or has an entry other
        than 0/1/True/False (or a non-numeric dtype). The message names the offending
        shape, dtype or entry.
    """
    a = topology.as_bool_adjacency(A, "directed adjacency matrix")
    a = a.copy()
    np.fill_diagonal(a, False)
    return a


def _strong_labels(a: BoolMatrix) -> tuple[int, npt.NDArray[np.int32]]:
    """Number of strongly connected components of a clean adjacency, and each node's label."""
    # SCCs of a graph and of its transpose coincide, so the edge orientation of
    # scipy's csgraph (row -> column) versus ours (column -> row) does not matter here.
    count, labels = csgraph.connected_components(
        a.astype(np.int8), directed=True, connection="strong"
    )
    return int(count), labels


def _reachable(a: BoolMatrix, start: int, *, forward: bool) -> npt.NDArray[np.bool_]:
    """Nodes reachable from ``start`` along edges (forward) or against them (backward)."""
    # Forward: the out-neighbours of j are the rows i with A[i, j], i.e. column j;
    # working on the transpose turns that into a row lookup like in the undirected BFS.
    step = a.T if forward else a
    seen = np.zeros(a.shape[0], dtype=np.bool_)
    seen[start] = True
    frontier = seen.copy()
    while frontier.any():
        frontier = step[frontier].any(axis=0) & ~seen
        seen |= frontier
    return seen


def is_strongly_connected(A: npt.ArrayLike) -> bool:
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


def check_strongly_connected(A: npt.ArrayLike) -> BoolMatrix:
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


def out_degrees(A: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Returns each node's out-degree: how many agents it sends to (self-loop excluded).

    Args:
      A: directed adjacency matrix, validated by :func:`check_directed_adjacency`.

    Returns:
      An ``int64`` array of length ``n``: the column sums of ``A``.

    Raises:
      ValueError: if ``A`` is not a valid directed adjacency matrix.
    """
    return check_directed_adjacency(A).sum(axis=0, dtype=np.int64)


def in_degrees(A: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Returns each node's in-degree: how many agents it receives from (self-loop excluded).

    Args:
      A: directed adjacency matrix, validated by :func:`check_directed_adjacency`.

    Returns:
      An ``int64`` array of length ``n``: the row sums of ``A``.

    Raises:
      ValueError: if ``A`` is not a valid directed adjacency matrix.
    """
    return check_directed_adjacency(A).sum(axis=1, dtype=np.int64)


# --------------------------------------------------------------------------------------
# Deterministic graphs.
# --------------------------------------------------------------------------------------


def _directed_circulant(n: int, offsets: list[int]) -> BoolMatrix:
    """Node i sends to (i + s) mod n for each offset s, i.e. A[(i + s) % n, i] = True."""
    nodes = np.arange(n)
    a = np.zeros((n, n), dtype=np.bool_)
    for s in offsets:
        a[(nodes + s) % n, nodes] = True
    np.fill_diagonal(a, False)
    return a


def directed_ring(n: int) -> BoolMatrix:
    """Directed cycle: node ``i`` sends to ``i + 1`` (mod ``n``).

    Args:
      n: number of nodes, ``n >= 2``. ``n = 2`` gives the two edges ``0 -> 1`` and
        ``1 -> 0``.

    Returns:
      The ``(n, n)`` bool adjacency matrix, with ``A[(i + 1) % n, i] = True``; every
      node has in-degree 1 and out-degree 1.

    Raises:
      ValueError: if ``n`` is not an integer >= 2.
    """
    n = _check_int("directed_ring", "n", n, 2)
    return _directed_circulant(n, [1])


def directed_exponential(n: int) -> BoolMatrix:
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

    Returns:
      The ``(n, n)`` bool adjacency matrix, with ``A[(i + 2**h) % n, i] = True``.

    Raises:
      ValueError: if ``n`` is not an integer >= 2.
    """
    n = _check_int("directed_exponential", "n", n, 2)
    # (n - 1).bit_length() = floor(log2(n - 1)) + 1, without float rounding at powers of 2.
    return _directed_circulant(n, [2**h for h in range((n - 1).bit_length())])


def unbalanced_example(n: int) -> BoolMatrix:
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

    Returns:
      The ``(n, n)`` bool adjacency matrix.

    Raises:
      ValueError: if ``n`` is not an integer >= 3.
    """
    n = _check_int("unbalanced_example", "n", n, 3)
    a = _directed_circulant(n, [1])
    a[1:, 0] = True  # 0 -> j for every j != 0
    return a


# --------------------------------------------------------------------------------------
# Random graphs (explicit seeds; always strongly connected or an error).
# --------------------------------------------------------------------------------------


def random_strongly_connected(n: int, p: float, *, seed: int, max_tries: int = 100) -> BoolMatrix:
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
        a = rng.random((n, n)) < p
        np.fill_diagonal(a, False)
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
    n: int, radius: float, drop_prob: float, *, seed: int, max_tries: int = 100
) -> BoolMatrix:
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
    a = topology.random_geometric(n, radius, seed=seed, max_tries=max_tries)
    # A spawned child stream, so the removals are independent of the point draw,
    # which used default_rng(seed) itself.
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    rows, cols = np.nonzero(np.triu(a, k=1))
    order = rng.permutation(rows.size)
    drop = rng.random(rows.size) < drop_prob
    flip = rng.random(rows.size) < 0.5
    for k in order:
        if not drop[k]:
            continue
        i, j = (rows[k], cols[k]) if flip[k] else (cols[k], rows[k])
        # Remove j -> i. The rest of the graph was strongly connected, so it stays so
        # iff j can still reach i.
        a[i, j] = False
        if not _reachable(a, int(j), forward=True)[i]:
            a[i, j] = True
    return a


# --------------------------------------------------------------------------------------
# networkx interop.
# --------------------------------------------------------------------------------------


def from_networkx_digraph(graph: nx.DiGraph) -> BoolMatrix:
    """Converts a directed networkx graph to a directed bool adjacency matrix.

    A networkx edge ``u -> v`` becomes ``A[index(v), index(u)] = True`` (``v`` receives
    from ``u``), where node ``k`` of the result is ``list(graph.nodes)[k]``, the order
    :func:`core.topology.from_networkx` uses too. Self-loops are dropped and multi-edges
    merged. Strong connectivity is not checked here; use
    :func:`check_strongly_connected`.

    Args:
      graph: a ``networkx.DiGraph`` (or ``MultiDiGraph``) with at least one node.

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
    index = {node: k for k, node in enumerate(nodes)}
    a = np.zeros((len(nodes), len(nodes)), dtype=np.bool_)
    for u, v in graph.edges():
        a[index[v], index[u]] = True
    np.fill_diagonal(a, False)
    return a


# --------------------------------------------------------------------------------------
# Row- and column-stochastic weights.
# --------------------------------------------------------------------------------------


def row_stochastic(A: npt.ArrayLike) -> FloatMatrix:
    r"""Row-stochastic pull weights :math:`R` with self-loops.

    .. math::

       R_{ij} = \frac{a_{ij}}{\sum_{j'} a_{ij'}}, \qquad a_{ii} = 1,

    so agent ``i`` puts :math:`1/(|\mathcal N^{in}_i| + 1)` on itself and on each agent
    it receives from (ALGORITHMS.md §1.1(7)). Strong connectivity is not checked here;
    :func:`check_row_stochastic` does.

    Args:
      A: directed adjacency matrix (``A[i, j]`` means ``j -> i``), validated by
        :func:`check_directed_adjacency`.

    Returns:
      The float64 ``(n, n)`` matrix :math:`R`, with :math:`R \mathbf 1 = \mathbf 1` and
      off-diagonal support exactly ``A``.

    Raises:
      ValueError: if ``A`` is not a valid directed adjacency matrix.
    """
    a = check_directed_adjacency(A)
    a = a.astype(np.float64) + np.eye(a.shape[0])  # self-loops: a_ii = 1
    return a / a.sum(axis=1, keepdims=True)


def column_stochastic(A: npt.ArrayLike) -> FloatMatrix:
    r"""Column-stochastic push weights :math:`C` with self-loops.

    .. math::

       C_{ij} = \frac{a_{ij}}{\sum_{i'} a_{i'j}}, \qquad a_{jj} = 1,

    so sender ``j`` splits its mass equally, :math:`1/(|\mathcal N^{out}_j| + 1)`, among
    itself and each agent it sends to (ALGORITHMS.md §1.1(7)). Strong connectivity is
    not checked here; :func:`check_column_stochastic` does.

    Args:
      A: directed adjacency matrix (``A[i, j]`` means ``j -> i``), validated by
        :func:`check_directed_adjacency`.

    Returns:
      The float64 ``(n, n)`` matrix :math:`C`, with :math:`\mathbf 1^\top C =
      \mathbf 1^\top` and off-diagonal support exactly ``A``.

    Raises:
      ValueError: if ``A`` is not a valid directed adjacency matrix.
    """
    a = check_directed_adjacency(A)
    a = a.astype(np.float64) + np.eye(a.shape[0])  # self-loops: a_jj = 1
    return a / a.sum(axis=0, keepdims=True)


def _period(a: BoolMatrix) -> int:
    """Period (gcd of cycle lengths) of a strongly connected digraph without self-loops."""
    # BFS depths from node 0; for a strongly connected graph the period is the gcd of
    # depth[src] + 1 - depth[dst] over all edges src -> dst (a standard result).
    n = a.shape[0]
    depth = np.full(n, -1, dtype=np.int64)
    depth[0] = 0
    frontier = np.zeros(n, dtype=np.bool_)
    frontier[0] = True
    level = 0
    while frontier.any():
        level += 1
        frontier = a.T[frontier].any(axis=0) & (depth < 0)
        depth[frontier] = level
    dst, src = np.nonzero(a)  # A[dst, src] means src -> dst
    return int(np.gcd.reduce(np.abs(depth[src] + 1 - depth[dst])))


def _check_stochastic(M: npt.ArrayLike, name: str, axis: int, atol: float) -> FloatMatrix:
    """Shared body of check_row_stochastic (axis=1) and check_column_stochastic (axis=0)."""
    what = "row" if axis == 1 else "column"
    m = weights._as_square_float(M, name)
    weights._check_entries(m, name, f"{what}-stochastic matrix", atol)
    weights._check_sums(m, name, f"{what}-stochastic matrix", axis, atol)
    # Off-diagonal positives: m[i, j] > 0 means j -> i for both R (i pulls from j) and
    # C (j pushes to i), so the support is a directed adjacency in this module's sense.
    # Strictly positive, not nonzero: a tolerated tiny negative entry is not a link.
    a = m > 0
    np.fill_diagonal(a, False)
    try:
        check_strongly_connected(a)
    except ValueError as err:
        raise ValueError(f"the support graph of {name} is not valid: {err}") from None
    # Strongly connected with a positive diagonal entry is primitive; without one, the
    # matrix can be periodic (e.g. a permutation), and then M^k never converges.
    if not (np.diag(m) > 0).any():
        period = _period(a)
        if period > 1:
            raise ValueError(
                f"{name} is periodic: its support graph is strongly connected but every "
                f"cycle length is a multiple of {period} and no diagonal entry is positive, "
                f"so {name}^k does not converge; add self-weights (e.g. (I + {name}) / 2)."
            )
    return m


def check_row_stochastic(R: npt.ArrayLike, atol: float = 1e-10) -> FloatMatrix:
    r"""Validates a row-stochastic pull matrix :math:`R` on the host.

    Checks, in order: 2-D square real array; all entries finite; entries ``>= -atol``;
    every row sums to 1 within ``atol``; the support graph (``R[i, j] != 0``, ``i != j``,
    meaning ``j -> i``) is strongly connected; and :math:`R` is primitive (aperiodic),
    which holds whenever some self-weight is positive. Together these make the left
    Perron vector unique and positive and :math:`R^k \to \mathbf 1 u^\top / n`.

    Args:
      R: candidate matrix of shape ``(n, n)``.
      atol: absolute tolerance for the sign and sum checks.

    Returns:
      ``R`` as a float64 ndarray (a copy).

    Raises:
      ValueError: on the first failed check; the message names the offending entry,
        row and its sum, or the strongly connected components / period of the support.
    """
    return _check_stochastic(R, "R", axis=1, atol=atol)


def check_column_stochastic(C: npt.ArrayLike, atol: float = 1e-10) -> FloatMatrix:
    r"""Validates a column-stochastic push matrix :math:`C` on the host.

    Checks, in order: 2-D square real array; all entries finite; entries ``>= -atol``;
    every column sums to 1 within ``atol``; the support graph (``C[i, j] != 0``,
    ``i != j``, meaning ``j -> i``) is strongly connected; and :math:`C` is primitive
    (aperiodic). Together these make the right Perron vector unique and positive and
    :math:`C^k \to v \mathbf 1^\top / n`.

    Args:
      C: candidate matrix of shape ``(n, n)``.
      atol: absolute tolerance for the sign and sum checks.

    Returns:
      ``C`` as a float64 ndarray (a copy).

    Raises:
      ValueError: on the first failed check; the message names the offending entry,
        column and its sum, or the strongly connected components / period of the
        support.
    """
    return _check_stochastic(C, "C", axis=0, atol=atol)


def _stationary(m: FloatMatrix, name: str) -> npt.NDArray[np.float64]:
    """Solves m x = x, sum(x) = n for a validated column-stochastic, irreducible ``m``."""
    n = m.shape[0]
    rhs = np.full(n, float(n))
    # B = I - m has left null vector 1 (1^T m = 1^T) and, m being irreducible, a
    # one-dimensional null space spanned by x > 0. Then B + 1 1^T is nonsingular
    # (1^T 1 != 0 and 1^T x != 0) and (B + 1 1^T) x = 1 (1^T x) = n 1. A direct solve
    # is exact up to rounding and, unlike power iteration, does not depend on the
    # second eigenvalue, so slowly mixing graphs cost no more.
    system = np.eye(n) - m + 1.0
    lu = scipy.linalg.lu_factor(system)
    x = scipy.linalg.lu_solve(lu, rhs)
    # One step of iterative refinement (same factorisation, so nearly free) cuts the
    # error on slowly mixing graphs: on a directed ring of 100 from 4e-13 to 1e-13.
    x += scipy.linalg.lu_solve(lu, rhs - system @ x)
    residual = float(np.max(np.abs(m @ x - x)))
    if not (residual <= _PERRON_RESIDUAL_TOL and x.min() >= -_PERRON_RESIDUAL_TOL):
        raise ValueError(
            f"the Perron vector of {name} could not be computed accurately: residual "
            f"{residual:.3g}, smallest entry {x.min():.3g}; {name} is too ill-conditioned "
            f"(n={n})."
        )
    # The exact vector is positive, but its entries can be far below rounding (on
    # unbalanced_example(100) the smallest is ~1e-47), so they may come out as tiny
    # negatives; clipping them to 0 only moves x toward the exact vector.
    x = np.maximum(x, 0.0)
    return x * (n / x.sum())


def perron_left(R: npt.ArrayLike) -> npt.NDArray[np.float64]:
    r"""Left Perron vector :math:`u` of a row-stochastic :math:`R`.

    :math:`u^\top R = u^\top`, :math:`u \ge 0`, :math:`\sum_i u_i = n`. Pulling with
    :math:`R` converges to :math:`\mathbf 1 u^\top x / n`, the plain mean only when
    :math:`u = \mathbf 1`. Computed by a direct linear solve with one refinement step
    (residual and error about 1e-13 or less for ``n <= 100``). The exact :math:`u` is positive, but
    entries below rounding level (strongly unbalanced graphs) are returned as 0.

    Args:
      R: row-stochastic matrix, validated by :func:`check_row_stochastic`.

    Returns:
      The float64 vector :math:`u` of length ``n``.

    Raises:
      ValueError: if ``R`` is not a valid row-stochastic matrix (in particular if its
        support is not strongly connected or it is periodic, when :math:`u` is not unique
        or :math:`R^k` does not converge).
    """
    r = check_row_stochastic(R)
    return _stationary(r.T, "R")


def perron_right(C: npt.ArrayLike) -> npt.NDArray[np.float64]:
    r"""Right Perron vector :math:`v` of a column-stochastic :math:`C`.

    :math:`C v = v`, :math:`v \ge 0`, :math:`\sum_i v_i = n`. Pushing with :math:`C`
    converges to :math:`v \mathbf 1^\top x / n`, which push-sum divides by
    :math:`v \mathbf 1^\top \mathbf 1 / n = v` to recover the mean. Computed as in
    :func:`perron_left`; entries below rounding level are returned as 0.

    Args:
      C: column-stochastic matrix, validated by :func:`check_column_stochastic`.

    Returns:
      The float64 vector :math:`v` of length ``n``.

    Raises:
      ValueError: if ``C`` is not a valid column-stochastic matrix (in particular if its
        support is not strongly connected or it is periodic).
    """
    c = check_column_stochastic(C)
    return _stationary(c, "C")


def check_push_pull_pair(
    R: npt.ArrayLike, C: npt.ArrayLike, *, atol: float = 1e-10
) -> tuple[FloatMatrix, FloatMatrix]:
    r"""Validates the pull/push pair of Push-Pull (AB) methods (ALGORITHMS.md §0).

    ``R`` and ``C`` may live on different graphs but must have the same number of
    agents; each must pass its own check, and their Perron vectors must satisfy
    :math:`u^\top v > 0`. Since both supports are required to be strongly connected,
    :math:`u, v > 0` and that last condition always holds; it is checked anyway so
    that a numerical failure cannot slip through.

    Args:
      R: row-stochastic pull matrix, checked by :func:`check_row_stochastic`.
      C: column-stochastic push matrix, checked by :func:`check_column_stochastic`.
      atol: absolute tolerance for both matrices' sign and sum checks.

    Returns:
      ``(R, C)`` as float64 ndarrays (copies).

    Raises:
      ValueError: if the shapes differ, either matrix is invalid, or
        :math:`u^\top v \le 10^{-12} \|u\| \|v\|`.
    """
    r_shape, c_shape = np.shape(R), np.shape(C)
    if r_shape != c_shape:
        raise ValueError(
            f"R and C must have the same shape (one row and column per agent), got "
            f"R of shape {r_shape} and C of shape {c_shape}."
        )
    r = check_row_stochastic(R, atol=atol)
    c = check_column_stochastic(C, atol=atol)
    u, v = perron_left(r), perron_right(c)
    uv = float(u @ v)
    # Relative to |u| |v|: an exact zero shows up as rounding noise of either sign.
    if not uv > 1e-12 * float(np.linalg.norm(u) * np.linalg.norm(v)):
        raise ValueError(
            f"Push-Pull needs u^T v > 0 for the left Perron vector u of R and the right "
            f"Perron vector v of C, got u^T v = {uv:.6g} (|u| |v| = "
            f"{np.linalg.norm(u) * np.linalg.norm(v):.6g})."
        )
    return r, c


# --------------------------------------------------------------------------------------
# Time-varying graphs.
# --------------------------------------------------------------------------------------


def one_peer_exponential(n: int) -> list[FloatMatrix]:
    r"""Mixing matrices of the one-peer exponential graph (Ying et al. 2021).

    Ying, Yuan, Chen, Hu, Pan, Yin, "Exponential Graph is Provably Efficient for
    Decentralized Deep Training", NeurIPS 2021 (arXiv 2110.13363). With
    :math:`\tau = \lceil \log_2 n \rceil`, at round ``k`` every node ``i`` averages with
    the single node ``(i + 2**(k mod tau)) mod n``:

    .. math::

       W^{(k)} = \tfrac12 \bigl(I + P^{2^{k \bmod \tau}}\bigr), \qquad
       (P x)_i = x_{(i + 1) \bmod n}.

    Each :math:`W^{(k)}` is doubly stochastic (a circulant) but in general not symmetric
    (node ``i`` pulls from ``i + 2^h`` only). The matrices commute, and when ``n`` is a
    power of two their product over one period is *exactly* the average:

    .. math::

       W^{(\tau - 1)} \cdots W^{(1)} W^{(0)}
       = \prod_{h=0}^{\tau-1} \tfrac12 (I + P^{2^h})
       = \tfrac1n \sum_{m=0}^{n-1} P^m = J,

    because every :math:`m < n` has exactly one binary expansion (all entries are
    dyadic, so this also holds in floating point). For other ``n`` the product is only
    close to ``J``.

    Args:
      n: number of nodes, ``n >= 2``.

    Returns:
      A list of :math:`\tau` float64 ``(n, n)`` matrices; round ``k`` uses entry
      ``k % tau``. Row ``i`` of entry ``h`` has ``1/2`` at columns ``i`` and
      ``(i + 2**h) % n``.

    Raises:
      ValueError: if ``n`` is not an integer >= 2.
    """
    n = _check_int("one_peer_exponential", "n", n, 2)
    tau = (n - 1).bit_length()  # ceil(log2 n), exact in integers
    nodes = np.arange(n)
    mats = []
    for h in range(tau):
        # 2**h <= 2**(tau - 1) < n, so the peer is never the node itself.
        w = 0.5 * np.eye(n)
        w[nodes, (nodes + 2**h) % n] = 0.5
        mats.append(w)
    return mats
