r"""Host side of the gossip operators: the tables :mod:`core.comm` builds from ``W``.

All read ``W`` (dense or ``scipy.sparse``) in COO / CSR form, so they cost O(nnz):
per-agent neighbour lists and the largest out-degree. The shift decomposition is
:func:`core.sparse.shift_decomposition`; a sparse ``W`` is validated by the checks of
:mod:`core.weights`, which take both formats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


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
