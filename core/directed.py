r"""Directed communication graphs and their row-/column-stochastic weights, on the host.

**Edge convention.** A directed adjacency matrix is a bool matrix ``A`` of shape
``(n, n)`` with a zero diagonal (dense, or ``scipy.sparse`` by the rule of
:mod:`core.sparse`; everything here takes either and returns the format it got), and

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
of doubly stochastic but non-symmetric matrices.

This module holds the Perron vectors and the Push-Pull pair check and is the public
face of two more: :mod:`core.digraph` (checks, degrees and constructors of digraphs)
and :mod:`core.directed_weights` (the stochastic weights and their checks); every name
is importable from here. Undirected graphs and doubly
stochastic weights live in :mod:`core.topology` and :mod:`core.weights`; this module
reuses their argument checks and conventions (errors are ``ValueError`` naming the bad
value and what would be valid; random graphs take an explicit seed).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse import linalg as spla

from decentjax.core import digraph
from decentjax.core import sparse as sparse_lib
from decentjax.core.digraph import (
    check_directed_adjacency,
    check_strongly_connected,
    directed_exponential,
    directed_ring,
    from_networkx_digraph,
    geometric_directed,
    in_degrees,
    is_strongly_connected,
    out_degrees,
    random_strongly_connected,
    unbalanced_example,
)
from decentjax.core.directed_weights import (
    FloatMatrix,
    check_column_stochastic,
    check_row_stochastic,
    column_stochastic,
    one_peer_exponential,
    row_stochastic,
)
from decentjax.core.spectral import DENSE_SPECTRUM_MAX_N

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

BoolMatrix = digraph.BoolMatrix

# A Perron vector whose residual or smallest entry misses these bounds means the
# linear solve was too ill-conditioned to trust; with n <= a few hundred and a
# strongly connected support this does not happen, so it is an error, not a warning.
_PERRON_RESIDUAL_TOL = 1e-9


# --------------------------------------------------------------------------------------
# Perron vectors and the Push-Pull pair.
# --------------------------------------------------------------------------------------


def _stationary(m: FloatMatrix, name: str) -> npt.NDArray[np.float64]:
    """Solves m x = x, sum(x) = n for a validated column-stochastic, irreducible ``m``.

    Dense LU up to :data:`core.spectral.DENSE_SPECTRUM_MAX_N` agents (whatever the
    format of ``m``), sparse LU above (:func:`_stationary_sparse`).
    """
    n = m.shape[0]
    if n > DENSE_SPECTRUM_MAX_N:
        return _accept(m, _stationary_sparse(sparse_lib.as_csr(m)), name)
    m = m.toarray() if sparse_lib.issparse(m) else m
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
    return _accept(m, x, name)


_POWER_STEPS = 500
_POWER_RESIDUAL = 1e-13


def _stationary_sparse(m: sp.csr_array) -> npt.NDArray[np.float64]:
    """``m x = x`` in O(nnz) per step: power iteration, else one sparse LU.

    First up to :data:`_POWER_STEPS` steps of the lazy power iteration
    ``x <- (x + m x) / 2`` (same fixed point, aperiodic), stopped when
    ``max |m x - x| <= 1e-13`` (for ``sum(x) = n``): fast on well-mixing graphs
    (expanders, exponential graphs), whose LU fills in. Reaching that residual within
    500 steps means the second eigenvalue is below about 0.94, so the error is at most
    about 20 times the residual. Otherwise (slowly mixing, e.g. ring-like graphs, whose
    LU stays sparse): ``B = I - m`` is a singular irreducible M-matrix, so every proper
    principal submatrix, here ``B[1:, 1:]``, is nonsingular, and
    ``B[1:, 1:] x[1:] = -B[1:, 0]`` gives the null vector with ``x_0 = 1`` (one sparse
    LU, ``scipy.sparse.linalg.splu``, plus one step of iterative refinement).
    """
    n = m.shape[0]
    x = np.ones(n)
    for _ in range(_POWER_STEPS):
        step = m @ x
        if np.max(np.abs(step - x)) <= _POWER_RESIDUAL:
            return step
        x = 0.5 * (x + step)
        x *= n / x.sum()
    b = sp.csc_array(sp.eye_array(n, format="csr") - m)
    grounded, rhs = b[1:, 1:], -b[1:, [0]].toarray().ravel()
    lu = spla.splu(sp.csc_array(grounded))
    y = lu.solve(rhs)
    y += lu.solve(rhs - grounded @ y)
    return np.concatenate([[1.0], y])


def _accept(m: FloatMatrix, x: npt.NDArray[np.float64], name: str) -> npt.NDArray[np.float64]:
    """Checks the residual of a computed Perron vector, clips rounding, scales to sum n."""
    n = m.shape[0]
    x = x * (n / x.sum())
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
      ``(R, C)`` as float64 copies, each in its input's format (ndarray or csr_array).

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
