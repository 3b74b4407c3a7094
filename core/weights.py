r"""Mixing matrices for undirected graphs, built on the host in float64 NumPy.

A mixing matrix :math:`W \in \mathbb{R}^{n \times n}` is symmetric, doubly stochastic,
nonnegative, and has :math:`w_{ij} > 0` only on edges and self-loops of the
communication graph. Gossip computes :math:`X \leftarrow W X`. Its speed is measured by

.. math::

   \lambda = \|W - J\|_2, \qquad J = \tfrac{1}{n} \mathbf{1}\mathbf{1}^\top,

the *mixing rate*, and :math:`1 - \lambda`, the *spectral gap*; consensus is reached
only when :math:`\lambda < 1`.

Constructors take a bool adjacency matrix from :mod:`core.topology` (see
ALGORITHMS.md §1.1 for where each weighting is used) and return the format they are
given (:mod:`core.sparse`): dense in, dense out; sparse in, ``scipy.sparse.csr_array``
out, built in O(nnz) without an ``n x n`` array. Each rule is written once, on the
edge list, so both formats give the same numbers. The checks below and the spectral
quantities (:mod:`core.spectral`, re-exported here) accept either format.

The constructors do not check connectivity;
:func:`check_mixing_matrix` does, and every consumer should call it once on the host
before compiling anything, so a bad matrix is a clear error instead of a silent
divergence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from decentjax.core import adjacency, topology
from decentjax.core import sparse as sparse_lib
from decentjax.core.spectral import (
    _CONNECTED_TOL,
    DENSE_SPECTRUM_MAX_N,
    mixing_rate,
    spectral_gap,
)

__all__ = [
    "averaging",
    "check_mixing_matrix",
    "laplacian",
    "lazy",
    "metropolis_drr",
    "metropolis_hastings",
    "mixing_rate",
    "spectral_gap",
    "support",
    "uniform",
]

FloatMatrix = npt.NDArray[np.float64]
"""A dense float64 matrix; sparse ones are ``scipy.sparse.csr_array`` of float64."""


def _as_square_float(W: Any, name: str = "W") -> Any:
    """``W`` as a float64 (n, n) copy, dense or csr_array, or a ValueError naming the problem."""
    w = W if sparse_lib.issparse(W) else np.asarray(W)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
        raise ValueError(
            f"{name} must be a 2-D square array of shape (n, n) with n >= 1, got shape {w.shape}."
        )
    # Bool is excluded on purpose: a bool matrix is an adjacency, not weights.
    if w.dtype.kind not in "iuf":
        raise ValueError(f"{name} must have real float (or integer) entries, got dtype {w.dtype}.")
    if sparse_lib.issparse(w):
        return sparse_lib.as_csr(w, dtype=np.float64)
    return w.astype(np.float64)


def _edge_rule(A: Any, weight: Any, diag: Any = None) -> Any:
    """``w_ij = weight(d_i, d_j)`` on the edges, ``w_ii = 1 - sum_{j != i} w_ij``.

    ``d`` is the degree without self-loop. Written once on the edge list (O(nnz)); the
    result has the format of ``A``. ``diag(d)``, if given, sets ``w_ii`` in closed form
    instead (bit-identical to the dense formulas of earlier releases).
    """
    a = topology.check_adjacency(A)
    csr = sparse_lib.as_csr(a)
    d = adjacency.row_counts(csr, axis=1).astype(np.float64)
    rows, cols = sparse_lib.coo_indices(csr)
    self_weight = None if diag is None else diag(d)
    return _fill_diagonal(csr.shape[0], rows, cols, weight(d[rows], d[cols]), a, self_weight)


def _fill_diagonal(n: int, rows: Any, cols: Any, vals: Any, like: Any, diag: Any = None) -> Any:
    """Off-diagonal COO entries plus ``w_ii = 1 - sum_{j != i} w_ij``, in ``like``'s format."""
    if diag is None:
        diag = 1.0 - np.bincount(rows, weights=vals, minlength=n)
    nodes = np.arange(n)
    w = sparse_lib.from_coo(
        n,
        np.concatenate([rows, nodes]),
        np.concatenate([cols, nodes]),
        np.concatenate([vals, diag]),
        np.float64,
    )
    w.eliminate_zeros()
    return sparse_lib.like(w, sparse_lib.issparse(like))


