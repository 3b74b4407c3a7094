r"""Relabelling agents to a small bandwidth, so local graphs need only halo exchange.

A device holds a contiguous block of agents, so what it must receive in a gossip
depends on the labels: a random geometric graph, a grid with shuffled labels or a
k-nearest-neighbour graph has edges between far-apart labels and, on the shift path,
many distinct offsets. Relabelling with reverse Cuthill–McKee
(:func:`scipy.sparse.csgraph.reverse_cuthill_mckee`) puts every edge within a band
:math:`-\ell \le j - i \le h`; each device then needs only the last :math:`\ell` rows
of the previous device and the first :math:`h` of the next
(:func:`core.gossip_kernels.halo_mix`).

**Orders.** An *order* is a permutation ``order`` of ``0..n-1``: position ``k`` of
the agent axis holds the user's agent ``order[k]``. A relabelled operator
(``comm.gossip(w, order="rcm")``) mixes arrays laid out in that order. What the user
passes in and reads out stays in their own order:

* :class:`core.loop.Runner` built with ``order=op.order`` does the permutation itself:
  per-agent inputs (data, initial params) go in, in the user's order, through
  ``runner.shard_agents`` (permuted on the host, then sharded), and per-agent outputs
  come back in the user's order through ``runner.to_user`` / ``runner.params(state)``;
  it folds each agent's user id (not its position) into its keys, so a relabelled run
  draws the same samples and is the same run, in the user's order, as the
  unrelabelled one;
* orders cannot be mixed silently: a relabelled ``Runner`` refuses per-agent arrays
  that its ``shard_agents`` did not place, and while a ``Runner`` traces its program
  (:func:`layout`) a gossip operator whose order differs from the runner's raises
  (:func:`check_layout`);
* every metric of :mod:`core.metrics` and :mod:`core.agent_metrics` is an average (or
  max / min / spread) over agents and does not change.

Outside a ``Runner`` (a bare ``jax.shard_map`` of ``op.mix``) the layout is the
caller's: use :func:`to_internal` and :func:`to_user`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse import csgraph

PyTree = Any


def reverse_cuthill_mckee(w: Any) -> np.ndarray:
    """The reverse Cuthill–McKee order of the (symmetrised) support of ``w``.

    Args:
      w: ``(n, n)`` dense array or ``scipy.sparse`` matrix (weights or adjacency).

    Returns:
      ``order`` (int64, a permutation of ``0..n-1``): position ``k`` holds agent
      ``order[k]``.
    """
    a = sp.csr_array(w)
    support = sp.csr_array((a != 0).astype(np.int8))
    support = (support + support.T).tocsr()
    return np.asarray(csgraph.reverse_cuthill_mckee(support, symmetric_mode=True), np.int64)


def check_order(order: npt.ArrayLike, n: int) -> np.ndarray:
    """``order`` as an int64 permutation of ``0..n-1``; raises naming what is wrong."""
    o = np.asarray(order)
    if o.shape != (n,) or o.dtype.kind not in "iu":
        raise ValueError(f"order must be an integer array of shape ({n},), got {o.dtype}{o.shape}.")
    if not np.array_equal(np.sort(o), np.arange(n)):
        seen = np.bincount(o[(o >= 0) & (o < n)], minlength=n)
        raise ValueError(
            f"order must be a permutation of 0..{n - 1}; agent {int(np.argmin(seen))} is "
            f"missing (and {int((seen > 1).sum())} agents repeat)."
        )
    return o.astype(np.int64)


def permute(w: Any, order: np.ndarray) -> Any:
    """``w`` in the new labels: entry ``(k, l)`` is ``w[order[k], order[l]]``.

    Dense in, dense out; sparse in, CSR out (O(nnz)).
    """
    if sp.issparse(w):
        return sp.csr_array(w)[order][:, order]
    return np.asarray(w)[np.ix_(order, order)]


def band(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[int, int]:
    """Halo widths ``(lo, hi)``: every entry has ``-lo <= j - i <= hi`` cyclically.

    Offsets are taken mod ``n`` into ``[-n/2, n/2)``, so a ring's wrap-around edge
    counts as offset 1, not ``n - 1``.
    """
    if rows.size == 0:
        return 0, 0
    delta = (cols - rows + n // 2) % n - n // 2
    return int(max(0, -delta.min())), int(max(0, delta.max()))


def _take(tree: PyTree, index: np.ndarray) -> PyTree:
    def leaf(x):
        if isinstance(x, jax.Array):
            return jnp.take(x, jnp.asarray(index), axis=0)
        return np.take(np.asarray(x), index, axis=0)

    return jax.tree.map(leaf, tree)


def to_internal(tree: PyTree, order: np.ndarray | None) -> PyTree:
    """Per-agent leaves ``(n, ...)`` in the user's order, laid out for ``order``.

    Host (NumPy) leaves stay NumPy, device leaves stay on device. ``None``: unchanged.
    """
    return tree if order is None else _take(tree, np.asarray(order))


def to_user(tree: PyTree, order: np.ndarray | None) -> PyTree:
    """The inverse of :func:`to_internal`: per-agent leaves back in the user's order."""
    return tree if order is None else _take(tree, np.argsort(order))


_NO_ORDER = np.zeros(0, np.int64)  # a runner without relabelling (the identity order)
_LAYOUT: contextvars.ContextVar[np.ndarray | None] = contextvars.ContextVar(
    "decentjax_agent_layout", default=None
)


@contextlib.contextmanager
def layout(order: np.ndarray | None) -> Iterator[None]:
    """Declares the agent axis laid out in ``order`` (``None``: the user's) while tracing.

    Bound by :class:`core.loop.Runner` around everything it traces; gossip operators
    check against it (:func:`check_layout`).
    """
    token = _LAYOUT.set(_NO_ORDER if order is None else np.asarray(order))
    try:
        yield
    finally:
        _LAYOUT.reset(token)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    a = None if a is None or a.size == 0 else a
    b = None if b is None or b.size == 0 else b
    if a is None or b is None:
        return a is b
    return a is b or np.array_equal(a, b)


def check_layout(order: np.ndarray | None) -> None:
    """Raises ``ValueError`` if an operator in ``order`` runs in a program of another layout.

    Called (at trace time, before anything compiles) by every gossip operator's mix.
    Outside :func:`layout` (a bare ``shard_map``) there is nothing to check.
    """
    bound = _LAYOUT.get()
    if bound is None or _same(order, bound):
        return
    relabelled = "is relabelled (op.order is set)" if order is not None else "is not relabelled"
    runner = "order=None" if bound.size == 0 else "another order"
    raise ValueError(
        f"the gossip operator {relabelled} but the Runner tracing it was built with "
        f"{runner}: its data would be mixed in the wrong agent order. Build the Runner "
        "with order=op.order (the operator's order) for every operator of the method."
    )
