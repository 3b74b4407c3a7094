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
path: all-gather the agent axis and multiply by this device's rows of ``W``, read as
neighbour lists (:func:`core.gossip_kernels.ell_mix`). A local graph relabelled to a
small band (``gossip(w, order="rcm")``, :mod:`core.relabel`) takes the **halo** path:
each device receives only the ``lo`` / ``hi`` boundary rows of the two devices beside
it (:func:`core.gossip_kernels.halo_mix`). The ``"auto"`` path picks by the number of
offsets and the band (see :func:`auto_path`); :meth:`Gossip.describe` states the
choice and the bytes each device sends.

**Scale.** ``W`` may be a dense array or a ``scipy.sparse`` matrix; everything on the
host is read from its COO form in O(nnz) (the shift table in O(|S| n), built only
for the shift path). Per-agent coefficients are :class:`core.operator_tables.AgentTable`\ s
that :class:`core.loop.Runner` passes to its program sharded on the agent axis, so no
program holds an ``n``-sized constant and compile time does not grow with ``n``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from decentjax.core import gossip_kernels, gossip_tables, relabel
from decentjax.core import sparse as sparse_lib
from decentjax.core import weights as weights_lib
from decentjax.core.mesh import AGENT_AXIS, as_varying
from decentjax.core.operator_tables import AgentTable

PyTree = Any
Path = Literal["auto", "shift", "dense", "halo"]


def tree_bytes(tree: PyTree) -> int:
    """Bytes of a pytree's array leaves (their static shapes and dtypes)."""
    return sum(
        math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)
    )


def _bytes_per_agent(tree: PyTree) -> int:
    """Bytes of one agent's slice of a local-view pytree (leading axis dropped)."""
    return tree_bytes(
        jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), tree)
    )


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


