"""Undirected adjacency matrices: the validation and the connectivity and degree queries.

An adjacency matrix is a NumPy ``bool`` array ``A`` of shape ``(n, n)``, symmetric
with a zero diagonal (``A[i, j]``: agents ``i`` and ``j`` exchange messages).
:func:`check_adjacency` validates one, :func:`check_connected` also requires it to be
connected, and :func:`connected_components`, :func:`is_connected` and :func:`degrees`
query it; :func:`as_bool_adjacency` is the entry check shared with
:mod:`core.digraph`. The constructors are in :mod:`core.topology`, the public face,
which re-exports everything here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BoolMatrix = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------------------
# Validation and graph queries.
# --------------------------------------------------------------------------------------


def as_bool_adjacency(A: npt.ArrayLike, what: str) -> npt.NDArray[np.bool_]:
    """``A`` as a bool ``(n, n)`` array, checking shape and 0/1 entries (no symmetry).

    Shared by :func:`check_adjacency` and :func:`core.directed.check_directed_adjacency`; ``what``
    names the matrix in the messages.

    Raises:
      ValueError: if ``A`` is not 2-D and square with ``n >= 1``, has a non-numeric
        dtype, or an entry other than 0/1/True/False.
    """
    a = np.asarray(A)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
        raise ValueError(
            f"{what} must be a 2-D square array of shape (n, n) with n >= 1, got shape {a.shape}."
        )
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{what} must have bool or 0/1 numeric entries, got dtype {a.dtype}.")
    bad = ~((a == 0) | (a == 1))  # NaN fails both comparisons, so it is caught here.
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{what} entries must be 0 or 1 (or bool), got A[{i}, {j}] = {a[i, j].item()}."
        )
    return a == 1


def check_adjacency(A: npt.ArrayLike) -> BoolMatrix:
    """Validates an undirected adjacency matrix and returns it as a clean bool array.

    A nonzero diagonal is accepted and dropped: some reference code (e.g. Kun Huang's
    D-RR ``graph.py``) stores self-loops in the adjacency, and the self-weight is
    always set by the weight constructor anyway.

    Args:
      A: array-like of shape ``(n, n)``, ``n >= 1``, with bool entries or numeric
        entries that are exactly 0 or 1; must be symmetric.

    Returns:
      A new ``bool`` array of shape ``(n, n)``, symmetric, with a zero diagonal.

    Raises:
      ValueError: if ``A`` is not 2-D and square with ``n >= 1``, has an entry other than
        0/1/True/False (or a non-numeric dtype), or is not symmetric. The message names
        the offending shape, value or position.
    """
    a = as_bool_adjacency(A, "adjacency matrix")
    asym = a != a.T
    if asym.any():
        i, j = np.argwhere(asym)[0]
        raise ValueError(
            f"adjacency matrix must be symmetric (an undirected graph), but "
            f"A[{i}, {j}] = {bool(a[i, j])} while A[{j}, {i}] = {bool(a[j, i])}."
        )
    a = a.copy()
    np.fill_diagonal(a, False)
    return a


def connected_components(A: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Labels the connected components of an undirected graph.

    Args:
      A: adjacency matrix, validated by :func:`check_adjacency`.

    Returns:
      An ``int64`` array of length ``n``: the component index of each node.
      Components are numbered ``0, 1, ...`` in order of their smallest node, so node 0
      is always in component 0 and the graph is connected iff the maximum label is 0.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix.
    """
    a = check_adjacency(A)
    n = a.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    count = 0
    # Breadth-first search, one frontier at a time; each step is one vectorised row
    # reduction, and graphs here are small enough that dense rows are the simple choice.
    for start in range(n):
        if labels[start] >= 0:
            continue
        labels[start] = count
        frontier = np.zeros(n, dtype=np.bool_)
        frontier[start] = True
        while frontier.any():
            frontier = a[frontier].any(axis=0) & (labels < 0)
            labels[frontier] = count
        count += 1
    return labels


def is_connected(A: npt.ArrayLike) -> bool:
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


def check_connected(A: npt.ArrayLike) -> BoolMatrix:
    """Validates an adjacency matrix and checks that its graph is connected.

    Decentralized methods reach consensus only on connected graphs; on a disconnected
    graph each component converges to its own minimiser, so this is an error, not a
    warning.

    Args:
      A: adjacency matrix, validated by :func:`check_adjacency`.

    Returns:
      The cleaned ``bool`` adjacency matrix (as from :func:`check_adjacency`).

    Raises:
      ValueError: if ``A`` is invalid, or the graph is disconnected; the message gives
        the number of components, their sizes and a pair of nodes that cannot reach
        each other.
    """
    a = check_adjacency(A)
    labels = connected_components(a)
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


def degrees(A: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Returns the degree of each node (number of neighbours, self-loops excluded).

    Args:
      A: adjacency matrix, validated by :func:`check_adjacency`.

    Returns:
      An ``int64`` array of length ``n``.

    Raises:
      ValueError: if ``A`` is not a valid adjacency matrix.
    """
    return check_adjacency(A).sum(axis=1, dtype=np.int64)
