r"""Communication operators: gossip with a mixing matrix, and the server mean.

Everything here runs in **local view**: inside ``jax.shard_map`` over
:data:`core.mesh.AGENT_AXIS`, where each device sees its contiguous block of ``b``
agents (leaves of shape ``(b, ...)``). Algorithms communicate only through these
operators; no algorithm calls ``ppermute`` or ``psum`` itself.

**How O(degree) gossip works on blocks.** Write the mixing matrix as a sum of
shifted diagonals,

.. math::

  W = \sum_{s \in S} \operatorname{diag}(c_s)\, P_s, \qquad
  (P_s X)_i = X_{(i + s) \bmod n}, \qquad c_s[i] = w_{i, (i+s) \bmod n},

where :math:`S` is the set of offsets ``j - i (mod n)`` over the edges and
self-loops. A circulant graph (ring, torus, exponential) has one offset per
neighbour direction; a general graph has one per distinct offset, with zeros where
an agent lacks that edge. With ``D`` devices holding blocks of ``b`` agents, the
rows ``i + s`` a block needs, for ``s = q b + r`` with ``0 <= r < b``, are rows
``r..b-1`` of the block ``q`` devices ahead and rows ``0..r-1`` of the block
``q + 1`` ahead: two ``ppermute``\ s of block slices (none when the source is the
device itself) and a concatenation. Each agent receives at most one row per
offset, so a call costs ``|S|`` rows per agent whatever ``n`` is.

Graphs with many distinct offsets (Erdős–Rényi) are cheaper through the **dense**
path: all-gather the agent axis and multiply by this device's rows of ``W``. The
``"auto"`` path picks by the number of offsets (see :func:`gossip`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from core import weights as weights_lib
from core.mesh import AGENT_AXIS, as_varying
from core.tree import per_agent

PyTree = Any
Path = Literal["auto", "shift", "dense"]


def _bytes_per_agent(tree: PyTree) -> int:
    """Bytes of one agent's slice of a local-view pytree (leading axis dropped)."""
    return sum(
        math.prod(leaf.shape[1:]) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)
    )