def metropolis_hastings(A: Any) -> Any:
    r"""Textbook Metropolis–Hastings weights.

    .. math::

       w_{ij} = \frac{1}{1 + \max(d_i, d_j)} \ \text{for } (i, j) \in \mathcal{E},
       \qquad w_{ii} = 1 - \sum_{j \ne i} w_{ij},

    with :math:`d_i` the degree without self-loop. Symmetric and doubly stochastic on
    any graph, with :math:`w_{ii} \ge 1/(1 + d_i) > 0`.

    Args:
      A: bool adjacency matrix of shape ``(n, n)`` (validated by
        :func:`core.topology.check_adjacency`).

    Returns:
      The float64 mixing matrix of shape ``(n, n)``.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix.
    """
    return _edge_rule(A, lambda di, dj: 1.0 / (1.0 + np.maximum(di, dj)))


def metropolis_drr(A: Any, *, self_loop_in_degree: bool) -> Any:
    r"""Metropolis variant of Kun Huang's D-RR/DSMT code (``Weight_matrix.metroplis``).

    .. math::

       w_{ij} = \frac{1}{2 \max(\deg_i, \deg_j)} \ \text{for } (i, j) \in \mathcal{E},
       \qquad w_{ii} = 1 - \sum_{j \ne i} w_{ij}.

    The code takes :math:`\deg` as the column sum of its 0/1 adjacency, which stores a
    self-loop for ``Ring_graph`` and ``Exponential_graph`` but not for ``Grid_graph``
    and ``ER_graph`` (ALGORITHMS.md §1.1(2)); ``self_loop_in_degree`` reproduces that
    choice: pass True for ring and exponential graphs, False for grid and ER graphs.
    For a ring, True gives :math:`w_{ij} = 1/6`, :math:`w_{ii} = 2/3`. The D-RR
    optimisers then use :func:`lazy` of this matrix; that step is left to the caller.
    Use this only to reproduce those experiments; otherwise prefer
    :func:`metropolis_hastings`.

    Args:
      A: bool adjacency matrix of shape ``(n, n)`` (no self-loops are needed; a
        nonzero diagonal is ignored).
      self_loop_in_degree: whether :math:`\deg_i` counts the self-loop, i.e. is
        :math:`d_i + 1` rather than :math:`d_i`. Required, because the reference code
        differs between graph families.

    Returns:
      The float64 mixing matrix of shape ``(n, n)``; symmetric and doubly stochastic,
      with :math:`w_{ii} \ge 1/2`.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix.
    """
    loop = 1.0 if self_loop_in_degree else 0.0
    return _edge_rule(A, lambda di, dj: 1.0 / (2.0 * (np.maximum(di, dj) + loop)))


def lazy(W: Any) -> Any:
    r"""Lazy version :math:`\bar W = (I + W) / 2` of a mixing matrix.

    Moves every eigenvalue :math:`\mu` to :math:`(1 + \mu)/2 \ge 0` for symmetric
    stochastic :math:`W`, as Exact Diffusion / ED-RR / NIDS / CEDAS need
    (:math:`\bar W \succeq 0`), and halves every off-diagonal weight.

    Args:
      W: square mixing matrix (any stochastic matrix: row, column or doubly).

    Returns:
      The float64 matrix :math:`(I + W)/2`, with the same stochasticity as ``W``.

    Raises:
      ValueError: if ``W`` is not a 2-D square real array.
    """
    w = _as_square_float(W)
    if sparse_lib.issparse(w):
        return sparse_lib.as_csr(0.5 * (sp.eye_array(w.shape[0]) + w))
    return 0.5 * (np.eye(w.shape[0]) + w)