@dataclasses.dataclass(frozen=True, eq=False)
class Gossip:
    r"""Mixing with a fixed matrix ``W`` along the agent axis, in local view.

    Build it on the host with :func:`gossip`. Inside ``jax.shard_map`` over the
    agent axis, ``mix(tree)`` returns ``W @ tree`` along the agent axis (row ``i``
    of the result is :math:`\sum_j w_{ij}\, \text{tree}_j`) and ``mean(tree)`` is
    the average over all agents. The same operator serves a row-stochastic pull
    ``R`` or a column-stochastic push ``C`` of a directed graph.

    Attributes:
      matrix: the ``(n, n)`` float64 mixing matrix in the operator's labels: a NumPy
        array if ``W`` was given dense, else a ``scipy.sparse`` CSR array.
      path: ``"shift"`` (shifted diagonals), ``"halo"`` (band exchange with the two
        adjacent devices) or ``"dense"`` (all-gather).
      offsets: the offsets ``s`` of the shift decomposition.
      auto: the path was chosen by ``gossip(path="auto")``; then on a single device
        (no communication at all) :meth:`mix` may take the dense path for large
        leaves (see :meth:`path_on`).
      order: ``None``, or the relabelling: position ``k`` holds the user's agent
        ``order[k]`` (see :mod:`core.relabel`; ``matrix`` is already relabelled).
      band: ``(lo, hi)``, every entry has ``-lo <= j - i <= hi`` (cyclically).
      neighbours: per-agent neighbour lists ``(cols, vals)``, each ``(n, K)``
        (the dense and halo paths).
      rows: ``W``'s rows as a table ``(n, n)`` when ``W`` is nearly full (``4 K > n``)
        or small (:data:`DENSE_ROWS_MAX_N`), where a matmul beats neighbour lists;
        else ``None``.
      shift_uniform: per offset, its coefficient when every agent shares it
        (circulant graphs), else ``None``.
      shift_table: ``(n, #non-uniform offsets)`` coefficients of the shift path.
    """

    matrix: Any
    path: Literal["shift", "dense", "halo"]
    offsets: tuple[int, ...]
    auto: bool = False
    order: np.ndarray | None = None
    band: tuple[int, int] = (0, 0)
    neighbours: tuple[AgentTable, AgentTable] | None = None
    rows: AgentTable | None = None
    shift_uniform: tuple[float | None, ...] = ()
    shift_table: AgentTable | None = None

    @property
    def n_agents(self) -> int:
        """Number of agents ``n``."""
        return self.matrix.shape[0]

    @property
    def coeffs(self) -> np.ndarray:
        """``(len(offsets), n)`` coefficients ``c_s`` (host, built on each access)."""
        return sparse_lib.shift_decomposition(self.matrix)[1]

    @property
    def max_out_degree(self) -> int:
        """Largest number of other agents one agent sends to."""
        return gossip_tables.max_out_degree(self.matrix)

    def path_on(
        self, n_devices: int, leaf_bytes: int | None = None, block: int | None = None
    ) -> Literal["shift", "dense", "halo"]:
        """The path :meth:`mix` takes for a leaf of ``leaf_bytes`` bytes (all agents).

        With ``path="auto"`` on a single device a leaf of at least
        :data:`SINGLE_DEVICE_DENSE_MIN_BYTES` (``None``: assume it is) goes dense when
        ``|S| * SINGLE_DEVICE_DENSE_RATIO > n``. The halo path falls back to dense
        when a halo is wider than the ``block`` of agents on a device. Otherwise
        :attr:`path`.
        """
        block = self.n_agents // n_devices if block is None else block
        if self.path == "halo":
            return "halo" if max(self.band) <= block else "dense"
        big = leaf_bytes is None or leaf_bytes >= SINGLE_DEVICE_DENSE_MIN_BYTES
        many = len(self.offsets) * SINGLE_DEVICE_DENSE_RATIO > self.n_agents
        return "dense" if self.auto and n_devices == 1 and big and many else self.path

    def rows_sent(self, n_devices: int) -> int:
        """Rows of the agent axis each device sends in one :meth:`mix` (per leaf)."""
        if n_devices == 1:
            return 0
        block = self.n_agents // n_devices
        path = self.path_on(n_devices)
        if path == "halo":
            return sum(self.band)
        if path == "dense":
            return block * (n_devices - 1)  # an all-gather: the block to every other device
        return shift_rows_sent(self.offsets, block, n_devices)

    def describe(self, n_devices: int, row_bytes: int = 4) -> str:
        """One line: the path taken on ``n_devices`` and the bytes each device sends.

        Args:
          n_devices: devices on the agent axis.
          row_bytes: bytes of one agent's row (``d * itemsize``).
        """
        path = self.path_on(n_devices)
        detail = {
            "shift": f"{len(self.offsets)} offsets",
            "halo": f"halo rows lo={self.band[0]}, hi={self.band[1]}",
            "dense": "all-gather",
        }[path]
        fell = " (halo wider than a block)" if path != self.path else ""
        relabelled = ", relabelled" if self.order is not None else ""
        sent = self.rows_sent(n_devices)
        return (
            f"gossip n={self.n_agents} on {n_devices} devices: {path} path{fell} "
            f"({detail}{relabelled}); each device sends {sent} rows = {sent * row_bytes} "
            f"bytes per gossip (all-gather: {self.n_agents // n_devices * (n_devices - 1)} rows)"
        )

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
        relabel.check_layout(self.order)  # inside a Runner: its order must be this one
        block = x.shape[0]
        n_devices = jax.lax.axis_size(AGENT_AXIS)
        if block * n_devices != self.n_agents:
            raise ValueError(
                f"mixing matrix is for n_agents={self.n_agents} but the agent axis holds "
                f"{block} agents on each of {n_devices} devices ({block * n_devices} agents)."
            )
        path = self.path_on(n_devices, x.size * x.dtype.itemsize, block)
        if path == "shift":
            local = None if self.shift_table is None else self.shift_table.local(block)
            coeffs, k = [], 0
            for c in self.shift_uniform:
                if c is None:
                    coeffs.append(local[:, k].astype(x.dtype))
                    k += 1
                else:
                    coeffs.append(c)
            return gossip_kernels.shift_mix(x, self.offsets, coeffs, n_devices)
        if path == "dense" and self.rows is not None:
            # All-gather, then this device's rows of W (a sharded argument, not a
            # constant). HIGHEST keeps TPU matmuls in full precision.
            full = jax.lax.all_gather(x, AGENT_AXIS, tiled=True)
            rows = self.rows.local(block).astype(x.dtype)
            return jnp.tensordot(rows, full, axes=1, precision=jax.lax.Precision.HIGHEST)
        cols, vals = (t.local(block) for t in self.neighbours)
        vals = vals.astype(x.dtype)
        if path == "halo":
            return gossip_kernels.halo_mix(x, cols, vals, *self.band, self.n_agents)
        return gossip_kernels.ell_mix(x, cols, vals)

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