def _shift_decomposition(w: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Offsets ``s`` and coefficient rows ``c_s`` with ``W = sum_s diag(c_s) P_s``.

    Read off the nonzeros (offset ``(j - i) mod n`` of entry ``(i, j)``), so the cost
    is one pass over ``W`` plus ``O(|S| n)``, not a gather per candidate offset.
    """
    n = w.shape[0]
    rows, cols = np.nonzero(w)
    shifts = (cols - rows) % n
    offsets = np.unique(shifts)
    coeffs = np.zeros((len(offsets), n))
    coeffs[np.searchsorted(offsets, shifts), rows] = w[rows, cols]
    return tuple(int(s) for s in offsets), coeffs


def _local_rows(table: np.ndarray, block: int, dtype: Any) -> jax.Array:
    """This device's ``block`` columns-of-agents slice of a host table ``(..., n)``."""
    start = jax.lax.axis_index(AGENT_AXIS) * block
    return jax.lax.dynamic_slice_in_dim(jnp.asarray(table, dtype=dtype), start, block, axis=-1)


def _from_device_ahead(x: jax.Array, q: int, n_devices: int) -> jax.Array:
    """``x`` as held by the device ``q`` places ahead (cyclically) of this one."""
    q %= n_devices
    if q == 0:
        return x
    # Device j sends to j - q, so device d receives what device d + q holds.
    perm = [(j, (j - q) % n_devices) for j in range(n_devices)]
    return jax.lax.ppermute(x, AGENT_AXIS, perm)


SINGLE_DEVICE_DENSE_RATIO = 8
r"""With ``path="auto"`` on one device, mix densely when ``|S| * ratio > n``.

On one device nothing is communicated and the choice is between memory traffic and
arithmetic: the shift path streams ``|S|`` shifted copies of the ``(n, d)`` block
(``4 |S| n d`` bytes), the dense path does ``2 n^2 d`` FLOPs on one copy. Their
ratio is ``2 |S| F / (n B)`` for a machine of ``F`` FLOP/s and ``B`` bytes/s:
about ``|S| / n`` times 11 on this project's 2-core CPU (150 GFLOP/s, 27 GB/s) and
larger on GPUs. Measured (MLP 784-256-10, 64 agents, 1 CPU device): exponential
graph (``|S| = 12``) 64 ms per DSGD step shifted, 42 ms dense; ring (``|S| = 3``)
32 ms shifted, 43 ms dense. A threshold of 8 is on the safe side of both.
Only leaves of at least :data:`SINGLE_DEVICE_DENSE_MIN_BYTES` qualify: a block that
fits in cache is not bandwidth-bound (D-RR logistic, n = 16, d = 785, exponential
graph: 16 us per step shifted, 31 us dense).
"""

SINGLE_DEVICE_DENSE_MIN_BYTES = 4 << 20
"""Smallest leaf (all agents, bytes) for which ``"auto"`` may go dense on one device."""

SEGMENTED_MAX_OFFSETS = 32
"""Up to this many offsets :func:`_shift_mix` builds the output by row segments."""


def _shift_mix(
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


@dataclasses.dataclass(frozen=True, eq=False)
class Gossip:
    r"""Mixing with a fixed matrix ``W`` along the agent axis, in local view.

    Build it on the host with :func:`gossip`. Inside ``jax.shard_map`` over the
    agent axis, ``mix(tree)`` returns ``W @ tree`` along the agent axis (row ``i``
    of the result is :math:`\sum_j w_{ij}\, \text{tree}_j`) and ``mean(tree)`` is
    the average over all agents. The same operator serves a row-stochastic pull
    ``R`` or a column-stochastic push ``C`` of a directed graph.

    Attributes:
      matrix: the ``(n, n)`` float64 mixing matrix.
      path: ``"shift"`` (neighbour exchange) or ``"dense"`` (all-gather).
      offsets: the offsets ``s`` of the shift decomposition.
      coeffs: ``(len(offsets), n)`` coefficients ``c_s``.
      auto: the path was chosen by ``gossip(path="auto")``; then on a single device
        (no communication at all) :meth:`mix` may take the dense path for large
        leaves (see :meth:`path_on`).
    """

    matrix: np.ndarray
    path: Literal["shift", "dense"]
    offsets: tuple[int, ...]
    coeffs: np.ndarray
    auto: bool = False

    @property
    def n_agents(self) -> int:
        """Number of agents ``n``."""
        return self.matrix.shape[0]

    @property
    def max_out_degree(self) -> int:
        """Largest number of other agents one agent sends to."""
        off = (self.matrix != 0.0) & ~np.eye(self.n_agents, dtype=bool)
        return int(off.sum(axis=0).max(initial=0))

    def path_on(self, n_devices: int, leaf_bytes: int | None = None) -> Literal["shift", "dense"]:
        """The path :meth:`mix` takes for a leaf of ``leaf_bytes`` bytes (all agents).

        With ``path="auto"`` on a single device a leaf of at least
        :data:`SINGLE_DEVICE_DENSE_MIN_BYTES` (``None``: assume it is) goes dense when
        ``|S| * SINGLE_DEVICE_DENSE_RATIO > n``; otherwise :attr:`path`.
        """
        big = leaf_bytes is None or leaf_bytes >= SINGLE_DEVICE_DENSE_MIN_BYTES
        many = len(self.offsets) * SINGLE_DEVICE_DENSE_RATIO > self.n_agents
        return "dense" if self.auto and n_devices == 1 and big and many else self.path

    def mix(self, tree: PyTree) -> PyTree:
        """Returns ``W @ tree`` along the agent axis (local view).

        Args:
          tree: pytree of this device's block, every leaf of shape ``(b, ...)``.

        Returns:
          A pytree of the same structure, shapes and dtypes.
        """
        return jax.tree.map(self._mix_leaf, tree)

    def mix_if(self, send: jax.Array, tree: PyTree) -> PyTree:
        """:meth:`mix` where ``send`` is true, else ``tree`` with nothing exchanged.

        See :func:`mix_if`.

        Args:
          send: bool scalar, the same on every device.
          tree: pytree of this device's block, leaves ``(b, ...)``.
        """
        return mix_if(self.mix, send, tree)

    def _mix_leaf(self, x: jax.Array) -> jax.Array:
        block = x.shape[0]
        n_devices = jax.lax.axis_size(AGENT_AXIS)
        if block * n_devices != self.n_agents:
            raise ValueError(
                f"mixing matrix is for n_agents={self.n_agents} but the agent axis holds "
                f"{block} agents on each of {n_devices} devices ({block * n_devices} agents)."
            )
        if self.path_on(n_devices, x.size * x.dtype.itemsize) == "dense":
            # All-gather the agent axis, then this device's rows of W. HIGHEST keeps
            # TPU matmuls in full precision, so both paths agree to rounding.
            full = jax.lax.all_gather(x, AGENT_AXIS, tiled=True)
            rows = _local_rows(self.matrix.T, block, x.dtype).T
            return jnp.tensordot(rows, full, axes=1, precision=jax.lax.Precision.HIGHEST)
        # A coefficient row shared by every agent (circulant graphs) is a scalar.
        coeffs = [
            row[0].item() if np.all(row == row[0]) else c
            for row, c in zip(self.coeffs, _local_rows(self.coeffs, block, x.dtype), strict=True)
        ]
        return _shift_mix(x, self.offsets, coeffs, n_devices)

    def mean(self, tree: PyTree) -> PyTree:
        """Average over all agents (the server's mean), local view.

        Args:
          tree: pytree of this device's block, leaves ``(b, ...)``.

        Returns:
          A pytree of leaves ``(...)`` (agent axis removed), the same on every device.
        """
        n = self.n_agents
        return jax.tree.map(lambda x: jax.lax.psum(jnp.sum(x, axis=0), AGENT_AXIS) / n, tree)

    def average(self, tree: PyTree) -> PyTree:
        """The all-agent average handed back to every agent (local view).

        Like :meth:`mean` but keeps the agent axis: every leaf ``(b, ...)`` comes
        back as ``b`` copies of the average, typed as varying over the agent axis
        so it can replace per-agent state inside a ``lax.scan``.
        """
        means = self.mean(tree)
        return jax.tree.map(
            lambda m, x: as_varying(jnp.broadcast_to(m, x.shape)),
            means,
            tree,
        )

    def bytes_per_mix(self, tree: PyTree) -> int:
        """Bytes each agent sends in one :meth:`mix` of ``tree`` (local view shapes).

        Counted as one broadcast of the agent's vector to its neighbours (the
        convention of the papers: "1 vector per agent per iteration"); zero when
        ``W`` has no off-diagonal entries.
        """
        return _bytes_per_agent(tree) if self.max_out_degree else 0

    def bytes_per_mean(self, tree: PyTree) -> int:
        """Bytes each agent uploads in one :meth:`mean` of ``tree`` (one vector)."""
        return _bytes_per_agent(tree)


def mix_if(mix: Callable[[PyTree], PyTree], send: jax.Array, tree: PyTree) -> PyTree:
    """``mix(tree)`` if ``send``, else ``tree``, with the exchange inside ``lax.cond``.

    For a message whose result a method would discard (a tracker's first step): the
    skipped branch runs no collective, so nothing is exchanged, and a compressed
    operator's memory is not advanced. All devices must evaluate the same ``send``
    (derive it from a counter every agent advances together), as for any collective
    inside ``lax.cond`` (see :mod:`algos.federated`).

    Args:
      mix: the operator's mix, ``tree -> tree``.
      send: bool scalar.
      tree: pytree of this device's block, leaves ``(b, ...)``.

    Returns:
      ``mix(tree)`` or ``tree``.
    """
    return jax.lax.cond(send, mix, lambda t: t, tree)


AUTO_SHIFT_MIN_OFFSETS = 8
"""``"auto"`` takes the shift path for up to ``max(AUTO_SHIFT_MIN_OFFSETS, n // 4)`` offsets."""


def auto_path(n_offsets: int, n_agents: int) -> Literal["shift", "dense"]:
    """The path ``path="auto"`` picks for a graph, before any single-device adjustment.

    Shift when the graph has at most ``max(8, n // 4)`` distinct offsets (a shift
    costs ``|S|`` received rows per agent, the dense all-gather ``n``), dense otherwise.

    Args:
      n_offsets: number of distinct shift offsets ``|S|`` (self-loops included).
      n_agents: number of agents ``n``.
    """
    return "shift" if n_offsets <= max(AUTO_SHIFT_MIN_OFFSETS, n_agents // 4) else "dense"


def gossip(
    w: np.ndarray, *, path: Path = "auto", symmetric: bool = True, doubly_stochastic: bool = True
) -> Gossip:
    """Builds a gossip operator from a mixing matrix, validating it first.

    Args:
      w: ``(n, n)`` mixing matrix.
      path: ``"shift"`` for neighbour exchange (cost ``O(#offsets)`` rows per
        agent), ``"dense"`` for all-gather plus matmul (cost ``O(n)``), or
        ``"auto"``: shift when the graph has at most ``max(8, n // 4)`` distinct
        offsets, dense otherwise; and on a single device, for leaves of 4 MiB or
        more, dense as soon as ``8 * #offsets > n`` (:data:`SINGLE_DEVICE_DENSE_RATIO`).
      symmetric: require ``W == W.T`` (undirected graphs).
      doubly_stochastic: require rows and columns to sum to one. Pass ``False``
        for a row- or column-stochastic directed operator, which is then only
        checked for shape and finiteness.

    Returns:
      A :class:`Gossip`.

    Raises:
      ValueError: if ``W`` is not a valid mixing matrix (the message names the
        offending entry) or ``path`` is unknown.
    """
    if path not in ("auto", "shift", "dense"):
        raise ValueError(f"path must be 'auto', 'shift' or 'dense', got {path!r}.")
    if scipy.sparse.issparse(w):  # Entry conversion only; the operator is still dense.
        w = w.toarray()
    if doubly_stochastic:
        w = weights_lib.check_mixing_matrix(w, symmetric=symmetric)
    else:
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != w.shape[1] or not np.all(np.isfinite(w)):
            raise ValueError(f"W must be a finite square (n, n) matrix, got shape {w.shape}.")
    offsets, coeffs = _shift_decomposition(w)
    auto = path == "auto"
    if auto:
        path = auto_path(len(offsets), w.shape[0])
    return Gossip(matrix=w, path=path, offsets=offsets, coeffs=coeffs, auto=auto)
