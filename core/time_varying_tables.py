r"""Host tables of the time-varying gossip operator, in O(nnz) (or O(|S| n) for few offsets).

:class:`core.time_varying_gossip.TimeVaryingGossip` reads its per-round coefficients and
the agents' **user ids** (which key the failure draws) from sharded
:class:`core.operator_tables.AgentTable`\ s, in one of two layouts:

* **shift** (few offsets, :data:`core.comm.AUTO_SHIFT_MIN_OFFSETS`): per agent ``i`` and
  offset ``s``, the weight :math:`w^{(k)}_{i, i+s}` of every round ``k`` and the user ids
  of ``i`` and of its neighbours ``i + s`` (and ``i - s`` for ``push``): ``O(|S| n)``,
  which for a graph with few offsets is ``O(nnz)``.
* **entries** (halo and all-gather paths): the nonzeros of the union support, grouped
  by the device that holds their row (the receiver), padded to the largest group:
  per entry its local row, the sender's position, both user ids and the weight of every
  round; for ``push`` also the out-edges grouped by sender. ``D x`` (largest group)
  entries in all, within a small factor of ``nnz`` (a factor ``D`` at worst, for one
  hub row; a star of 2,048 agents on 8 devices: 3.3), never ``|S| n``. The grouping
  depends on the device count ``D``, so these tables are built per ``D``
  (:func:`entry_tables`).

The failure draws (:func:`_draw_edges`) live here too, shared by the device and by
:func:`round_matrix`, the host reference that rebuilds a round's matrix.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from decentjax.core import sparse as sparse_lib
from decentjax.core.operator_tables import AgentTable

if TYPE_CHECKING:
    from decentjax.core.time_varying_gossip import TimeVaryingGossip


def user_ids(order: np.ndarray | None, n: int) -> np.ndarray:
    """User id of every position: ``order`` (a relabelled operator) or ``0..n-1``."""
    return np.arange(n, dtype=np.int32) if order is None else order.astype(np.int32)


def union_entries(matrices: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union support of ``T`` matrices, row-major, and every round's weight on it.

    Returns:
      ``(rows, cols, vals)``: int64 ``(E,)``, int64 ``(E,)`` and float64 ``(E, T)``,
      O(T nnz) time and memory.
    """
    n = matrices[0].shape[0]
    keys, data, rounds = [], [], []
    for k, m in enumerate(matrices):
        coo = sp.coo_array(m)
        keep = coo.data != 0
        keys.append(coo.row[keep].astype(np.int64) * n + coo.col[keep])
        data.append(coo.data[keep])
        rounds.append(np.full(int(keep.sum()), k))
    unique, where = np.unique(np.concatenate(keys), return_inverse=True)
    vals = np.zeros((len(unique), len(matrices)))
    np.add.at(vals, (where, np.concatenate(rounds)), np.concatenate(data))
    return unique // n, unique % n, vals


def shift_tables(
    matrices: tuple[Any, ...], offsets: tuple[int, ...], order: np.ndarray | None, push: bool
) -> tuple[AgentTable, ...]:
    r"""The shift layout: ``(coefficients, ids[, out-coefficients])``.

    * coefficients ``(n, T, |S|)``: :math:`w^{(k)}_{i, (i+s) \bmod n}`;
    * ids int32 ``(n, 1 + |S| [+ |S|])``: the user id of ``i``, of each sender
      ``i + s`` and, for ``push``, of each receiver ``i - s`` of ``i``'s out-edges;
    * out-coefficients (``push`` only) ``(n, |S|)``: :math:`w_{(j - s) \bmod n,\, j}`.
    """
    n = matrices[0].shape[0]
    index = {s: t for t, s in enumerate(offsets)}
    coeffs = np.zeros((n, len(matrices), len(offsets)))
    for k, m in enumerate(matrices):
        offs, c = sparse_lib.shift_decomposition(m)
        for s, row in zip(offs, c, strict=True):
            coeffs[:, k, index[s]] = row
    ids = user_ids(order, n)
    shifts = np.asarray(offsets, np.int64)
    positions = np.arange(n)[:, None]
    columns = [ids[:, None], ids[(positions + shifts) % n]]
    tables = [AgentTable(coeffs, "round coefficients")]
    if push:
        columns.append(ids[(positions - shifts) % n])
        t_offsets, t_coeffs = sparse_lib.shift_decomposition(sparse_lib.as_csr(matrices[0]).T)
        rows = dict(zip(t_offsets, t_coeffs, strict=True))
        out = np.stack([rows.get((n - s) % n, np.zeros(n)) for s in offsets], axis=1)
        tables.append(AgentTable(out, "out-edge coefficients"))
    tables.insert(1, AgentTable(np.concatenate(columns, axis=1), "user ids of neighbours"))
    return tuple(tables)


