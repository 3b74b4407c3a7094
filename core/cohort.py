r"""Cross-device federated rounds on the sampled cohort: client store, draws, exchange.

A federated round touches only the clients the server samples. This module holds
what such a round needs from ``core``, so that its cost is O(cohort), whatever the
number of clients :math:`N`:

* :class:`ClientStore`: every client's samples in one padded array
  ``(N, m_max, ...)`` with the true counts :math:`m_i` beside it (clients of
  unequal size); built on the host by :func:`client_store` from equal-size
  arrays or a list of per-client arrays (what LEAF/TFF-style datasets give).
* :func:`draw_cohort`: :math:`|S|` clients uniformly without replacement, from
  the round key over *global* client indices, so the draw does not depend on
  the device count; Floyd's algorithm, O(|S|^2) comparisons, nothing of size N.
* :func:`gather` / :func:`scatter` (local view, inside ``jax.shard_map`` over the
  agent axis, which here indexes clients): the cohort's rows of a client-sharded
  array are brought to a cohort array sharded over the devices, and written
  back. Each device holds ``N / P`` clients and computes ``|S| / P`` cohort
  members (the cohort is padded to a multiple of the device count ``P`` with
  dummy members, index ``-1``, that own no data and are never written back).
  :func:`gather` is a masked local gather and one reduce-scatter
  (``psum_scatter``) of ``|S|`` rows; :func:`scatter` one all-gather of the
  members' rows and a local masked write; :func:`cohort_sum` one all-reduce of
  a model-sized vector. Rows are moved whole: adding the zeros of the devices
  that do not own a row is exact.
* :func:`sample_order`: a cohort member's batch indices for one round: random
  reshuffling over its *own* :math:`m_i` samples (a fresh permutation every local
  epoch), for either ``K`` local steps (an endless stream of such epochs, every
  batch full) or ``E`` local epochs (the last batch of an epoch may be partial,
  so each position comes with a mask).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core.mesh import AGENT_AXIS

PyTree = Any


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["data", "counts"], meta_fields=["min_count"]
)
@dataclasses.dataclass(frozen=True)
class ClientStore:
    r"""Every client's local samples, padded to a common length (a pytree).

    Attributes:
      data: pytree of arrays with leaves ``(N, m_max, ...)``; rows at or past a
        client's count are padding (zeros) and are never sampled.
      counts: int32 ``(N,)``: :math:`m_i \ge 1`, the samples client ``i`` holds.
      min_count: :math:`\min_i m_i`, static (not traced): it bounds how many local
        epochs a round of ``K`` steps can span (see :func:`sample_order`).
    """

    data: PyTree
    counts: Any
    min_count: int


def client_store(clients: PyTree | Sequence[PyTree], counts: Any = None) -> ClientStore:
    """Builds a :class:`ClientStore` on the host.

    Args:
      clients: either one pytree with leaves ``(N, m, ...)`` (equal sizes, or
        padded when ``counts`` is given), or a sequence of ``N`` pytrees, one per
        client, with leaves ``(m_i, ...)`` (clients of unequal size).
      counts: with equal-size input, optional ``(N,)`` true sample counts; the
        rows past ``counts[i]`` are then padding. Not allowed with a sequence.

    Returns:
      The store, as NumPy arrays (place it with :func:`core.mesh.shard_agents`).

    Raises:
      ValueError: a client with zero samples (named), counts that do not fit the
        array, leaves of one client that disagree on their sample count, or
        clients whose leaves differ in structure, trailing shape or dtype.
    """
    if isinstance(clients, (list, tuple)):
        if counts is not None:
            raise ValueError("counts is implied by a list of per-client arrays; do not pass it.")
        if not clients:
            raise ValueError("expected at least one client, got an empty list.")
        structure = jax.tree.structure(clients[0])
        sizes = []
        for i, client in enumerate(clients):
            if jax.tree.structure(client) != structure:
                raise ValueError(
                    f"client {i} has the structure {jax.tree.structure(client)}, client 0 has "
                    f"{structure}: every client needs the same keys."
                )
            lengths = {
                np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(client)
            }
            if len(lengths) != 1 or None in lengths:
                raise ValueError(
                    f"client {i}'s leaves disagree on their number of samples: "
                    f"{[np.shape(leaf) for leaf in jax.tree.leaves(client)]}."
                )
            sizes.append(lengths.pop())
        m_max = max(sizes)

        def pad(*leaves):
            first = np.asarray(leaves[0])
            out = np.zeros((len(leaves), m_max, *first.shape[1:]), first.dtype)
            for i, leaf in enumerate(leaves):
                leaf = np.asarray(leaf)
                if leaf.shape[1:] != first.shape[1:] or leaf.dtype != first.dtype:
                    raise ValueError(
                        f"client {i} has samples of shape {leaf.shape[1:]} and dtype "
                        f"{leaf.dtype}, client 0 of {first.shape[1:]} and {first.dtype}."
                    )
                out[i, : leaf.shape[0]] = leaf
            return out

        data = jax.tree.map(pad, *clients)
        counts = np.asarray(sizes, np.int64)
    else:
        data = jax.tree.map(np.asarray, clients)
        leaves = jax.tree.leaves(data)
        if not leaves or any(np.ndim(leaf) < 2 for leaf in leaves):
            raise ValueError(
                "expected leaves of shape (n_clients, samples, ...), got "
                f"{[np.shape(leaf) for leaf in leaves]}."
            )
        n, m_max = leaves[0].shape[:2]
        if any(leaf.shape[:2] != (n, m_max) for leaf in leaves):
            raise ValueError(
                f"leaves disagree on (n_clients, samples): {[leaf.shape[:2] for leaf in leaves]}."
            )
        counts = np.full((n,), m_max, np.int64) if counts is None else np.asarray(counts)
        if counts.shape != (n,) or not np.issubdtype(counts.dtype, np.integer):
            raise ValueError(f"counts must be {n} integers (one per client), got {counts!r}.")
        if np.any(counts > m_max):
            i = int(np.argmax(counts > m_max))
            raise ValueError(f"client {i} has count {counts[i]} > {m_max} rows in the array.")
    counts = np.asarray(counts)
    if np.any(counts < 1):
        empty = np.flatnonzero(counts < 1)
        raise ValueError(
            f"clients {empty[:10].tolist()}{'...' if empty.size > 10 else ''} hold no samples; "
            "every client needs at least one (drop empty clients before building the store)."
        )
    return ClientStore(data, counts.astype(np.int32), int(counts.min()))


def total_count(store: ClientStore) -> jax.Array:
    r""":math:`\sum_i m_i` over all clients of a sharded ``store`` (local view).

    Each device sums its block's counts; one ``psum`` of a scalar over the agent
    axis gives the total, the same on every device.
    """
    return jax.lax.psum(jnp.sum(store.counts), AGENT_AXIS)


def padded_cohort_size(cohort_size: int, n_devices: int) -> int:
    """The cohort rounded up to a multiple of the device count (dummy members)."""
    return math.ceil(cohort_size / n_devices) * n_devices


def draw_cohort(key: jax.Array, n_clients: int, cohort_size: int, padded_size: int) -> jax.Array:
    """``padded_size`` global client indices: the first ``cohort_size`` drawn uniformly
    without replacement from ``0..n_clients-1`` (same on every device for the same key),
    then ``-1`` for the dummy members that pad the cohort to a multiple of the devices.

    Floyd's algorithm (Bentley & Floyd 1987, "A sample of brilliance"): for
    ``j = N - S, ..., N - 1`` draw ``t`` uniform in ``0..j`` and take ``t``, or ``j`` if
    ``t`` was taken already; every ``S``-subset is equally likely. ``S`` draws and
    ``S^2/2`` comparisons, none of size ``N`` (a permutation of ``N`` clients cost
    4 ms a round at ``N = 10^4`` on a CPU, six times the rest of a small round).
    """
    first = n_clients - cohort_size

    def take(i: jax.Array, chosen: jax.Array) -> jax.Array:
        j = (first + i).astype(jnp.int32)
        t = jax.random.randint(jax.random.fold_in(key, i), (), 0, j + 1, jnp.int32)
        return chosen.at[i].set(jnp.where(jnp.any(chosen == t), j, t))

    drawn = jax.lax.fori_loop(0, cohort_size, take, jnp.full((cohort_size,), -1, jnp.int32))
    return jnp.concatenate([drawn, jnp.full((padded_size - cohort_size,), -1, jnp.int32)])


def _local_rows(members: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
    """Each member's row in this device's block, and whether this device owns it."""
    start = jax.lax.axis_index(AGENT_AXIS) * block
    rows = members - start.astype(members.dtype)
    owned = (members >= 0) & (rows >= 0) & (rows < block)
    return jnp.where(owned, rows, 0), owned


def local_slice(values: jax.Array) -> jax.Array:
    """This device's slice of a replicated cohort-length vector (local view).

    ``values`` is ``(C,)``, the same on every device, ``C`` a multiple of the device
    count; device ``d`` gets entries ``d*C/P .. (d+1)*C/P - 1``, the members whose rows
    :func:`gather` gives it.
    """
    local = values.shape[0] // jax.lax.axis_size(AGENT_AXIS)
    return jax.lax.dynamic_slice_in_dim(values, jax.lax.axis_index(AGENT_AXIS) * local, local)


def lookup(column: jax.Array, clients: jax.Array) -> jax.Array:
    """``column[clients]`` of a client-sharded per-client column, replicated (local view).

    ``column`` is this device's ``(N/P,)`` block; ``clients`` any ``(k,)`` global
    indices (``-1`` gives 0), the same on every device. One all-reduce of ``k`` values.
    """
    rows, owned = _local_rows(clients, column.shape[0])
    return jax.lax.psum(jnp.where(owned, column[rows], jnp.zeros((), column.dtype)), AGENT_AXIS)


def gather(tree: PyTree, members: jax.Array) -> PyTree:
    """The members' rows of a client-sharded pytree, as this device's cohort slice.

    Local view. ``tree`` leaves are this device's ``(N/P, ...)`` clients; ``members``
    the ``(C,)`` global indices (same on every device, ``C`` a multiple of ``P``).
    Returns leaves ``(C/P, ...)``: the rows of members ``d*C/P .. (d+1)*C/P - 1`` on
    device ``d``; dummy members get zeros.
    """
    if not jax.tree.leaves(tree):
        return tree
    block = jax.tree.leaves(tree)[0].shape[0]
    rows, owned = _local_rows(members, block)

    def leaf(a: jax.Array) -> jax.Array:
        picked = a[rows]
        mask = owned.reshape(owned.shape + (1,) * (a.ndim - 1))
        if a.dtype == jnp.bool_:  # psum needs numbers.
            return gather_numbers(jnp.where(mask, picked, False).astype(jnp.int32)).astype(bool)
        return gather_numbers(jnp.where(mask, picked, jnp.zeros_like(picked)))

    def gather_numbers(a: jax.Array) -> jax.Array:
        return jax.lax.psum_scatter(a, AGENT_AXIS, scatter_dimension=0, tiled=True)

    return jax.tree.map(leaf, tree)


def scatter(tree: PyTree, members: jax.Array, values: PyTree) -> PyTree:
    """Writes the cohort's rows back into the client-sharded ``tree`` (local view).

    ``values`` leaves are this device's cohort slice ``(C/P, ...)`` (as from
    :func:`gather`); every device receives all ``C`` rows and writes those of the
    clients it holds. Dummy members are dropped; other clients stay bit-identical.
    """
    if not jax.tree.leaves(tree):
        return tree
    block = jax.tree.leaves(tree)[0].shape[0]
    rows, owned = _local_rows(members, block)
    target = jnp.where(owned, rows, block)  # Out of range: dropped by the scatter.

    def leaf(a: jax.Array, v: jax.Array) -> jax.Array:
        everyone = jax.lax.all_gather(v, AGENT_AXIS, tiled=True)
        return a.at[target].set(everyone.astype(a.dtype), mode="drop")

    return jax.tree.map(leaf, tree, values)


def cohort_sum(tree: PyTree) -> PyTree:
    """The sum over all cohort members of a cohort-sliced pytree, on every device.

    Local view: leaves ``(C/P, ...)``; returns leaves without the member axis,
    replicated (one all-reduce per leaf: the server's aggregation).
    """

    return devices_sum(local_member_sum(tree))


def devices_sum(tree: PyTree) -> PyTree:
    """The sum over the devices of per-device partial sums (e.g. of
    :func:`local_member_sum`), on every device: one all-reduce per leaf."""
    return jax.tree.map(lambda a: jax.lax.psum(a, AGENT_AXIS), tree)


def local_member_sum(tree: PyTree) -> PyTree:
    """The sum over this device's members of a cohort-sliced pytree (leaves ``(C/P,
    ...)`` to leaves without the member axis; no communication)."""

    # The member sum as a product with a ones vector rather than ``jnp.sum(a, axis=0)``:
    # XLA:CPU (JAX 0.10) emits the major-axis reduction of a large leaf, fused with the
    # scaling before it, as a YNNPACK fusion that took 141 ms per round for the W3 CNN's
    # (10, 3136, 128) dense kernel; the dot runs as a GEMV (``benchmarks --only cohort``).
    def member_sum(a: jax.Array) -> jax.Array:
        if a.shape[0] == 1:
            return a[0]
        return jnp.tensordot(jnp.ones((a.shape[0],), a.dtype), a, axes=(0, 0))

    return jax.tree.map(member_sum, tree)


def _permutations(key: jax.Array, count: jax.Array, m_max: int, epochs: int) -> jax.Array:
    """``(epochs, m_max)``: per local epoch, a uniform permutation of ``0..count-1``
    in the first ``count`` places (padding rows sort last)."""
    valid = jnp.arange(m_max, dtype=jnp.int32) < count

    def one(e: jax.Array) -> jax.Array:
        u = jax.random.uniform(jax.random.fold_in(key, e), (m_max,))
        return jnp.argsort(jnp.where(valid, u, 2.0)).astype(jnp.int32)

    return jax.vmap(one)(jnp.arange(epochs, dtype=jnp.int32))


def sample_order(
    key: jax.Array,
    count: jax.Array,
    m_max: int,
    batch_size: int,
    *,
    local_steps: int | None = None,
    local_epochs: int | None = None,
    min_count: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """One member's batch indices for a round, and which of them are real samples.

    Random reshuffling over the member's own ``count`` samples: local epoch ``e``
    follows the permutation drawn from ``fold_in(key, e)``.

    * ``local_steps=K``: the batches are consecutive slices of the endless stream
      of such epochs, ``K`` batches of ``batch_size`` (all real).
    * ``local_epochs=E``: each epoch is cut into ``ceil(m_max / batch_size)``
      batches; positions past ``count`` are masked out (a client of ``m_i``
      samples takes ``ceil(m_i / batch_size)`` non-empty steps per epoch, the last
      possibly partial; its remaining steps are empty).

    Args:
      key: the member's key for this round.
      count: its number of samples :math:`m_i` (traced int).
      m_max: the store's padded length (static).
      batch_size: samples per step (static).
      local_steps: ``K`` (exactly one of ``local_steps`` / ``local_epochs``).
      local_epochs: ``E``.
      min_count: the smallest count in the store (static; bounds the epochs that a
        stream of ``K`` batches can span).

    Returns:
      ``(indices, mask)``, both ``(steps, batch_size)``: int32 sample indices into
      the member's rows and a bool mask of real samples.
    """
    if local_steps is not None:
        epochs = math.ceil(local_steps * batch_size / min_count)
        perms = _permutations(key, count, m_max, epochs).reshape(-1)
        position = jnp.arange(local_steps * batch_size, dtype=jnp.int32)
        index = perms[(position // count) * m_max + position % count]
        shape = (local_steps, batch_size)
        return index.reshape(shape), jnp.ones(shape, bool)
    per_epoch = math.ceil(m_max / batch_size)
    perms = _permutations(key, count, m_max, local_epochs)
    slot = jnp.arange(per_epoch * batch_size, dtype=jnp.int32)
    index = jnp.take(perms, jnp.minimum(slot, m_max - 1), axis=1)  # (E, per_epoch * B)
    mask = jnp.broadcast_to(slot < count, index.shape)
    shape = (local_epochs * per_epoch, batch_size)
    return index.reshape(shape), mask.reshape(shape)
