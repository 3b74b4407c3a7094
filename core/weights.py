r"""Mixing matrices for undirected graphs, built on the host in float64 NumPy.

A mixing matrix :math:`W \in \mathbb{R}^{n \times n}` is symmetric, doubly stochastic,
nonnegative, and has :math:`w_{ij} > 0` only on edges and self-loops of the
communication graph. Gossip computes :math:`X \leftarrow W X`. Its speed is measured by

.. math::

   \lambda = \|W - J\|_2, \qquad J = \tfrac{1}{n} \mathbf{1}\mathbf{1}^\top,

the *mixing rate*, and :math:`1 - \lambda`, the *spectral gap*; consensus is reached
only when :math:`\lambda < 1`.

Constructors take a bool adjacency matrix from :mod:`core.topology` (see
ALGORITHMS.md §1.1 for where each weighting is used). They do not check connectivity;
:func:`check_mixing_matrix` does, and every consumer should call it once on the host
before compiling anything, so a bad matrix is a clear error instead of a silent
divergence.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from core import topology

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

# mixing_rate(W) must be below 1 - _CONNECTED_TOL for W to count as mixing: a rate of
# 1 up to rounding means an eigenvalue of modulus 1 besides the consensus direction.
_CONNECTED_TOL = 1e-12


def _as_square_float(W: npt.ArrayLike, name: str = "W") -> FloatMatrix:
    """Returns ``W`` as a float64 (n, n) array or raises a ValueError naming the problem."""
    w = np.asarray(W)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
        raise ValueError(
            f"{name} must be a 2-D square array of shape (n, n) with n >= 1, got shape {w.shape}."
        )
    # Bool is excluded on purpose: a bool matrix is an adjacency, not weights.
    if w.dtype.kind not in "iuf":
        raise ValueError(f"{name} must have real float (or integer) entries, got dtype {w.dtype}.")
    return w.astype(np.float64)


def _set_diagonal_to_fill_rows(w: FloatMatrix) -> FloatMatrix:
    """Sets w_ii = 1 - sum_{j != i} w_ij, so every row sums to 1."""
    np.fill_diagonal(w, 0.0)
    np.fill_diagonal(w, 1.0 - w.sum(axis=1))
    return w


def _edge_weights(a: npt.NDArray[np.bool_], denom: FloatMatrix) -> FloatMatrix:
    """Returns 1/denom on edges and 0 elsewhere, without dividing where there is no edge."""
    return np.divide(1.0, denom, out=np.zeros(a.shape, dtype=np.float64), where=a)


def metropolis_hastings(A: npt.ArrayLike) -> FloatMatrix:
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
    a = topology.check_adjacency(A)
    d = a.sum(axis=1).astype(np.float64)
    w = _edge_weights(a, 1.0 + np.maximum(d[:, None], d[None, :]))
    return _set_diagonal_to_fill_rows(w)


def metropolis_drr(A: npt.ArrayLike, *, self_loop_in_degree: bool) -> FloatMatrix:
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
    a = topology.check_adjacency(A)
    deg = a.sum(axis=1).astype(np.float64) + (1.0 if self_loop_in_degree else 0.0)
    w = _edge_weights(a, 2.0 * np.maximum(deg[:, None], deg[None, :]))
    return _set_diagonal_to_fill_rows(w)


def lazy(W: npt.ArrayLike) -> FloatMatrix:
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
    return 0.5 * (np.eye(w.shape[0]) + w)


def uniform(A: npt.ArrayLike) -> FloatMatrix:
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
    d = a.sum(axis=1)
    if d.min() != d.max():
        i, j = int(np.argmin(d)), int(np.argmax(d))
        raise ValueError(
            f"uniform weights are doubly stochastic only on regular graphs; node {i} has "
            f"degree {d[i]}, node {j} degree {d[j]}; use metropolis_hastings."
        )
    return (a.astype(np.float64) + np.eye(a.shape[0])) / (d[0] + 1.0)


def laplacian(A: npt.ArrayLike, *, alpha: float | None = None) -> FloatMatrix:
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
    d = a.sum(axis=1)
    d_max = int(d.max())
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
    lap = np.diag(d.astype(np.float64)) - a.astype(np.float64)
    return np.eye(a.shape[0]) - alpha * lap


def averaging(n: int) -> FloatMatrix:
    r"""Exact averaging :math:`W = J = \frac{1}{n}\mathbf{1}\mathbf{1}^\top` (centralized).

    Args:
      n: number of agents, ``n >= 1``.

    Returns:
      The float64 ``(n, n)`` matrix with every entry ``1/n``; its spectral gap is 1.

    Raises:
      ValueError: if ``n`` is not an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"averaging: n must be an integer >= 1, got n={n!r}.")
    return np.full((int(n), int(n)), 1.0 / int(n))