def _grouped(
    n_devices: int, n: int, group: np.ndarray, columns: list[np.ndarray], pad: list[Any]
) -> tuple[list[np.ndarray], int]:
    """Entries sorted by ``group`` (an agent position), split by device, padded equally.

    Returns each column as ``(n_devices * width, ...)`` and ``width``, the largest
    device's count (at least 1). Column ``c`` is padded with ``pad[c]``, broadcast to
    ``(n_devices, width, ...)``.
    """
    block = n // n_devices
    order = np.argsort(group, kind="stable")
    device = group[order] // block
    counts = np.bincount(device, minlength=n_devices)
    width = max(int(counts.max(initial=0)), 1)
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = []
    for column, fill in zip(columns, pad, strict=True):
        table = np.empty((n_devices, width, *column.shape[1:]), column.dtype)
        table[...] = fill
        table[device, slot] = column[order]
        out.append(table.reshape(n_devices * width, *column.shape[1:]))
    return out, width


def entry_tables(
    matrices: tuple[Any, ...], order: np.ndarray | None, push: bool, n_devices: int
) -> tuple[tuple[AgentTable, ...], int, int]:
    """The entry layout for ``n_devices``: ``(tables, width, out_width)``.

    Tables: ``entries`` int32 ``(D w, 4)`` (local row, sender position, receiver and
    sender user ids), ``entry weights`` ``(D w, T)``, and for ``push`` ``out-edges``
    int32 ``(D w', 3)`` (the sender's local row, receiver and sender user ids) with
    ``out-edge weights`` ``(D w',)``. Each device's entries are sorted by local row;
    padding goes to its last row with weight 0 and equal user ids (a self-loop, which
    never fails).
    """
    n = matrices[0].shape[0]
    block = n // n_devices
    ids = user_ids(order, n)
    rows, cols, vals = union_entries(matrices)
    ints = np.stack([rows % block, cols, ids[rows], ids[cols]], axis=1).astype(np.int32)
    # Padding: the last row (rows stay sorted) reads this device's first agent, weight 0.
    starts = np.arange(n_devices) * block
    last = np.full_like(starts, block - 1)
    pad = np.stack([last, starts, 0 * starts, 0 * starts], axis=1)[:, None, :]
    (ints, weights), width = _grouped(n_devices, n, rows, [ints, vals], [pad, 0.0])
    tables = [AgentTable(ints, "entries"), AgentTable(weights, "entry weights")]
    out_width = 0
    if push:
        out = np.stack([cols % block, ids[rows], ids[cols]], axis=1).astype(np.int32)
        pad = np.asarray([block - 1, 0, 0])  # the last row, a self-loop
        (out, weight), out_width = _grouped(n_devices, n, cols, [out, vals[:, 0]], [pad, 0.0])
        tables += [AgentTable(out, "out-edges"), AgentTable(weight, "out-edge weights")]
    return tuple(tables), width, out_width


# The failure draws, shared by the device (core.time_varying_gossip) and the host reference.


def _edge_fails(key: jax.Array, a: jax.Array, b: jax.Array, threshold: jax.Array) -> jax.Array:
    """Whether link ``(a, b)`` fails: one uint32 draw below ``threshold = p 2^32``.

    Integer bits instead of ``bernoulli``: the draw is exact and the same whether or
    not float64 is enabled, so host and device always agree.
    """
    k = jax.random.fold_in(jax.random.fold_in(key, a), b)
    return jax.random.bits(k, (), jnp.uint32) < threshold