def shift_rows_sent(offsets: tuple[int, ...], block: int, n_devices: int) -> int:
    """Rows each device sends on the shift path (:func:`core.gossip_kernels.shift_mix`).

    Offset ``s = q b + r`` takes ``b - r`` rows from ``q`` devices ahead and ``r`` from
    ``q + 1`` ahead; rows from this device itself are not sent.
    """
    sent = 0
    for s in offsets:
        q, r = divmod(s, block)
        sent += (block - r) * (q % n_devices != 0) + r * ((q + 1) % n_devices != 0)
    return sent


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


DENSE_ROWS_MAX_N = 1024
"""Up to this many agents (8 MiB of float64 rows) the dense path multiplies by rows of ``W``.

A matmul of this device's rows with the all-gathered block beats ``K`` gathers when the
block is large and ``n`` small (the single-device ``"auto"`` case measured at
:data:`SINGLE_DEVICE_DENSE_RATIO`); above it, or unless ``W`` is nearly full
(``4 K > n``), the dense path reads neighbour lists, O(nnz).
"""

AUTO_SHIFT_MIN_OFFSETS = 8
"""``"auto"`` takes the shift path for up to ``max(AUTO_SHIFT_MIN_OFFSETS, n // 4)`` offsets."""

AUTO_HALO_DEVICES = 8
"""``"auto"`` takes the halo path when a halo fits the block of this many devices."""


