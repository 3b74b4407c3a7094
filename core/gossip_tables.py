r"""Host side of the gossip operators: the tables :mod:`core.comm` builds from ``W``.

All read ``W`` (dense or ``scipy.sparse``) in COO / CSR form, so they cost O(nnz):
per-agent neighbour lists, the largest out-degree, and the validation of a sparse
``W`` with the messages of the dense checks of :mod:`core.weights`. The shift
decomposition is :func:`core.sparse.shift_decomposition`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from decentjax.core import weights as weights_lib


def max_out_degree(w: Any) -> int:
    """Largest number of other agents one agent sends to, in O(nnz).

    Counts the nonzero off-diagonal entries of each column of ``w`` (dense or
    ``scipy.sparse``): column ``j`` holds what agent ``j`` sends.
    """
    coo = sp.coo_array(w)
    off = (coo.data != 0.0) & (coo.row != coo.col)
    return int(np.bincount(coo.col[off], minlength=coo.shape[1]).max(initial=0))


def neighbour_lists(coo: sp.coo_array) -> tuple[np.ndarray, np.ndarray]:
    """``(cols, vals)``, each ``(n, K)``: row ``i``'s nonzeros padded to the largest row.

    Padding points at ``i`` itself with weight 0 (an index every kernel can read).
    """
    n = coo.shape[0]
    csr = sp.csr_array(coo)
    csr.sum_duplicates()
    counts = np.diff(csr.indptr)
    width = max(int(counts.max(initial=0)), 1)
    slot = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], counts)
    row = np.repeat(np.arange(n), counts)
    cols = np.repeat(np.arange(n, dtype=np.int32)[:, None], width, axis=1)
    vals = np.zeros((n, width))
    cols[row, slot] = csr.indices
    vals[row, slot] = csr.data
    return cols, vals


def check_sparse(w: Any, symmetric: bool, doubly_stochastic: bool) -> sp.csr_array:
    """Validates a ``scipy.sparse`` ``W`` in O(nnz), with the messages of the dense checks."""
    w = sp.csr_array(w, dtype=np.float64)
    w.sum_duplicates()
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
        raise ValueError("W must be a 2-D square array of shape (n, n), got shape {w.shape}.")
    if not np.all(np.isfinite(w.data)):
        raise ValueError("W must be a finite square (n, n) matrix; it holds non-finite entries.")
    if not doubly_stochastic:
        return w
    if w.data.size and w.data.min() < -1e-10:
        k = int(np.argmin(w.data))
        i = int(np.searchsorted(w.indptr, k, side="right") - 1)
        raise ValueError(
            f"W[{i}, {w.indices[k]}] = {w.data[k]:.6g} is negative; a mixing matrix needs "
            "nonnegative entries (atol=1e-10)."
        )
    for axis, what in ((1, "row"), (0, "column")):
        sums = np.asarray(w.sum(axis=axis)).ravel()
        k = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[k] - 1.0) > 1e-10:
            raise ValueError(
                f"{what} {k} of W sums to {sums[k]:.12g}; a mixing matrix needs every {what} "
                "to sum to 1 (atol=1e-10)."
            )
    if symmetric:
        asym = abs(w - w.T)
        if asym.nnz and asym.max() > 1e-10:
            raise ValueError(
                f"W is not symmetric: the largest asymmetry |W - W^T| is {asym.max():.6g}; "
                "symmetrise W, or pass symmetric=False for a non-symmetric doubly stochastic "
                "matrix (atol=1e-10)."
            )
    weights_lib._check_mixes_by_graph(w, symmetric)
    return w
