r"""Local-view gossip kernels: shifted diagonals, neighbour lists, and halo exchange.

Each kernel computes this device's block of ``W @ X`` inside ``jax.shard_map`` over
:data:`core.mesh.AGENT_AXIS`; :class:`core.comm.Gossip` chooses one (see its module
docstring) and hands it the per-agent tables it reads through
:class:`core.operator_tables.AgentTable` (no ``n``-sized constant in the program).

* :func:`shift_mix`: ``sum_s diag(c_s) P_s X`` with two ``ppermute``\ s per offset.
* :func:`ell_mix`: row ``i`` is ``sum_k v[i, k] X[col[i, k]]`` over a padded neighbour
  list (ELLPACK) of the all-gathered ``X``: the dense path without an ``n x n`` table.
* :func:`halo_mix`: the same neighbour lists over this block extended by ``lo`` rows
  of the previous device and ``hi`` rows of the next (two ``ppermute``\ s), for a
  graph whose edges all lie within a band (after :mod:`core.relabel`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from decentjax.core.mesh import AGENT_AXIS
from decentjax.core.tree import per_agent


def _from_device_ahead(x: jax.Array, q: int, n_devices: int) -> jax.Array:
    """``x`` as held by the device ``q`` places ahead (cyclically) of this one."""
    q %= n_devices
    if q == 0:
        return x
    # Device j sends to j - q, so device d receives what device d + q holds.
    perm = [(j, (j - q) % n_devices) for j in range(n_devices)]
    return jax.lax.ppermute(x, AGENT_AXIS, perm)


SEGMENTED_MAX_OFFSETS = 32
"""Up to this many offsets :func:`shift_mix` builds the output by row segments."""


def shift_mix(
    x: jax.Array, offsets: tuple[int, ...], coeffs: list[Any], n_devices: int
) -> jax.Array:
    r"""``sum_s diag(c_s) P_s x`` for this device's block ``x`` of ``b`` agents (local view).

    For offset ``s = q b + r`` this device needs rows ``r..b-1`` of the block ``q``
    devices ahead (``main``) and rows ``0..r-1`` of the block ``q + 1`` ahead (``wrap``):
    two ``ppermute``\ s of block slices, none when the source is this device.

    The output is assembled by **row segments**: the cut points ``b - r`` of all
    offsets split ``0..b`` into at most ``|S| + 1`` ranges in which every offset reads
    one contiguous slice of ``main`` or of ``wrap``, so each segment is a plain
    elementwise sum of slices and only the segments are concatenated. Concatenating
    every shifted copy instead (``concat(main, wrap)`` per offset, inside the fused
    update) made XLA:CPU emit a per-element select and ran 3-5x slower (D-RR,
    n = 256..1024, ring and exponential graphs; ``launch.benchmarks``). Segments cost
    ``|S|^2`` slice ops in the program, so above :data:`SEGMENTED_MAX_OFFSETS`
    offsets the per-offset concatenation is used.

    Args:
      x: this device's block, ``(b, ...)``.
      offsets: the shift offsets ``s``.
      coeffs: per offset, a Python scalar (the same for every agent) or this block's
        coefficients ``(b,)``.
      n_devices: devices on the agent axis.
    """
    block = x.shape[0]
    pieces = []  # (split, main, wrap): rows [0, split) come from main, the rest from wrap.
    for s in offsets:
        q, r = divmod(s, block)
        main = _from_device_ahead(x[r:], q, n_devices)
        wrap = _from_device_ahead(x[:r], q + 1, n_devices) if r else None
        pieces.append((block - r, main, wrap))

    def scaled(c, rows, lo, hi):
        return c * rows if isinstance(c, (int, float)) else per_agent(c[lo:hi], rows) * rows

    if len(offsets) > SEGMENTED_MAX_OFFSETS:
        out = jnp.zeros_like(x)
        for c, (_, main, wrap) in zip(coeffs, pieces, strict=True):
            shifted = main if wrap is None else jnp.concatenate([main, wrap], axis=0)
            out = out + scaled(c, shifted, 0, block)
        return out
    cuts = sorted({0, block, *(split for split, _, _ in pieces)})
    segments = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        acc = jnp.zeros((hi - lo, *x.shape[1:]), x.dtype)
        for c, (split, main, wrap) in zip(coeffs, pieces, strict=True):
            rows = main[lo:hi] if hi <= split else wrap[lo - split : hi - split]
            acc = acc + scaled(c, rows, lo, hi)
        segments.append(acc.astype(x.dtype))
    return segments[0] if len(segments) == 1 else jnp.concatenate(segments, axis=0)


UNROLL_MAX_NEIGHBOURS = 32
"""Up to this many neighbour slots :func:`_gather_rows` sums slot by slot.

