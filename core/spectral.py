r"""Mixing rate and spectral gap of a mixing matrix: dense when small, sparse at scale.

.. math::

   \lambda = \|W - J\|_2, \qquad J = \tfrac{1}{n} \mathbf{1}\mathbf{1}^\top,
   \qquad \text{gap} = 1 - \lambda.

Up to :data:`DENSE_SPECTRUM_MAX_N` agents (or with ``method="dense"``) this is the
dense spectral norm, exact to rounding. Above (or with ``method="iterative"``), for a
doubly stochastic ``W`` given densely or as ``scipy.sparse``, in O(nnz + fill-in):

* ``(W - J)^T (W - J) = W^T W - J`` (``W 1 = 1``, ``1^T W = 1^T``), so
  :math:`\lambda^2` is the largest eigenvalue of :math:`W^\top W` on
  :math:`\mathbf 1^\perp`; for a symmetric ``W`` the largest eigenvalue modulus of
  ``W`` itself on :math:`\mathbf 1^\perp`.
* The small end of a Laplacian :math:`L` (``L = I - W`` or ``I - W^T W``, symmetric
  with zero row sums) is found by ARPACK (``scipy.sparse.linalg.eigsh``) in
  shift-invert form with the shift at 0 and the consensus direction deflated:
  :math:`L^+ b` is a sparse LU solve of ``L`` with node 0 grounded (row and column 0
  removed; nonsingular exactly when the graph is connected), projected onto
  :math:`\mathbf 1^\perp`. Its largest eigenvalue is :math:`1/\mu_2`, well separated
  even when the gap is 1e-9 (ring of 100,000: the next one is :math:`1/(4\mu_2)`), so
  ARPACK converges in a few dozen solves where plain Lanczos on ``W`` would need
  ``O(n)``. The gap comes out as :math:`\mu_2` itself, without the cancellation of
  :math:`1 - \lambda`.
* For a symmetric ``W``, :math:`\lambda = \max(1 - \mu_2(I - W), -\lambda_{\min}(W))`;
  Gershgorin gives :math:`\lambda_{\min}(W) \ge \min_i (2 w_{ii} - 1)` in O(n), which
  settles the maximum whenever the self-weights are not small (every lazy or
  Metropolis matrix of a graph that is not tiny); otherwise the :math:`W^\top W` route
  is taken.

ARPACK runs to a relative tolerance of :data:`ARPACK_TOL` on :math:`1/\mu_2`; the
computed gap then matches the dense one to about ``ARPACK_TOL * gap`` plus the dense
norm's own rounding, ``n eps``. Non-convergence is a ``ValueError``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse import linalg as spla

from decentjax.core import sparse as sparse_lib

DENSE_SPECTRUM_MAX_N = 1024
"""Above this many agents spectra are computed sparsely, and
:func:`core.weights.check_mixing_matrix` decides "W mixes" from graphs.

