r"""Host checks that a gossip operator holds the matrix a method needs.

Every method factory states what its mixing matrix must be and calls
:func:`check_operator` before anything is traced, so that, e.g., a row-stochastic
``R`` handed to DSGD, or a ``W`` with a negative eigenvalue handed to exact
diffusion, is an error naming the method instead of a silent bias or divergence.
The requirements:

* ``"doubly_stochastic"``: nonnegative, :math:`W\mathbf 1 = \mathbf 1`,
  :math:`\mathbf 1^\top W = \mathbf 1^\top`, mixing (:func:`core.weights.check_mixing_matrix`
  with ``symmetric=False``). DSGD, gradient tracking.
* ``"symmetric"``: the same and :math:`W = W^\top`. EXTRA, NIDS, LEAD, CEDAS (which
  build :math:`(I+W)/2 \succeq 0` in).
* ``"psd"``: symmetric doubly stochastic and :math:`\lambda_{\min}(W) \ge 0`. Exact
  diffusion and ED-RR (pass :func:`core.weights.lazy` of any mixing matrix).
* ``"pull"`` / ``"push"``: row- / column-stochastic with a strongly connected,
  aperiodic support (:mod:`core.directed`). The directed methods.

Operators: a :class:`~core.comm.Gossip` is checked through its matrix; a
:class:`~core.compressed_gossip.CompressedGossip` through its base; a
:class:`~core.time_varying.TimeVaryingGossip` through what its rounds are.
Symmetric link failures move :math:`w_{ij}` to both diagonals, i.e. add the PSD
:math:`w_{ij}(e_i - e_j)(e_i - e_j)^\top`, so every round is symmetric doubly
stochastic with :math:`\lambda_{\min}(W_k) \ge \lambda_{\min}(W)` and the base
decides; pull failures keep only row sums and push failures only column sums; a
sequence's rounds are each checked for the sums and symmetry, its period average
for mixing (single rounds of the one-peer exponential graph are disconnected).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from decentjax.core import directed, weights
from decentjax.core.compressed_gossip import CompressedGossip
from decentjax.core.time_varying import TimeVaryingGossip

Need = Literal["doubly_stochastic", "symmetric", "psd", "pull", "push"]
_NEEDS = ("doubly_stochastic", "symmetric", "psd", "pull", "push")
_ATOL = 1e-10  # The entry, sum and symmetry tolerance of core.weights / core.directed.

_WHAT = {
    "doubly_stochastic": (
        "the gossip operator must hold a doubly stochastic W (nonnegative, rows and "
        "columns summing to 1, mixing), e.g. comm.gossip(weights.metropolis_hastings(A))"
    ),
    "symmetric": (
        "the gossip operator must hold a symmetric doubly stochastic W (W = W^T, "
        "nonnegative, rows summing to 1, mixing), e.g. "
        "comm.gossip(weights.metropolis_hastings(A))"
    ),
    "psd": (
        "the gossip operator must hold a symmetric doubly stochastic, positive "
        "semidefinite W, e.g. comm.gossip(weights.lazy(weights.metropolis_hastings(A)))"
    ),
    "pull": (
        "the pull operator must hold a row-stochastic R (R 1 = 1, nonnegative, strongly "
        "connected support, aperiodic), e.g. "
        "comm.gossip(directed.row_stochastic(A), doubly_stochastic=False)"
    ),
    "push": (
        "the push operator must hold a column-stochastic C (1^T C = 1^T, nonnegative, "
        "strongly connected support, aperiodic), e.g. "
        "comm.gossip(directed.column_stochastic(A), doubly_stochastic=False)"
    ),
}
# What the rounds of link failures of each kind keep of the base's stochasticity.
_FAILURES_KEEP = {"symmetric": set(_NEEDS), "pull": {"pull"}, "push": {"push"}}


def operator_rounds(op: Any) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None, str | None]:
    """``(nominal matrix, a sequence's rounds or None, link-failure kind or None)``.

    The nominal matrix bounds every round: it is the only one of a fixed operator,
    the base of link failures, the period average of a sequence.
    """
    while isinstance(op, CompressedGossip):
        op = op.base
    if isinstance(op, TimeVaryingGossip):
        if op.kind == "sequence":
            return op.matrix, op.matrices, None
        return op.matrix, None, op.kind
    matrix = getattr(op, "matrix", None)
    if matrix is None:
        raise ValueError(
            f"expected a gossip operator (core.comm.Gossip, CompressedGossip or "
            f"TimeVaryingGossip), got {type(op).__name__}."
        )
    if sp.issparse(matrix):
        return matrix, None, None
    return np.asarray(matrix, dtype=np.float64), None, None


def _check_round(m: np.ndarray, k: int, need: Need) -> None:
    """Sums, signs and symmetry of one round of a sequence (not its connectivity)."""
    where = f"matrix {k} of the sequence"
    axes = {"pull": (1,), "push": (0,)}.get(need, (1, 0))
    weights._check_entries(m, where, "stochastic matrix", _ATOL)
    for axis in axes:
        weights._check_sums(m, where, "stochastic matrix", axis, _ATOL)
    asym = float(np.max(np.abs(m - m.T)))
    if need in ("symmetric", "psd") and asym > _ATOL:
        raise ValueError(f"{where} is not symmetric: max |W - W^T| = {asym:.6g}.")


def _check_sparse_stochastic(m: Any, axis: int) -> None:
    """Nonnegative entries and unit row (``axis=1``) or column (``axis=0``) sums, O(nnz)."""
    m = sp.csr_array(m)
    if m.data.size and m.data.min() < -_ATOL:
        raise ValueError(f"a stochastic matrix needs nonnegative entries, got {m.data.min():.6g}.")
    sums = np.asarray(m.sum(axis=axis)).ravel()
    k = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[k] - 1.0) > _ATOL:
        what = "row" if axis == 1 else "column"
        raise ValueError(f"{what} {k} sums to {sums[k]:.12g}; every {what} must sum to 1.")


def _check_matrices(nominal: np.ndarray, rounds: tuple[np.ndarray, ...] | None, need: Need) -> None:
    for k, m in enumerate(rounds or ()):
        _check_round(m, k, need)
    if sp.issparse(nominal):
        # A sparse W (large n) is checked in O(nnz); directed needs: sums and signs.
        symmetric = need in ("symmetric", "psd")
        if need in ("pull", "push"):
            _check_sparse_stochastic(nominal, 1 if need == "pull" else 0)
        else:
            weights.check_mixing_matrix(nominal, symmetric=symmetric)
        return
    if need == "pull":
        directed.check_row_stochastic(nominal)
    elif need == "push":
        directed.check_column_stochastic(nominal)
    else:
        weights.check_mixing_matrix(nominal, symmetric=need != "doubly_stochastic")


def smallest_eigenvalue(w: np.ndarray, *, enough: float = -np.inf) -> float:
    r""":math:`\lambda_{\min}(W)` of a symmetric stochastic ``W``, or a lower bound ``>= enough``.

    Writing :math:`W = I - L` with :math:`L` the weighted Laplacian (weights
    :math:`w_{ij}`, degrees :math:`d_i = 1 - w_{ii}`), :math:`\lambda_{\max}(L) \le
    \max_{i \sim j} (d_i + d_j)` (Anderson–Morley, weighted: Collatz–Wielandt on
    :math:`L = B\,\mathrm{diag}(w)B^\top` with the test vector :math:`\sqrt{w_e}`), so

    .. math::

      \lambda_{\min}(W) \ge \min_{i \sim j} (w_{ii} + w_{jj} - 1),

    an O(nnz) bound, exact for regular uniform weights (ring with 1/3: -1/3) and
    :math:`\ge 0` for every lazy matrix. When it already reaches ``enough`` it is
    returned; otherwise :math:`\lambda_{\min}` is computed: dense ``eigvalsh`` up to
    :data:`core.weights.DENSE_SPECTRUM_MAX_N` agents, sparse above, so nothing is
    O(n^3) at scale. Sparse: Lanczos (``scipy.sparse.linalg.eigsh``, ``"SA"``) first.
    Its Ritz value is an upper bound of :math:`\lambda_{\min}`, so when it falls below
    ``enough`` (by more than :func:`eigenvalue_tolerance`) it is returned: the answer
    "no" is certain. A Ritz value at or above ``enough`` is not a certificate: in
    clustered spectra Lanczos can stop at a larger eigenvalue (measured: an even ring of
    1100 agents with random weights scaled to :math:`\lambda_{\min} = 0` gave 3.4e-3, and
    an exponential graph of 2048 agents with :math:`\lambda_{\min} = -10^{-8}` gave
    9.9e-4). So a "yes" is computed by shift-invert about :math:`\sigma` = the O(nnz)
    bound minus 0.01, below every eigenvalue, whose nearest eigenvalue is
    :math:`\lambda_{\min}` (to rounding; one sparse LU of :math:`W - \sigma I`: 0.03 s
    on that ring, 3.5 s on that exponential graph, whose LU fills in).

    Args:
      w: symmetric ``(n, n)`` matrix (dense or ``scipy.sparse``) with rows summing
        to 1 and nonnegative off-diagonal entries (validated by the caller).
      enough: the value the caller needs :math:`\lambda_{\min}` to reach.

    Returns:
      :math:`\lambda_{\min}(W)`, or a certified lower bound of it that is
      ``>= enough``, or (above the dense limit, when :math:`\lambda_{\min}` is certainly
      below ``enough``) the Lanczos Ritz value that showed it: an upper bound of
      :math:`\lambda_{\min}` below ``enough``, an eigenvalue to the solver's tolerance but
      in a clustered spectrum possibly a neighbour of :math:`\lambda_{\min}` (the even
      uniform ring of 1026 agents: -0.3333208, its second eigenvalue, for -1/3).
    """
    n = w.shape[0]
    coo = sp.coo_array(w)  # Dense or sparse W: the bound reads the nonzeros, O(nnz).
    off = (coo.data != 0.0) & (coo.row != coo.col)
    rows, cols = coo.row[off], coo.col[off]
    diag = w.diagonal()
    bound = float(np.min(diag[rows] + diag[cols] - 1.0)) if rows.size else float(diag.min())
    if bound >= enough:
        return bound
    if n <= weights.DENSE_SPECTRUM_MAX_N:
        return float(np.linalg.eigvalsh(w.toarray() if sp.issparse(w) else w)[0])
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    matrix = sp.csc_matrix(w)
    try:
        ritz = float(eigsh(matrix, k=1, which="SA", tol=1e-6, return_eigenvectors=False)[0])
        if ritz < enough - eigenvalue_tolerance(n):  # Ritz >= lambda_min: a certain "no".
            return ritz
    except ArpackNoConvergence:
        pass
    sigma = bound - 0.01  # Strictly below lambda_min >= bound: lambda_min is the nearest.
    vals = eigsh(matrix, k=1, sigma=sigma, which="LM", return_eigenvectors=False)
    return float(vals[0])


def min_eigenvalue(op: Any, *, enough: float = -np.inf) -> float:
    """The smallest eigenvalue over every round of a symmetric operator (``smallest_eigenvalue``).

    Symmetric link failures only raise eigenvalues, so the base decides; a sequence
    takes the minimum over its rounds. Call after :func:`check_operator` with
    ``"symmetric"`` or ``"psd"``.
    """
    nominal, rounds, _ = operator_rounds(op)
    return min(smallest_eigenvalue(m, enough=enough) for m in (rounds or (nominal,)))


def eigenvalue_tolerance(n: int) -> float:
    """How far below a bound a computed :math:`\\lambda_{\\min}` may fall and still pass.

    The matrix checks accept entries and sums within ``1e-10``, and a symmetric
    eigensolver's backward error is O(n eps ||W||_2) with ``||W||_2 = 1``.
    """
    return _ATOL + 8 * n * float(np.finfo(np.float64).eps)


def check_operator(op: Any, method: str, need: Need) -> np.ndarray:
    """Raises unless ``op`` holds the matrix ``method`` needs; on the host, before tracing.

    Args:
      op: a :class:`~core.comm.Gossip`, :class:`~core.compressed_gossip.CompressedGossip`
        or :class:`~core.time_varying.TimeVaryingGossip`.
      method: the method's name, put first in every message.
      need: ``"doubly_stochastic"``, ``"symmetric"``, ``"psd"``, ``"pull"`` or
        ``"push"`` (see the module docstring).

    Returns:
      The nominal matrix (the base's for link failures, the period average for a
      sequence), float64.

    Raises:
      ValueError: naming ``method``, what it needs and the failed check (the entry,
        row or column, or the eigenvalue).
    """
    if need not in _NEEDS:
        raise ValueError(f"need must be one of {_NEEDS}, got {need!r}.")
    nominal, rounds, failures = operator_rounds(op)
    if failures is not None and need not in _FAILURES_KEEP[failures]:
        raise ValueError(
            f"{method}: {_WHAT[need]}; link failures of kind={failures!r} keep only the "
            f"{'row' if failures == 'pull' else 'column'} sums of their base, so the rounds "
            "are not what it needs (kind='symmetric' keeps a symmetric doubly stochastic W)."
        )
    try:
        _check_matrices(nominal, rounds, need)
    except ValueError as err:
        raise ValueError(f"{method}: {_WHAT[need]}; {err}") from None
    if need == "psd":
        lam = min_eigenvalue(op, enough=0.0)
        if lam < -eigenvalue_tolerance(nominal.shape[0]):
            raise ValueError(
                f"{method}: {_WHAT[need]}; lambda_min(W) = {lam:.6g} < 0. Pass "
                "weights.lazy(W) = (I + W) / 2, whose eigenvalues (1 + lambda) / 2 are >= 0."
            )
    return nominal
