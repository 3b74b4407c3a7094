r"""Row-/column-stochastic weights on directed graphs and their checks.

On a digraph ``A`` (``A[i, j]`` means ``j -> i``, see :mod:`core.digraph`):

* row-stochastic :math:`R`, :math:`R\mathbf 1 = \mathbf 1`, with
  :math:`R_{ij} = a_{ij} / \sum_{j'} a_{ij'}` after adding self-loops: each agent
  averages what it pulls, :math:`r_{ij} = 1/(|\mathcal N^{in}_i| + 1)`;
* column-stochastic :math:`C`, :math:`\mathbf 1^\top C = \mathbf 1^\top`, with
  :math:`C_{ij} = a_{ij} / \sum_{i'} a_{i'j}` after adding self-loops: each sender
  splits its mass equally among itself and its out-neighbours,
  :math:`c_{ij} = 1/(|\mathcal N^{out}_j| + 1)`.

Both have their off-diagonal support exactly on ``A``, and both come back in the
format of ``A`` (:mod:`core.sparse`: dense in, dense out; sparse in, ``csr_array``
out, in O(nnz)); the checks take either format. The one-peer exponential
sequence (Ying et al. 2021) is here too. Everything is re-exported by
:mod:`core.directed`, the public face, which also holds the Perron vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse import csgraph

from decentjax.core import sparse as sparse_lib
from decentjax.core import weights
from decentjax.core.digraph import (
    _check_int,
    check_directed_adjacency,
    check_strongly_connected,
)

FloatMatrix = weights.FloatMatrix


# --------------------------------------------------------------------------------------
# Row- and column-stochastic weights.
# --------------------------------------------------------------------------------------


def _normalised(A: Any, axis: int) -> Any:
    """``A + I`` scaled so every row (``axis=1``) or column (``axis=0``) sums to 1."""
    a = check_directed_adjacency(A)
    n = a.shape[0]
    rows, cols = sparse_lib.coo_indices(sparse_lib.as_csr(a))
    nodes = np.arange(n)
    rows, cols = np.concatenate([rows, nodes]), np.concatenate([cols, nodes])  # a_ii = 1
    along = rows if axis == 1 else cols
    counts = np.bincount(along, minlength=n).astype(np.float64)
    m = sparse_lib.from_coo(n, rows, cols, 1.0 / counts[along], np.float64)
    return sparse_lib.like(m, sparse_lib.issparse(a))


def row_stochastic(A: Any) -> Any:
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
    return _normalised(A, axis=1)


def column_stochastic(A: Any) -> Any:
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
    return _normalised(A, axis=0)


def _period(a: Any) -> int:
    """Period (gcd of cycle lengths) of a strongly connected digraph without self-loops."""
    # BFS depths from node 0; for a strongly connected graph the period is the gcd of
    # depth[src] + 1 - depth[dst] over all edges src -> dst (a standard result).
    # csgraph follows row -> column, so the edges src -> dst are A^T.
    forward = sp.csr_array(a.T, dtype=np.int8)
    depth = csgraph.dijkstra(forward, indices=0, unweighted=True).astype(np.int64)
    dst, src = sparse_lib.coo_indices(sparse_lib.as_csr(a))  # A[dst, src]: src -> dst
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
    if sparse_lib.issparse(m):
        positive = sparse_lib.as_csr(m)
        positive.data = positive.data > 0
        a = sparse_lib.without_diagonal(sparse_lib.as_csr(positive, dtype=np.bool_))
        a.eliminate_zeros()
    else:
        a = m > 0
        np.fill_diagonal(a, False)
    try:
        check_strongly_connected(a)
    except ValueError as err:
        raise ValueError(f"the support graph of {name} is not valid: {err}") from None
    # Strongly connected with a positive diagonal entry is primitive; without one, the
    # matrix can be periodic (e.g. a permutation), and then M^k never converges.
    if not (m.diagonal() > 0).any():
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
      ``R`` as a float64 copy in its format (dense ndarray or ``csr_array``).

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
      ``C`` as a float64 copy in its format (dense ndarray or ``csr_array``).

    Raises:
      ValueError: on the first failed check; the message names the offending entry,
        column and its sum, or the strongly connected components / period of the
        support.
    """
    return _check_stochastic(C, "C", axis=0, atol=atol)


# --------------------------------------------------------------------------------------
# Time-varying graphs.
# --------------------------------------------------------------------------------------


def one_peer_exponential(n: int, *, sparse: bool | None = None) -> list[Any]:
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
      sparse: format of the matrices, as for the graph builders (:mod:`core.sparse`):
        ``None`` gives ``csr_array`` above 4096 nodes, dense below.

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
    as_sparse = sparse_lib.use_sparse(n, sparse)
    mats = []
    for h in range(tau):
        # 2**h <= 2**(tau - 1) < n, so the peer is never the node itself.
        rows, cols = np.tile(nodes, 2), np.concatenate([nodes, (nodes + 2**h) % n])
        mats.append(sparse_lib.like(sparse_lib.from_coo(n, rows, cols, 0.5, np.float64), as_sparse))
    return mats
