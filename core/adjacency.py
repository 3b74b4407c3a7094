"""Undirected adjacency matrices: the validation and the connectivity and degree queries.

An adjacency matrix ``A`` of shape ``(n, n)`` is symmetric with a zero diagonal
(``A[i, j]``: agents ``i`` and ``j`` exchange messages). It is a NumPy ``bool`` array,
or a ``scipy.sparse`` matrix/array (:mod:`core.sparse` states which format the
builders return); a networkx graph is accepted too and converted with
:func:`core.topology.from_networkx`. :func:`check_adjacency` validates one and
returns it in its own format (dense in, dense out; sparse in, ``csr_array`` out),
:func:`check_connected` also requires it to be connected, and
:func:`connected_components`, :func:`is_connected` and :func:`degrees` query it in
O(nnz) (``scipy.sparse.csgraph``). :func:`as_bool_adjacency` is the entry check shared
with :mod:`core.digraph`. The constructors are in :mod:`core.topology`, the public
face, which re-exports everything here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csgraph

from decentjax.core import sparse as sparse_lib

BoolMatrix = npt.NDArray[np.bool_]
"""A dense bool adjacency; sparse adjacencies are ``scipy.sparse.csr_array`` of bool."""


# --------------------------------------------------------------------------------------
# Validation and graph queries.
# --------------------------------------------------------------------------------------


def _check_square(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise ValueError(
            f"{what} must be a 2-D square array of shape (n, n) with n >= 1, got shape {shape}."
        )


def _bad_entry(what: str, i: int, j: int, value: Any) -> ValueError:
    return ValueError(f"{what} entries must be 0 or 1 (or bool), got A[{i}, {j}] = {value}.")


def _as_bool_sparse(A: Any, what: str) -> Any:
    """Sparse branch of :func:`as_bool_adjacency`: a canonical bool csr_array."""
    _check_square(A.shape, what)
    if A.dtype.kind not in "biuf":
        raise ValueError(f"{what} must have bool or 0/1 numeric entries, got dtype {A.dtype}.")
    a = sparse_lib.as_csr(A)
    if a.dtype != np.bool_:
        bad = ~((a.data == 0) | (a.data == 1))  # NaN fails both comparisons.
        if bad.any():
            i, j = sparse_lib.first_true(bad, *sparse_lib.coo_indices(a))
            raise _bad_entry(what, i, j, a[i, j].item())
        a = sparse_lib.as_csr(a, dtype=np.bool_)
    a.eliminate_zeros()
    return a


def as_bool_adjacency(A: Any, what: str) -> Any:
    """``A`` as a bool ``(n, n)`` array, checking shape and 0/1 entries (no symmetry).

    Shared by :func:`check_adjacency` and :func:`core.directed.check_directed_adjacency`; ``what``
    names the matrix in the messages. Sparse input comes back as a canonical bool
    ``csr_array`` (no stored zeros), dense input as a bool ndarray.

    Raises:
      ValueError: if ``A`` is not 2-D and square with ``n >= 1``, has a non-numeric
        dtype, or an entry other than 0/1/True/False.
    """
    if sparse_lib.issparse(A):
        return _as_bool_sparse(A, what)
    a = np.asarray(A)
    _check_square(a.shape, what)
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{what} must have bool or 0/1 numeric entries, got dtype {a.dtype}.")
    bad = ~((a == 0) | (a == 1))  # NaN fails both comparisons, so it is caught here.
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise _bad_entry(what, i, j, a[i, j].item())
    return a == 1


def _is_networkx(A: object) -> bool:
    return hasattr(A, "is_directed") and hasattr(A, "nodes")


def check_adjacency(A: Any) -> Any:
    """Validates an undirected adjacency matrix and returns it as a clean bool matrix.

    A nonzero diagonal is accepted and dropped: some reference code (e.g. Kun Huang's
    D-RR ``graph.py``) stores self-loops in the adjacency, and the self-weight is
    always set by the weight constructor anyway. O(nnz) for sparse input.

    Args:
      A: array-like or ``scipy.sparse`` matrix of shape ``(n, n)``, ``n >= 1``, with
        bool entries or numeric entries that are exactly 0 or 1; must be symmetric.
        An undirected networkx graph is converted by :func:`core.topology.from_networkx`.

    Returns:
      A new bool matrix of shape ``(n, n)``, symmetric, with a zero diagonal: a dense
      ndarray for dense input, a ``csr_array`` for sparse input.

    Raises:
      ValueError: if ``A`` is not 2-D and square with ``n >= 1``, has an entry other than
        0/1/True/False (or a non-numeric dtype), or is not symmetric. The message names
        the offending shape, value or position.
    """
    if _is_networkx(A):
        from decentjax.core.topology import from_networkx

        return from_networkx(A)
    a = as_bool_adjacency(A, "adjacency matrix")
    if sparse_lib.issparse(a):
        asym = sparse_lib.as_csr(a != a.T)
        asym.eliminate_zeros()
        if asym.nnz:
            i, j = sparse_lib.first_true(np.ones(1, bool), *sparse_lib.coo_indices(asym))
            raise _asymmetry(i, j, bool(a[i, j]), bool(a[j, i]))
        return sparse_lib.without_diagonal(a)
    asym = a != a.T
    if asym.any():
        i, j = np.argwhere(asym)[0]
        raise _asymmetry(i, j, bool(a[i, j]), bool(a[j, i]))
    a = a.copy()
    np.fill_diagonal(a, False)
    return a


def _asymmetry(i: int, j: int, aij: bool, aji: bool) -> ValueError:
    return ValueError(
        f"adjacency matrix must be symmetric (an undirected graph), but "
        f"A[{i}, {j}] = {aij} while A[{j}, {i}] = {aji}."
    )


def connected_components(A: Any) -> npt.NDArray[np.int64]:
    """Labels the connected components of an undirected graph (O(nnz), ``csgraph``).

    Args:
      A: adjacency matrix, validated by :func:`check_adjacency`.

    Returns:
      An ``int64`` array of length ``n``: the component index of each node.
      Components are numbered ``0, 1, ...`` in order of their smallest node, so node 0
      is always in component 0 and the graph is connected iff the maximum label is 0.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix.
    """
    return _ordered_labels(check_adjacency(A), directed=False)


def _ordered_labels(a: Any, *, directed: bool, connection: str = "weak") -> np.ndarray:
    """csgraph component labels renumbered in order of each component's smallest node."""
    _, labels = csgraph.connected_components(
        sparse_lib.as_csr(a, dtype=np.int8), directed=directed, connection=connection
    )
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[labels]