def uniform(A: Any) -> Any:
    r"""Uniform weights: each node weights itself and each neighbour :math:`1/(d + 1)`.

    These are the ChocoSGD ring (1/3) and torus (1/5) weights. They are doubly stochastic
    only when every node has the same degree :math:`d` (a regular graph), so other
    graphs are rejected rather than silently given a matrix that is not doubly
    stochastic.

    Args:
      A: bool adjacency matrix of a regular graph.

    Returns:
      The float64 mixing matrix ``(A + I) / (d + 1)``.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix or the graph is not regular.
    """
    a = topology.check_adjacency(A)
    d = adjacency.row_counts(a, axis=1)
    if d.min() != d.max():
        i, j = int(np.argmin(d)), int(np.argmax(d))
        raise ValueError(
            f"uniform weights are doubly stochastic only on regular graphs; node {i} has "
            f"degree {d[i]}, node {j} degree {d[j]}; use metropolis_hastings."
        )
    uniform_weight = 1.0 / (d[0] + 1.0)
    return _edge_rule(
        a,
        lambda di, dj: np.full(di.shape, uniform_weight),
        lambda deg: np.full(deg.shape, uniform_weight),
    )


def laplacian(A: Any, *, alpha: float | None = None) -> Any:
    r"""Laplacian weights :math:`W = I - \alpha L`, with :math:`L = D - A`.

    Every edge gets weight :math:`\alpha` and node :math:`i` keeps
    :math:`1 - \alpha d_i`. With :math:`\alpha = 1/d_{\max}` some nodes keep no
    self-weight, and on a bipartite regular graph :math:`W` then has eigenvalue
    :math:`-1` and does not mix (:func:`check_mixing_matrix` reports this); the default
    :math:`1/(d_{\max} + 1)` always mixes on a connected graph.

    Args:
      A: bool adjacency matrix of shape ``(n, n)``.
      alpha: edge weight, in ``(0, 1/d_max]``; defaults to ``1/(d_max + 1)``. On a graph
        without edges any ``alpha > 0`` is accepted and ``W = I``.

    Returns:
      The float64 mixing matrix of shape ``(n, n)``.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix, or ``alpha`` is outside
        ``(0, 1/d_max]``.
    """
    a = topology.check_adjacency(A)
    d_max = int(adjacency.row_counts(a, axis=1).max())
    if alpha is None:
        alpha = 1.0 / (d_max + 1)
    else:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise ValueError(f"laplacian: alpha must be a real number, got alpha={alpha!r}.")
        alpha = float(alpha)
        upper = 1.0 / d_max if d_max > 0 else np.inf
        if not 0.0 < alpha <= upper:
            raise ValueError(
                f"laplacian: alpha must be in (0, 1/d_max] = (0, {upper:.6g}] for maximum "
                f"degree d_max={d_max}, got alpha={alpha}; larger alpha makes self-weights "
                f"negative."
            )
    return _edge_rule(a, lambda di, dj: np.full(di.shape, alpha), lambda deg: 1.0 - alpha * deg)


