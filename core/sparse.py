r"""Dense or sparse graph matrices on the host: the format rule and O(nnz) helpers.

**The format rule.** Every graph builder (:mod:`core.topology`, :mod:`core.digraph`)
takes ``sparse: bool | None = None`` and returns

* a ``scipy.sparse.csr_array`` when ``sparse=True``, or when ``sparse=None`` and
  ``n > SPARSE_MIN_N`` (4096);
* a dense NumPy array otherwise, as before, so small experiments, tests and notebooks
  keep indexing, ``@`` and ``np.linalg`` on plain arrays.

Every consumer (the weight rules of :mod:`core.weights` and
:mod:`core.directed_weights`, the checks, connectivity, the spectral quantities of
:mod:`core.spectral`, the Perron vectors) accepts a dense array or any
``scipy.sparse`` matrix/array (and the adjacency checks a networkx graph), and
**returns the format it was given**: dense in, dense out; sparse in, ``csr_array``
out. So ``weights.metropolis_hastings(topology.ring(100_000))`` never builds an
``n x n`` array: it costs O(nnz) time and memory. Which numerical method runs
(dense ``eigvalsh`` / LU or an iterative or sparse one) depends on ``n`` only, never
on the format, so a sparse and a dense input give the same numbers.

:func:`shift_decomposition` reads :math:`W = \sum_s \operatorname{diag}(c_s) P_s` off
the nonzeros (COO), in O(nnz + |S| n).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

SPARSE_MIN_N = 4096
"""Builders given ``sparse=None`` return a ``csr_array`` above this many nodes."""

Matrix = Any  # A dense ndarray or a scipy.sparse csr_array.


def issparse(m: object) -> bool:
    """Whether ``m`` is a ``scipy.sparse`` matrix or array."""
    return sp.issparse(m)


def use_sparse(n: int, sparse: bool | None) -> bool:
    """The format rule: ``sparse`` if given, else whether ``n > SPARSE_MIN_N``.

    Raises:
      ValueError: if ``sparse`` is not ``None``, ``True`` or ``False``.
    """
    if sparse is None:
        return n > SPARSE_MIN_N
    if not isinstance(sparse, (bool, np.bool_)):
        raise ValueError(f"sparse must be None, True or False, got sparse={sparse!r}.")
    return bool(sparse)


def as_csr(m: Any, dtype: Any = None) -> sp.csr_array:
    """``m`` as a canonical ``csr_array`` (a copy: summed duplicates, sorted indices)."""
    out = sp.csr_array(m, dtype=dtype, copy=True)
    out.sum_duplicates()
    return out


def like(m: sp.csr_array, sparse: bool) -> Matrix:
    """``m`` in the requested format: itself when ``sparse``, else ``m.toarray()``."""
    return m if sparse else m.toarray()


def from_coo(
    n: int, rows: npt.ArrayLike, cols: npt.ArrayLike, data: npt.ArrayLike, dtype: Any
) -> sp.csr_array:
    """Canonical ``(n, n)`` csr_array from COO triplets (duplicates summed)."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    data = np.broadcast_to(np.asarray(data, dtype), rows.shape)
    return as_csr(sp.coo_array((data, (rows, cols)), shape=(n, n)))


def from_edges(
    n: int, rows: npt.ArrayLike, cols: npt.ArrayLike, *, symmetric: bool, sparse: bool
) -> Matrix:
    """Bool adjacency with ``A[rows, cols] = True``, self-loops dropped, duplicates merged.

    With ``symmetric`` every edge is also stored transposed. Returns a ``csr_array``
    when ``sparse``, else a dense bool array; both from the same edge list.
    """
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    if symmetric:
        rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    keep = rows != cols
    a = from_coo(n, rows[keep], cols[keep], True, np.bool_)
    return like(a, sparse)


def without_diagonal(a: sp.csr_array) -> sp.csr_array:
    """``a`` with its diagonal entries removed (O(nnz), no efficiency warning)."""
    coo = a.tocoo()
    keep = coo.row != coo.col
    return from_coo(a.shape[0], coo.row[keep], coo.col[keep], coo.data[keep], a.dtype)


def first_true(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` of the first True of ``mask`` (canonical CSR order = row-major)."""
    k = int(np.argmax(mask))
    return int(rows[k]), int(cols[k])


def coo_indices(a: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every stored entry of a canonical csr_array, in order."""
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    return rows, a.indices.astype(np.int64)


def shift_decomposition(w: Matrix) -> tuple[tuple[int, ...], np.ndarray]:
    r"""Offsets ``s`` and coefficient rows ``c_s`` with ``W = sum_s diag(c_s) P_s``.

    :math:`(P_s X)_i = X_{(i + s) \bmod n}`, so entry ``(i, j)`` contributes
    ``c_s[i] = w_ij`` at offset ``s = (j - i) mod n``. Read off the stored nonzeros
    (COO for sparse input), in O(nnz + |S| n) time and memory.

    Args:
      w: ``(n, n)`` matrix, dense or sparse.

    Returns:
      ``(offsets, coeffs)``: sorted offsets and a float64 ``(len(offsets), n)`` table.
    """
    n = w.shape[0]
    if issparse(w):
        coo = sp.coo_array(w)
        coo.sum_duplicates()
        nonzero = coo.data != 0
        rows, cols, vals = coo.row[nonzero], coo.col[nonzero], coo.data[nonzero]
    else:
        rows, cols = np.nonzero(w)
        vals = w[rows, cols]
    shifts = (cols.astype(np.int64) - rows) % n
    offsets = np.unique(shifts)
    coeffs = np.zeros((len(offsets), n))
    coeffs[np.searchsorted(offsets, shifts), rows] = vals
    return tuple(int(s) for s in offsets), coeffs