def mixing_rate(W: npt.ArrayLike) -> float:
    r"""Mixing rate :math:`\lambda = \|W - J\|_2` (spectral norm).

    For symmetric doubly stochastic :math:`W` this is the second largest eigenvalue
    modulus; one gossip step contracts the consensus error
    :math:`\|X - \mathbf{1}\bar x^\top\|` by at least this factor.

    Args:
      W: square mixing matrix.

    Returns:
      :math:`\lambda` as a Python float; below 1 for a connected doubly stochastic
      matrix without eigenvalue -1.

    Raises:
      ValueError: if ``W`` is not a 2-D square real array.
    """
    w = _as_square_float(W)
    n = w.shape[0]
    return float(np.linalg.norm(w - 1.0 / n, ord=2))


def spectral_gap(W: npt.ArrayLike) -> float:
    r"""Spectral gap :math:`1 - \|W - J\|_2` (see :func:`mixing_rate`).

    Args:
      W: square mixing matrix.

    Returns:
      The gap as a Python float: 1 for :func:`averaging`, close to 0 for sparse large
      graphs (about :math:`2\pi^2/(3n^2)` for a uniform ring).

    Raises:
      ValueError: if ``W`` is not a 2-D square real array.
    """
    return 1.0 - mixing_rate(W)