The width ``K`` is the largest row's nonzeros (a random geometric graph of mean degree 8
has ``K`` about 25 at n = 100,000); one gather of ``(b, K, d)`` would then be a
temporary of ``K`` copies of the block (1 GB at b = 100,000, d = 100, float32).
"""


def _gather_rows(source: jax.Array, cols: jax.Array, vals: jax.Array) -> jax.Array:
    """``out[i] = sum_k vals[i, k] * source[cols[i, k]]`` for a ``(b, K)`` neighbour list.

    Slot by slot for small ``K`` (the temporary stays ``(b, ...)``), else one gather of
    ``(b, K, ...)`` and a contraction (the program does not grow with ``K``).
    """
    if cols.shape[1] > UNROLL_MAX_NEIGHBOURS:
        return jnp.einsum("bk,bk...->b...", vals, source[cols], precision="highest")
    out = jnp.zeros((cols.shape[0], *source.shape[1:]), source.dtype)
    for k in range(cols.shape[1]):
        rows = source[cols[:, k]]
        out = out + per_agent(vals[:, k], rows) * rows
    return out


def ell_mix(x: jax.Array, cols: jax.Array, vals: jax.Array) -> jax.Array:
    """This block of ``W @ X`` from the all-gathered ``X`` and this block's neighbour lists.

    Args:
      x: this device's block ``(b, ...)``.
      cols: ``(b, K)`` int32 global column indices (padding: any index, weight 0).
      vals: ``(b, K)`` weights, the dtype of ``x``.
    """
    full = jax.lax.all_gather(x, AGENT_AXIS, tiled=True)
    return _gather_rows(full, cols, vals)


def halo_source(x: jax.Array, cols: jax.Array, lo: int, hi: int, n_agents: int):
    """This block extended by its halos, and the global columns ``cols`` as rows of it.

    This device receives the last ``lo`` rows of the previous device and the first
    ``hi`` rows of the next one (one ``ppermute`` each): it sends ``lo + hi`` rows.
    Every ``j`` in ``cols`` must lie within ``-lo..hi`` (cyclically) of this block.

    Returns:
      ``(extended, local)``: ``(lo + b + hi, ...)`` rows and ``cols`` as indices into them.
    """
    block = x.shape[0]
    n_devices = jax.lax.axis_size(AGENT_AXIS)
    parts = [x]
    if lo:
        parts.insert(0, _from_device_ahead(x[block - lo :], -1, n_devices))
    if hi:
        parts.append(_from_device_ahead(x[:hi], 1, n_devices))
    extended = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
    # Row p of `extended` is agent (start - lo + p) mod n for every p, so any p with
    # p = j - start + lo (mod n) inside it holds agent j; the neighbour at signed offset
    # -lo..hi from a row of this block has one at p = (j - start + lo) mod n, exactly
    # (with one device the halos are the block's own ends, and this still holds).
    start = jax.lax.axis_index(AGENT_AXIS) * block
    return extended, jnp.remainder(cols - start + lo, n_agents)


def halo_mix(
    x: jax.Array, cols: jax.Array, vals: jax.Array, lo: int, hi: int, n_agents: int
) -> jax.Array:
    """This block of ``W @ X`` for a banded ``W``: halo rows from the two adjacent devices.

    Every edge ``(i, j)`` must satisfy ``-lo <= j - i <= hi`` (cyclically, mod ``n``)
    with ``lo, hi <= b`` (see :func:`halo_source`); then it multiplies locally.

    Args:
      x: this device's block ``(b, ...)``.
      cols: ``(b, K)`` int32 global column indices; ``vals``: ``(b, K)`` weights.
      lo, hi: the halo widths.
      n_agents: ``n``.
    """
    return _gather_rows(*halo_source(x, cols, lo, hi, n_agents), vals)


def entry_mix(
    source: jax.Array, index: jax.Array, rows: jax.Array, vals: jax.Array, block: int
) -> jax.Array:
    """``out[i] = sum_{e: rows[e] = i} vals[e] * source[index[e]]``, a segment sum (O(nnz)).

    The kernel of the time-varying operator's entry layout
    (:mod:`core.time_varying_tables`): ``source`` is the all-gathered agent axis or
    this block with its halos (:func:`halo_source`). Memory: one ``(E, ...)`` gather
    of the block's ``E`` entries besides ``source``.

    Args:
      source: ``(r, ...)`` rows to read.
      index: ``(E,)`` int32 rows of ``source``.
      rows: ``(E,)`` int32 local output rows, sorted.
      vals: ``(E,)`` weights, the dtype of ``source``.
      block: output rows ``b``.
    """
    gathered = source[index]
    terms = per_agent(vals, gathered) * gathered
    return jax.ops.segment_sum(terms, rows, num_segments=block, indices_are_sorted=True)