The dense SVD of :func:`mixing_rate` is O(n^3): 76 s at n = 4096 on a 2-core CPU,
hours at 16384."""

ARPACK_TOL = 1e-10
"""Relative tolerance of ARPACK on :math:`1/\\mu_2` (see the module docstring)."""

# mixing_rate(W) must be below 1 - _CONNECTED_TOL for W to count as mixing: a rate of
# 1 up to rounding means an eigenvalue of modulus 1 besides the consensus direction.
_CONNECTED_TOL = 1e-12
_SUM_TOL = 1e-10  # Row / column sums the iterative method needs, as the host checks.

Method = Literal["auto", "dense", "iterative"]


def mixing_rate(W: Any, *, method: Method = "auto") -> float:
    r"""Mixing rate :math:`\lambda = \|W - J\|_2` (spectral norm).

    For symmetric doubly stochastic :math:`W` this is the second largest eigenvalue
    modulus; one gossip step contracts the consensus error
    :math:`\|X - \mathbf{1}\bar x^\top\|` by at least this factor.

    Args:
      W: square mixing matrix, dense or ``scipy.sparse``.
      method: ``"dense"`` (SVD, any square matrix), ``"iterative"`` (sparse LU +
        ARPACK, doubly stochastic matrices; module docstring) or ``"auto"``: dense up
        to :data:`DENSE_SPECTRUM_MAX_N` agents, iterative above.

    Returns:
      :math:`\lambda` as a Python float; below 1 for a connected doubly stochastic
      matrix without eigenvalue -1.

    Raises:
      ValueError: if ``W`` is not a 2-D square real array, ``method`` is unknown, the
        iterative method gets a matrix that is not doubly stochastic, or ARPACK does
        not converge.
    """
    return _rate_and_gap(W, method)[0]


def spectral_gap(W: Any, *, method: Method = "auto") -> float:
    r"""Spectral gap :math:`1 - \|W - J\|_2` (see :func:`mixing_rate`).

    Args:
      W: square mixing matrix, dense or ``scipy.sparse``.
      method: as for :func:`mixing_rate`.

    Returns:
      The gap as a Python float: 1 for :func:`core.weights.averaging`, close to 0 for
      sparse large graphs (about :math:`2\pi^2/(3n^2)` for a uniform ring). The
      iterative method returns it without cancellation, so it keeps its relative
      accuracy when it is far below rounding of 1.

    Raises:
      ValueError: as for :func:`mixing_rate`.
    """
    return _rate_and_gap(W, method)[1]


def _rate_and_gap(W: Any, method: Method) -> tuple[float, float]:
    from decentjax.core.weights import _as_square_float, largest_asymmetry

    if method not in ("auto", "dense", "iterative"):
        raise ValueError(f"method must be 'auto', 'dense' or 'iterative', got {method!r}.")
    w = _as_square_float(W)
    n = w.shape[0]
    if method == "dense" or (method == "auto" and n <= DENSE_SPECTRUM_MAX_N) or n < 4:
        dense = w.toarray() if sparse_lib.issparse(w) else w
        rate = float(np.linalg.norm(dense - 1.0 / n, ord=2))
        return rate, 1.0 - rate
    w = sparse_lib.as_csr(w)
    for axis in (1, 0):
        sums = np.asarray(w.sum(axis=axis)).ravel()
        k = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[k] - 1.0) > _SUM_TOL:
            what = "row" if axis == 1 else "column"
            raise ValueError(
                f"the iterative mixing rate needs a doubly stochastic W, but {what} {k} sums "
                f"to {sums[k]:.12g}; use method='dense' (n={n}) for other matrices."
            )
    eye = sp.eye_array(n, format="csr")
    if largest_asymmetry(w)[0] <= _CONNECTED_TOL:
        mu = _smallest_nontrivial(eye - w)
        lower = 2.0 * float(w.diagonal().min()) - 1.0  # Gershgorin: lambda_min(W) >= lower.
        if -lower <= 1.0 - mu:
            return 1.0 - mu, mu
    mu = _smallest_nontrivial(eye - w.T @ w)
    rate = float(np.sqrt(max(1.0 - mu, 0.0)))
    return rate, mu / (1.0 + rate)


def _smallest_nontrivial(lap: sp.csr_array) -> float:
    """Smallest eigenvalue of a symmetric Laplacian on the complement of ``1`` (0 if none).

    Shift-invert at 0 with node 0 grounded (see the module docstring); 0 when the
    grounded matrix is singular, i.e. the graph of ``lap`` is disconnected.
    """
    n = lap.shape[0]
    grounded = sp.csc_array(lap[1:, 1:])
    try:
        lu = spla.splu(grounded, permc_spec="COLAMD")
    except RuntimeError:  # "Factor is exactly singular": disconnected.
        return 0.0

    def solve(b: np.ndarray) -> np.ndarray:
        b = np.ravel(b)
        x = np.zeros(n)
        x[1:] = lu.solve(b[1:] - b.mean())
        return x - x.mean()

    op = spla.LinearOperator((n, n), matvec=solve, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    try:
        theta = spla.eigsh(
            op, k=1, which="LA", tol=ARPACK_TOL, v0=v0 - v0.mean(), return_eigenvectors=False
        )[0]
    except spla.ArpackNoConvergence as err:
        raise ValueError(
            f"ARPACK did not converge to the spectral gap (n={n}, tol={ARPACK_TOL}): {err}; "
            "use method='dense' if n allows."
        ) from None
    if not np.isfinite(theta) or theta <= 0:
        return 0.0
    return float(1.0 / theta)