def _draw_edges(key: jax.Array, a: jax.Array, b: jax.Array, threshold: jax.Array) -> jax.Array:
    """:func:`_edge_fails` over arrays of endpoints of any (equal) shape."""
    flat = jax.vmap(_edge_fails, in_axes=(None, 0, 0, None))(
        key, a.reshape(-1), b.reshape(-1), threshold
    )
    return flat.reshape(a.shape)


_HOST_CHUNK = 4096


@jax.jit
def _draw_chunk(key: jax.Array, a: jax.Array, b: jax.Array, threshold: jax.Array) -> jax.Array:
    return _draw_edges(key, a, b, threshold)


def _host_draws(key: jax.Array, a: np.ndarray, b: np.ndarray, threshold: jax.Array) -> np.ndarray:
    """:func:`_draw_edges` for host index arrays, in fixed-size chunks.

    Padding to one chunk size compiles the draw once per process instead of once per
    edge count (compiling threefry takes about a second on CPU).
    """
    size = max(1, -(-len(a) // _HOST_CHUNK)) * _HOST_CHUNK
    padded = np.zeros((2, size), np.int32)
    padded[0, : len(a)], padded[1, : len(b)] = a, b
    chunks = [
        np.asarray(_draw_chunk(key, *padded[:, i : i + _HOST_CHUNK], threshold))
        for i in range(0, size, _HOST_CHUNK)
    ]
    return np.concatenate(chunks)[: len(a)]


def round_matrix(op: TimeVaryingGossip, key_or_round: jax.Array | int) -> np.ndarray:
    """The ``(n, n)`` matrix :math:`W_k` of one round, rebuilt on the host in O(nnz).

    An independent reference for tests and plots: it draws the same failure bits as
    the device (same keys, same pairs of user ids) but applies the failure rule to
    the matrix in NumPy / SciPy. The matrix is in the operator's labels (for a
    relabelled operator, ``W_k[order][:, order]`` of the plain operator's round).

    Args:
      op: the operator.
      key_or_round: for link failures, the round's key
        (:func:`~core.time_varying_gossip.round_key` of the step key); for a sequence,
        the round index ``k``.

    Returns:
      The float64 matrix :math:`W_k`, dense or ``csr_array`` like the operator's
      matrix.

    Raises:
      TypeError: if ``key_or_round`` does not fit ``op`` (a key for a sequence, an
        index for link failures).
    """
    is_index = isinstance(key_or_round, (int, np.integer))
    if op.kind == "sequence":
        if not is_index:
            raise TypeError("a sequence's round matrix is chosen by the round index k, an int.")
        return op.matrices[int(key_or_round) % len(op.matrices)].copy()
    if is_index:
        raise TypeError("link failures are drawn from the round's key: pass round_key(step_key).")
    w = op.base.matrix
    n = w.shape[0]
    threshold = jnp.uint32(min(math.floor(op.p * 2**32), 2**32 - 1))
    csr = sparse_lib.as_csr(w)
    csr.eliminate_zeros()
    recv, send = sparse_lib.coo_indices(csr)  # Row-major, as np.nonzero of dense W.
    off = recv != send
    recv, send, vals = recv[off], send[off], csr.data[off]
    ids = np.arange(n) if op.order is None else op.order  # draws are keyed by user ids
    if op.kind == "symmetric":
        a, b = np.minimum(ids[recv], ids[send]), np.maximum(ids[recv], ids[send])
    else:
        a, b = ids[recv], ids[send]
    failed = _host_draws(key_or_round, a, b, threshold)
    recv, send, lost = recv[failed], send[failed], vals[failed]
    # pull/symmetric: the receiver i (row) keeps w_ij; push: the sender j (column).
    keeper = send if op.kind == "push" else recv
    nodes = np.arange(n)
    change = sparse_lib.from_coo(
        n,
        np.concatenate([recv, nodes]),
        np.concatenate([send, nodes]),
        np.concatenate([-lost, np.bincount(keeper, weights=lost, minlength=n)]),
        np.float64,
    )
    if sparse_lib.issparse(w):
        out = sparse_lib.as_csr(w + change)
        out.eliminate_zeros()  # The failed links (w_ij - w_ij = 0 exactly).
        return out
    return w + change.toarray()