def is_connected(A: Any) -> bool:
    """Returns whether an undirected graph is connected.

    Args:
      A: adjacency matrix, validated by :func:`check_adjacency`. A single node is
        connected.

    Returns:
      True when every node can reach every other node.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix.
    """
    return bool(connected_components(A).max() == 0)


def check_connected(A: Any) -> Any:
    """Validates an adjacency matrix and checks that its graph is connected.

    Decentralized methods reach consensus only on connected graphs; on a disconnected
    graph each component converges to its own minimiser, so this is an error, not a
    warning.

    Args:
      A: adjacency matrix, validated by :func:`check_adjacency`.

    Returns:
      The cleaned bool adjacency matrix (as from :func:`check_adjacency`).

    Raises:
      ValueError: if ``A`` is invalid, or the graph is disconnected; the message gives
        the number of components, their sizes and a pair of nodes that cannot reach
        each other.
    """
    a = check_adjacency(A)
    labels = _ordered_labels(a, directed=False)
    k = int(labels.max()) + 1
    if k > 1:
        sizes = np.bincount(labels)
        other = int(np.argmax(labels == 1))
        shown = ", ".join(str(s) for s in sizes[:10]) + (", ..." if k > 10 else "")
        raise ValueError(
            f"graph is disconnected: {k} components (sizes {shown}); e.g. node {other} "
            f"cannot reach node 0. Decentralized optimization needs a connected graph: "
            f"add edges, or use a denser random graph or another seed."
        )
    return a


def degrees(A: Any) -> npt.NDArray[np.int64]:
    """Returns the degree of each node (number of neighbours, self-loops excluded).

    Args:
      A: adjacency matrix, validated by :func:`check_adjacency`.

    Returns:
      An ``int64`` array of length ``n``.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix.
    """
    return row_counts(check_adjacency(A), axis=1)


def row_counts(a: Any, axis: int) -> npt.NDArray[np.int64]:
    """Number of True entries of a clean bool matrix per row (``axis=1``) or column (0)."""
    if sparse_lib.issparse(a):
        return np.asarray(a.sum(axis=axis, dtype=np.int64)).ravel()
    return a.sum(axis=axis, dtype=np.int64)