def support(W: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Boolean adjacency of the off-diagonal nonzeros of ``W``.

    Entry ``(i, j)`` is True when ``w_ij != 0`` and ``i != j``: the links gossip with
    ``W`` actually uses. For a symmetric ``W`` this is a valid
    :mod:`core.topology` adjacency matrix.

    Args:
      W: square weight matrix.

    Returns:
      A ``bool`` array of shape ``(n, n)`` with a zero diagonal.

    Raises:
      ValueError: if ``W`` is not a 2-D square real array.
    """
    s = _as_square_float(W) != 0.0
    np.fill_diagonal(s, False)
    return s


def _check_entries(m: FloatMatrix, name: str, kind: str, atol: float) -> None:
    """Raises unless every entry of ``m`` is finite and ``>= -atol`` (names the first bad one).

    Shared by :func:`check_mixing_matrix` and :mod:`core.directed`'s stochastic checks;
    ``name`` is the matrix's symbol (``"W"``, ``"R"``), ``kind`` what it must be.
    """
    nonfinite = ~np.isfinite(m)
    if nonfinite.any():
        i, j = np.argwhere(nonfinite)[0]
        raise ValueError(
            f"{name}[{i}, {j}] = {m[i, j]}; a {kind} needs finite entries "
            f"({int(nonfinite.sum())} non-finite entries in {name} of shape {m.shape})."
        )
    i, j = np.unravel_index(np.argmin(m), m.shape)
    if m[i, j] < -atol:
        raise ValueError(
            f"{name}[{i}, {j}] = {m[i, j]:.6g} is negative; a {kind} needs nonnegative "
            f"entries (atol={atol})."
        )


def _check_sums(m: FloatMatrix, name: str, kind: str, axis: int, atol: float) -> None:
    """Raises unless every row (``axis=1``) or column (``axis=0``) of ``m`` sums to 1."""
    what = "row" if axis == 1 else "column"
    sums = m.sum(axis=axis)
    k = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[k] - 1.0) > atol:
        raise ValueError(
            f"{what} {k} of {name} sums to {sums[k]:.12g}; a {kind} needs every {what} to "
            f"sum to 1 (atol={atol})."
        )


DENSE_SPECTRUM_MAX_N = 1024
"""Above this many agents :func:`check_mixing_matrix` decides "W mixes" from graphs.

The dense SVD of :func:`mixing_rate` is O(n^3): 76 s at n = 4096 on a 2-core CPU,
hours at 16384. :func:`_check_mixes_by_graph` decides the same question exactly in
O(nnz) (see its docstring)."""


def _check_mixes_by_graph(w: FloatMatrix, symmetric: bool) -> None:
    r"""Raises unless ``||W - J||_2 < 1``, decided from support graphs (no eigensolver).

    For a nonnegative doubly stochastic ``W``, ``(W - J)^T (W - J) = W^T W - J``, so
    ``||W - J||_2 < 1`` iff the symmetric stochastic ``M = W^T W`` has no eigenvalue of
    modulus 1 on the complement of the consensus direction. By Perron-Frobenius that
    holds iff the support graph of ``M`` is connected (``M`` is PSD and has a positive
    diagonal, so -1 cannot occur). The support of ``W`` is checked first (a disconnected
    ``W`` gets its own message); for a symmetric ``W`` a connected ``W`` whose ``W^2``
    is disconnected is bipartite with zero self-weights, i.e. has eigenvalue -1.
    """
    import scipy.sparse as sp
    from scipy.sparse import csgraph

    a = sp.csr_matrix(w != 0.0)
    k, labels = csgraph.connected_components(a, directed=False)
    if k > 1:
        raise ValueError(
            f"W does not mix: its support graph is disconnected ({k} components, sizes "
            f"{np.bincount(labels).tolist()[:10]}); a mixing matrix needs a connected graph "
            "(mixing_rate < 1)."
        )
    k, labels = csgraph.connected_components(a.T @ a, directed=False)
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


def check_mixing_matrix(
    W: npt.ArrayLike, *, symmetric: bool = True, atol: float = 1e-10
) -> FloatMatrix:
    """Validates a doubly stochastic mixing matrix on the host, before any compilation.

    Checks, in order: 2-D square real array; all entries finite; entries ``>= -atol``;
    every row sums to 1 and every column sums to 1 (within ``atol``); symmetric (when
    ``symmetric``); and mixing, i.e. :func:`mixing_rate` below ``1 - 1e-12``, which
    fails when the support graph is disconnected or ``W`` has another eigenvalue of
    modulus 1 (e.g. -1 on a bipartite graph with zero self-weights). Above
    :data:`DENSE_SPECTRUM_MAX_N` agents "mixing" is decided exactly from support graphs
    in O(nnz) (:func:`_check_mixes_by_graph`) instead of an O(n^3) SVD.

    Args:
      W: candidate mixing matrix of shape ``(n, n)``.
      symmetric: require ``W == W.T`` (within ``atol``). Pass False for a doubly
        stochastic but non-symmetric matrix.
      atol: absolute tolerance for the sign, sum and symmetry checks.

    Returns:
      ``W`` as a float64 ndarray (a copy).

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
        asym = np.abs(w - w.T)
        i, j = np.unravel_index(np.argmax(asym), w.shape)
        if asym[i, j] > atol:
            raise ValueError(
                f"W is not symmetric: the largest asymmetry |W - W^T| is {asym[i, j]:.6g} at "
                f"({i}, {j}) (W[{i}, {j}] = {w[i, j]:.12g}, W[{j}, {i}] = {w[j, i]:.12g}); "
                f"symmetrise W, or pass symmetric=False for a non-symmetric doubly "
                f"stochastic matrix (atol={atol})."
            )

    if n > DENSE_SPECTRUM_MAX_N:
        _check_mixes_by_graph(w, symmetric)
        return w
    rate = mixing_rate(w)
    if rate >= 1.0 - _CONNECTED_TOL:
        s = support(w)
        labels = topology.connected_components(s | s.T)
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