def averaging(n: int) -> FloatMatrix:
    r"""Exact averaging :math:`W = J = \frac{1}{n}\mathbf{1}\mathbf{1}^\top` (centralized).

    Args:
      n: number of agents, ``n >= 1``.

    Returns:
      The float64 ``(n, n)`` matrix with every entry ``1/n``; its spectral gap is 1.
      Always dense: it has ``n^2`` nonzeros in any format.

    Raises:
      ValueError: if ``n`` is not an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"averaging: n must be an integer >= 1, got n={n!r}.")
    return np.full((int(n), int(n)), 1.0 / int(n))


def support(W: Any) -> Any:
    """Boolean adjacency of the off-diagonal nonzeros of ``W``.

    Entry ``(i, j)`` is True when ``w_ij != 0`` and ``i != j``: the links gossip with
    ``W`` actually uses. For a symmetric ``W`` this is a valid
    :mod:`core.topology` adjacency matrix.

    Args:
      W: square weight matrix, dense or sparse.

    Returns:
      A bool matrix of shape ``(n, n)`` with a zero diagonal, in the format of ``W``.

    Raises:
      ValueError: if ``W`` is not a 2-D square real array.
    """
    w = _as_square_float(W)
    if sparse_lib.issparse(w):
        return sparse_lib.without_diagonal(pattern(w, include_diagonal=True))
    s = w != 0.0
    np.fill_diagonal(s, False)
    return s


def pattern(w: Any, *, include_diagonal: bool) -> sp.csr_array:
    """The nonzero pattern of a dense or sparse matrix as a bool csr_array (O(nnz))."""
    a = sparse_lib.as_csr(w)
    a.eliminate_zeros()
    a = sp.csr_array((np.ones(a.nnz, np.bool_), a.indices, a.indptr), shape=a.shape)
    return a if include_diagonal else sparse_lib.without_diagonal(a)


def _check_entries(m: Any, name: str, kind: str, atol: float) -> None:
    """Raises unless every entry of ``m`` is finite and ``>= -atol`` (names the first bad one).

    Shared by :func:`check_mixing_matrix` and :mod:`core.directed`'s stochastic checks;
    ``name`` is the matrix's symbol (``"W"``, ``"R"``), ``kind`` what it must be. O(nnz)
    for a canonical csr_array (unstored entries are zeros, which pass).
    """
    if sparse_lib.issparse(m):
        values = m.data
        coords = sparse_lib.coo_indices(m)

        def first(mask: np.ndarray) -> tuple[int, int]:
            return sparse_lib.first_true(mask, *coords)
    else:
        values = m

        def first(mask: np.ndarray) -> tuple[int, int]:
            i, j = np.argwhere(mask)[0]
            return int(i), int(j)

    nonfinite = ~np.isfinite(values)
    if nonfinite.any():
        i, j = first(nonfinite)
        raise ValueError(
            f"{name}[{i}, {j}] = {m[i, j]}; a {kind} needs finite entries "
            f"({int(nonfinite.sum())} non-finite entries in {name} of shape {m.shape})."
        )
    if values.size and values.min() < -atol:
        i, j = first(values == values.min())
        raise ValueError(
            f"{name}[{i}, {j}] = {m[i, j]:.6g} is negative; a {kind} needs nonnegative "
            f"entries (atol={atol})."
        )


def _check_sums(m: Any, name: str, kind: str, axis: int, atol: float) -> None:
    """Raises unless every row (``axis=1``) or column (``axis=0``) of ``m`` sums to 1."""
    what = "row" if axis == 1 else "column"
    sums = np.asarray(m.sum(axis=axis)).ravel()
    k = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[k] - 1.0) > atol:
        raise ValueError(
            f"{what} {k} of {name} sums to {sums[k]:.12g}; a {kind} needs every {what} to "
            f"sum to 1 (atol={atol})."
        )


def largest_asymmetry(w: Any) -> tuple[float, int, int]:
    """``max |W - W^T|`` and the first ``(i, j)`` where it is reached (O(nnz) if sparse)."""
    if sparse_lib.issparse(w):
        asym = sparse_lib.as_csr(abs(w - w.T))
        if not asym.nnz:
            return 0.0, 0, 0
        i, j = sparse_lib.first_true(asym.data == asym.data.max(), *sparse_lib.coo_indices(asym))
        return float(asym.data.max()), i, j
    asym = np.abs(w - w.T)
    i, j = np.unravel_index(np.argmax(asym), w.shape)
    return float(asym[i, j]), int(i), int(j)


def _check_mixes_by_graph(w: Any, symmetric: bool) -> None:
    r"""Raises unless ``||W - J||_2 < 1``, decided from support graphs (no eigensolver).

    For a nonnegative doubly stochastic ``W``, ``(W - J)^T (W - J) = W^T W - J``, so
    ``||W - J||_2 < 1`` iff the symmetric stochastic ``M = W^T W`` has no eigenvalue of
    modulus 1 on the complement of the consensus direction. By Perron-Frobenius that
    holds iff the support graph of ``M`` is connected (``M`` is PSD and has a positive
    diagonal, so -1 cannot occur). The support of ``W`` is checked first (a disconnected
    ``W`` gets its own message); for a symmetric ``W`` a connected ``W`` whose ``W^2``
    is disconnected is bipartite with zero self-weights, i.e. has eigenvalue -1.
    O(nnz) when the self-weights settle it (below), else O(nnz(W^T W)).
    """
    a = pattern(w, include_diagonal=True).astype(np.float32)
    labels = adjacency._ordered_labels(a, directed=False)
    k = int(labels.max()) + 1
    if k > 1:
        raise ValueError(
            f"W does not mix: its support graph is disconnected ({k} components, sizes "
            f"{np.bincount(labels).tolist()[:10]}); a mixing matrix needs a connected graph "
            "(mixing_rate < 1)."
        )
    # W^T W >= w_ii w_ij entrywise, so with every self-weight positive its support
    # contains that of W; a symmetric W needs one (an odd cycle through it).
    diagonal = w.diagonal()
    if diagonal.min() > 0 or (symmetric and diagonal.max() > 0):
        return
    labels = adjacency._ordered_labels(a.T @ a, directed=False)
    k = int(labels.max()) + 1
    if k == 1:
        return
    if symmetric:
        raise ValueError(
            "W does not mix: its support graph is connected but bipartite with zero "
            f"self-weights, so W has eigenvalue -1 (mixing_rate = 1); use lazy(W) "
            f"(n={w.shape[0]})."
        )
    raise ValueError(
        f"W does not mix: the support graph of W^T W has {k} components (sizes "
        f"{np.bincount(labels).tolist()[:10]}), so ||W - J||_2 = 1; a mixing matrix "
        "needs W^T W connected (e.g. add self-weights: lazy(W))."
    )


def check_mixing_matrix(W: Any, *, symmetric: bool = True, atol: float = 1e-10) -> Any:
    """Validates a doubly stochastic mixing matrix on the host, before any compilation.

    Checks, in order: 2-D square real array; all entries finite; entries ``>= -atol``;
    every row sums to 1 and every column sums to 1 (within ``atol``); symmetric (when
    ``symmetric``); and mixing, i.e. :func:`mixing_rate` below ``1 - 1e-12``, which
    fails when the support graph is disconnected or ``W`` has another eigenvalue of
    modulus 1 (e.g. -1 on a bipartite graph with zero self-weights). Above
    :data:`DENSE_SPECTRUM_MAX_N` agents "mixing" is decided exactly from support graphs
    in O(nnz) (:func:`_check_mixes_by_graph`) instead of an O(n^3) SVD, so a sparse
    ``W`` of 100,000 agents is checked in O(nnz) time and memory.

    Args:
      W: candidate mixing matrix of shape ``(n, n)``, dense or ``scipy.sparse``.
      symmetric: require ``W == W.T`` (within ``atol``). Pass False for a doubly
        stochastic but non-symmetric matrix.
      atol: absolute tolerance for the sign, sum and symmetry checks.

    Returns:
      ``W`` as a float64 copy: a dense ndarray for dense input, a ``csr_array`` for
      sparse input.

    Raises:
      ValueError: on the first failed check; the message names the offending value
        and its position (row, column or entry), and what a valid matrix needs.
    """
    w = _as_square_float(W)
    n = w.shape[0]

    _check_entries(w, "W", "mixing matrix", atol)
    for axis in (1, 0):
        _check_sums(w, "W", "mixing matrix", axis, atol)

    if symmetric:
        asym, i, j = largest_asymmetry(w)
        if asym > atol:
            raise ValueError(
                f"W is not symmetric: the largest asymmetry |W - W^T| is {asym:.6g} at "
                f"({i}, {j}) (W[{i}, {j}] = {w[i, j]:.12g}, W[{j}, {i}] = {w[j, i]:.12g}); "
                f"symmetrise W, or pass symmetric=False for a non-symmetric doubly "
                f"stochastic matrix (atol={atol})."
            )

    if n > DENSE_SPECTRUM_MAX_N:
        _check_mixes_by_graph(w, symmetric)
        return w
    rate = mixing_rate(w)
    if rate >= 1.0 - _CONNECTED_TOL:
        labels = adjacency._ordered_labels(support(w), directed=False)
        k = int(labels.max()) + 1
        if k > 1:
            raise ValueError(
                f"W does not mix: its support graph is disconnected ({k} components, "
                f"sizes {np.bincount(labels).tolist()[:10]}), so mixing_rate = {rate:.12g}; "
                f"a mixing matrix needs a connected graph (mixing_rate < 1)."
            )
        raise ValueError(
            f"W does not mix: mixing_rate = ||W - J||_2 = {rate:.12g} although its graph "
            f"is connected, so W has an eigenvalue of modulus 1 other than the consensus "
            f"one (e.g. -1 on a bipartite graph with zero self-weights); use lazy(W) "
            f"(n={n})."
        )
    return w