def auto_path(
    n_offsets: int, n_agents: int, band: tuple[int, int] | None = None
) -> Literal["shift", "dense", "halo"]:
    """The path ``path="auto"`` picks for a graph, before any single-device adjustment.

    Shift when the graph has at most :data:`AUTO_SHIFT_MIN_OFFSETS` distinct offsets
    (circulant graphs: slices, no gather). Otherwise halo when ``band`` is given and
    both halos fit in a block of ``n / 8`` agents (:data:`AUTO_HALO_DEVICES`; a
    device then sends ``lo + hi`` rows, fewer than any other path). Otherwise shift
    up to ``max(8, n // 4)`` offsets (a shift costs ``|S|`` received rows per agent,
    the all-gather ``n``), dense beyond.

    Args:
      n_offsets: number of distinct shift offsets ``|S|`` (self-loops included).
      n_agents: number of agents ``n``.
      band: the halo widths ``(lo, hi)`` (:func:`core.relabel.band`), or ``None``.
    """
    if n_offsets <= AUTO_SHIFT_MIN_OFFSETS:
        return "shift"
    if band is not None and max(band) <= n_agents // AUTO_HALO_DEVICES:
        return "halo"
    return "shift" if n_offsets <= max(AUTO_SHIFT_MIN_OFFSETS, n_agents // 4) else "dense"


def gossip(
    w: Any,
    *,
    path: Path = "auto",
    symmetric: bool = True,
    doubly_stochastic: bool = True,
    order: Literal["rcm"] | np.ndarray | None = None,
) -> Gossip:
    """Builds a gossip operator from a mixing matrix, validating it first.

    Args:
      w: ``(n, n)`` mixing matrix: a dense array or a ``scipy.sparse`` matrix (then
        nothing ``n x n`` is ever built: host cost O(nnz), plus O(|S| n) on the
        shift path).
      path: ``"shift"`` for neighbour exchange by shifted diagonals (cost
        ``O(#offsets)`` rows per agent), ``"halo"`` for the band exchange with the
        two adjacent devices (``lo + hi`` rows per device; see ``order``),
        ``"dense"`` for all-gather plus this device's rows (cost ``O(n)``), or
        ``"auto"`` (:func:`auto_path`); and on a single device, for leaves of 4 MiB
        or more, dense as soon as ``8 * #offsets > n`` (:data:`SINGLE_DEVICE_DENSE_RATIO`).
      symmetric: require ``W == W.T`` (undirected graphs).
      doubly_stochastic: require rows and columns to sum to one. Pass ``False``
        for a row- or column-stochastic directed operator, which is then only
        checked for shape and finiteness.
      order: relabel the agents first (:mod:`core.relabel`): ``"rcm"`` (reverse
        Cuthill–McKee of ``W``'s support) or a permutation of ``0..n-1``. The operator then mixes
        arrays laid out in that order: build the :class:`core.loop.Runner` with
        ``order=op.order`` and give it per-agent inputs in the user's order through
        ``runner.shard_agents``; ``runner.params(state)`` / ``runner.to_user`` return
        outputs in the user's order (a Runner of another order refuses the operator).

    Returns:
      A :class:`Gossip`.

    Raises:
      ValueError: if ``W`` is not a valid mixing matrix (the message names the
        offending entry), ``path`` is unknown or ``order`` is not a permutation.
    """
    if path not in ("auto", "shift", "dense", "halo"):
        raise ValueError(f"path must be 'auto', 'shift', 'dense' or 'halo', got {path!r}.")
    if doubly_stochastic:
        w = weights_lib.check_mixing_matrix(w, symmetric=symmetric)
    else:
        w = weights_lib._as_square_float(w)  # the shape and dtype check, either format
        if not np.all(np.isfinite(w.data if sp.issparse(w) else w)):
            raise ValueError(
                f"W must be a finite square (n, n) matrix; it holds non-finite entries "
                f"(shape {w.shape})."
            )
    n = w.shape[0]
    if order is not None:
        if isinstance(order, str) and order == "rcm":
            order = relabel.reverse_cuthill_mckee(w)
        order = relabel.check_order(order, n)
        w = relabel.permute(w, order)
    coo = sp.coo_array(w)
    nonzero = coo.data != 0.0
    rows, cols = coo.row[nonzero].astype(np.int64), coo.col[nonzero].astype(np.int64)
    offsets = tuple(int(s) for s in np.unique((cols - rows) % n))
    band = relabel.band(rows, cols, n)
    auto = path == "auto"
    if auto:
        path = auto_path(len(offsets), n, band)
    fields: dict[str, Any] = {}
    if path == "shift":
        _, coeffs = sparse_lib.shift_decomposition(coo)
        uniform = [bool(np.all(row == row[0])) for row in coeffs]
        fields["shift_uniform"] = tuple(
            float(row[0]) if u else None for row, u in zip(coeffs, uniform, strict=True)
        )
        varying = coeffs[[not u for u in uniform]]
        if len(varying):
            table = np.ascontiguousarray(varying.T)
            fields["shift_table"] = AgentTable(table, "shift coefficients")
    nbr_cols, nbr_vals = gossip_tables.neighbour_lists(coo)
    fields["neighbours"] = (
        AgentTable(nbr_cols, "neighbour columns"),
        AgentTable(nbr_vals, "neighbour weights"),
    )
    if 4 * nbr_cols.shape[1] > n or n <= DENSE_ROWS_MAX_N:
        fields["rows"] = AgentTable(np.asarray(sp.csr_array(coo).toarray()), "rows of W")
    return Gossip(matrix=w, path=path, offsets=offsets, auto=auto, order=order, band=band, **fields)
