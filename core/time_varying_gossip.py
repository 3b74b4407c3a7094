r"""The time-varying gossip operator: :math:`W_k` applied on device, round by round.

:class:`TimeVaryingGossip` and the per-round draws it makes; build one with
:func:`core.time_varying.link_failures` or :func:`core.time_varying.sequence` and
run a method over it with :func:`core.time_varying.time_varying`. The module
docstring of :mod:`core.time_varying` states the per-round rules (failure draws,
sequences, bytes) and how the round reaches ``mix``; everything here is re-exported
there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core import (
    comm,
    gossip_kernels,
    gossip_tables,
    operator_context,
    relabel,
    time_varying_tables,
)
from decentjax.core.comm import Gossip
from decentjax.core.mesh import AGENT_AXIS
from decentjax.core.operator_tables import AgentTable
from decentjax.core.time_varying_tables import _draw_edges
from decentjax.core.tree import per_agent

PyTree = Any
Kind = Literal["symmetric", "pull", "push", "sequence"]

# Separates the graph's randomness from the method's own use of the step key.
_ROUND_KEY_TAG = 0x74766772  # "tvgr"


def round_key(step_key: jax.Array) -> jax.Array:
    """The key a step's graph is drawn from: ``fold_in(step_key, tag)``.

    :func:`~core.time_varying.time_varying` hands this key to the operators; tests
    use it to rebuild the round's matrix on the host with
    :func:`~core.time_varying.round_matrix`.
    """
    return jax.random.fold_in(step_key, _ROUND_KEY_TAG)


class _Round(NamedTuple):
    """What the operator knows of the current round inside a traced step."""

    index: jax.Array  # int32, scalar or per agent (b,): the round k.
    key: jax.Array  # The round's key, the same on every device.


@functools.lru_cache(maxsize=16)
def _entry_tables(op: TimeVaryingGossip, n_devices: int) -> tuple[tuple[AgentTable, ...], int, int]:
    """``op``'s entry tables for ``n_devices`` (host, built once per operator and count)."""
    return time_varying_tables.entry_tables(op.matrices, op.order, op.kind == "push", n_devices)


@dataclasses.dataclass(frozen=True, eq=False)
class TimeVaryingGossip:
    r"""Gossip with a matrix :math:`W_k` that changes every round (local view).

    Build with :func:`~core.time_varying.link_failures` or
    :func:`~core.time_varying.sequence`; use ``mix`` only inside a method wrapped by
    :func:`~core.time_varying.time_varying` (or inside :meth:`in_round`). ``mean``,
    ``average`` and ``bytes_per_mean`` are the server operations of the nominal
    operator and need no round.

    Failure draws are keyed by the agents' **user ids** (``order[k]`` at position
    ``k`` of a relabelled operator), read from per-agent tables, so a relabelled run
    draws the same failures and is the same run, in the user's order, as the plain one.

    Attributes:
      kind: ``"symmetric"``, ``"pull"`` or ``"push"`` (link failures) or
        ``"sequence"``.
      base: the nominal operator, in the operator's labels (``base.order``): the
        failure-free base for link failures; for a sequence, the period average
        :math:`\frac1T \sum_k W_k` (its support is the union graph, which is what
        connectivity checks need).
      path: ``"shift"`` (shifted diagonals, few offsets), ``"halo"`` (band exchange
        with the two adjacent devices) or ``"dense"`` (all-gather); the last two read
        the O(nnz) entry tables of :mod:`core.time_varying_tables`.
      offsets: the shift offsets :math:`S` of the union support (0 included).
      p: failure probability per edge and round (0 for a sequence).
      matrices: the ``T`` matrices in the operator's labels (for link failures, the
        base matrix).
      band: ``(lo, hi)`` halo widths of the union support (:func:`core.relabel.band`).
      shift_tables: on the shift path, the :class:`~core.operator_tables.AgentTable`\ s
        of :func:`core.time_varying_tables.shift_tables` (set at construction; the
        compiled program gets them as sharded arguments); else ``()``.
    """

    kind: Kind
    base: Gossip
    path: Literal["shift", "halo", "dense"]
    offsets: tuple[int, ...]
    p: float
    matrices: tuple[Any, ...]
    band: tuple[int, int] = (0, 0)
    shift_tables: tuple[AgentTable, ...] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        tables = ()
        if self.path == "shift":
            tables = time_varying_tables.shift_tables(
                self.matrices, self.offsets, self.order, self.kind == "push"
            )
        # Host-side, once, at construction (a frozen dataclass sets derived fields so).
        object.__setattr__(self, "shift_tables", tables)

    @property
    def matrix(self) -> Any:
        """The nominal ``(n, n)`` matrix (see ``base``)."""
        return self.base.matrix

    @property
    def n_agents(self) -> int:
        """Number of agents ``n``."""
        return self.base.n_agents

    @property
    def order(self) -> np.ndarray | None:
        """The relabelling (``base.order``): position ``k`` holds the user's agent ``order[k]``."""
        return self.base.order

    @property
    def period(self) -> int | None:
        """``T`` for a sequence, ``None`` for link failures (no period)."""
        return len(self.matrices) if self.kind == "sequence" else None

    @property
    def max_out_degree(self) -> int:
        """Largest number of other agents one agent sends to in any single round."""
        return max(gossip_tables.max_out_degree(m) for m in self.matrices)  # O(nnz)

    def path_on(self, n_devices: int) -> Literal["shift", "halo", "dense"]:
        """The path :meth:`mix` takes on ``n_devices``: halo falls back to dense when a
        halo is wider than a block."""
        if self.path == "halo" and max(self.band) > self.n_agents // n_devices:
            return "dense"
        return self.path

    def tables(self, n_devices: int) -> tuple[AgentTable, ...]:
        """The per-agent tables :meth:`mix` reads on ``n_devices`` (host arrays)."""
        if self.path_on(n_devices) == "shift":
            return self.shift_tables
        return _entry_tables(self, n_devices)[0]

    def describe(self, n_devices: int, row_bytes: int = 4) -> str:
        """One line: path, rows each device sends per round, table and buffer memory.

        Args:
          n_devices: devices on the agent axis.
          row_bytes: bytes of one agent's row (``d * itemsize``).
        """
        n, path = self.n_agents, self.path_on(n_devices)
        block = n // n_devices
        tables = self.tables(n_devices)
        table_bytes = sum(t.host.nbytes for t in tables)
        sent = {
            "shift": comm.shift_rows_sent(self.offsets, block, n_devices),
            "halo": sum(self.band),
            "dense": block * (n_devices - 1),
        }[path]
        sent = 0 if n_devices == 1 else sent
        memory = ""
        if path != "shift":
            entries = tables[0].n_agents // n_devices
            source = n if path == "dense" else block + sum(self.band)
            memory = (
                f"; per device a ({source}, d) source and a ({entries}, d) gather of its "
                f"{entries} entries = {(source + entries) * row_bytes} bytes"
            )
        relabelled = ", relabelled" if self.order is not None else ""
        return (
            f"time-varying gossip ({self.kind}) n={n} on {n_devices} devices: {path} path"
            f"{relabelled}; each device sends {sent} rows = {sent * row_bytes} bytes per round; "
            f"tables {table_bytes} bytes{memory}"
        )

    @contextlib.contextmanager
    def in_round(self, round_index: jax.Array | int, key: jax.Array) -> Iterator[None]:
        """Makes ``mix`` apply :math:`W_k` for round ``round_index`` drawn from ``key``.

        Used by :func:`~core.time_varying.time_varying`; call it directly only to apply one round's
        matrix by hand (tests), inside ``jax.shard_map``. The round is bound to this
        operator for the block (:func:`core.operator_context.bind`), not stored on it:
        the operator stays immutable, and nested or concurrent blocks each see their own.

        Args:
          round_index: int32 scalar or per-agent vector ``(b,)`` (all entries equal):
            the round :math:`k`; a sequence uses :math:`W_{k \bmod T}`.
          key: the round's key, the same on every device (for link failures); see
            :func:`round_key`.
        """
        with operator_context.bind(self, _Round(jnp.asarray(round_index, jnp.int32), key)):
            yield

    def mix(self, tree: PyTree) -> PyTree:
        """Returns ``W_k @ tree`` along the agent axis (local view).

        Args:
          tree: pytree of this device's block, every leaf of shape ``(b, ...)``.

        Returns:
          A pytree of the same structure, shapes and dtypes.

        Raises:
          RuntimeError: outside a time-varying step (no round to mix with).
        """
        relabel.check_layout(self.order)  # inside a Runner: its order must be this one
        current = operator_context.bound(self)
        if current is None:
            raise RuntimeError(
                "TimeVaryingGossip.mix was called outside a time-varying step: wrap the "
                "method with core.time_varying.time_varying(algorithm, comm)."
            )
        leaves = jax.tree.leaves(tree)
        if not leaves:
            return tree
        block = leaves[0].shape[0]
        n_devices = jax.lax.axis_size(AGENT_AXIS)
        if block * n_devices != self.n_agents:
            raise ValueError(
                f"the time-varying graph is for n_agents={self.n_agents} but the agent axis "
                f"holds {block} agents on each of {n_devices} devices "
                f"({block * n_devices} agents)."
            )
        if self.path_on(n_devices) == "shift":
            round_coeffs = self._shift_round(current, block)
        else:
            round_coeffs = self._entry_round(current, block, n_devices)
        coeffs: dict[Any, Any] = {}  # once per dtype (not across calls: cond / scan)

        def leaf(x: jax.Array) -> jax.Array:
            if x.dtype not in coeffs:
                coeffs[x.dtype] = round_coeffs(x.dtype)
            return self._mix_leaf(x, coeffs[x.dtype], n_devices)

        return jax.tree.map(leaf, tree)

    def mix_if(self, send: jax.Array, tree: PyTree) -> PyTree:
        """:meth:`mix` where ``send`` is true, else ``tree`` with nothing exchanged.

        See :func:`core.comm.mix_if`.

        Args:
          send: bool scalar, the same on every device.
          tree: pytree of this device's block, leaves ``(b, ...)``.
        """
        return comm.mix_if(self.mix, send, tree)

    def _threshold(self) -> jax.Array:
        return jnp.uint32(min(math.floor(self.p * 2**32), 2**32 - 1))

    def _fails(self, key: jax.Array, receiver: jax.Array, sender: jax.Array) -> jax.Array:
        """Failure of each link ``sender -> receiver`` (user ids); never of a self-loop."""
        receiver, sender = jnp.broadcast_arrays(receiver, sender)
        a, b = receiver, sender
        if self.kind == "symmetric":
            a, b = jnp.minimum(receiver, sender), jnp.maximum(receiver, sender)
        return _draw_edges(key, a, b, self._threshold()) & (receiver != sender)

    def _round_index(self, current: _Round) -> jax.Array:
        return jnp.ravel(current.index)[0] % len(self.matrices)

    def _shift_round(self, current: _Round, block: int):
        """This round's ``c_s[i]`` on the shift path: a function of the dtype, ``(|S|, b)``."""
        coeff_table, id_table, *out_table = self.shift_tables
        table = coeff_table.local(block)  # (b, T, |S|)
        if self.kind == "sequence":
            return lambda dtype: table[:, self._round_index(current)].T.astype(dtype)
        ids = id_table.local(block).T  # (1 + |S| [+ |S|], b)
        n_offsets = len(self.offsets)
        receivers, senders = ids[:1], ids[1 : 1 + n_offsets]
        failed = self._fails(current.key, receivers, senders)
        if self.kind == "push":
            # Sender j draws its out-edge j -> j - s itself and keeps its weight.
            out_failed = self._fails(current.key, ids[1 + n_offsets :], receivers)
            lost_weights, lost_mask = out_table[0].local(block).T, out_failed
        else:
            # Pull: the receiver i keeps w_ij. Symmetric: w_ji = w_ij and the draw is
            # shared, so this row rule is also the column rule.
            lost_weights, lost_mask = table[:, 0].T, failed

        def coeffs(dtype):
            c, zero = table[:, 0].T.astype(dtype), jnp.zeros((), dtype)
            lost = jnp.sum(jnp.where(lost_mask, lost_weights.astype(dtype), zero), axis=0)
            return jnp.where(failed, zero, c).at[self.offsets.index(0)].add(lost)

        return coeffs

    def _entry_round(self, current: _Round, block: int, n_devices: int):
        """This round's entry weights and each agent's kept weight, per dtype."""
        tables, width, out_width = _entry_tables(self, n_devices)
        entries, vals = tables[0].local(width), tables[1].local(width)
        rows = entries[:, 0]
        if self.kind == "sequence":
            weight = vals[:, self._round_index(current)]
            return lambda dtype: (entries, weight.astype(dtype), None)
        failed = self._fails(current.key, entries[:, 2], entries[:, 3])
        if self.kind == "push":
            out, out_vals = tables[2].local(out_width), tables[3].local(out_width)
            out_failed = self._fails(current.key, out[:, 1], out[:, 2])
            lost_rows, lost_weights, lost_mask = out[:, 0], out_vals, out_failed
        else:
            lost_rows, lost_weights, lost_mask = rows, vals[:, 0], failed

        def coeffs(dtype):
            zero = jnp.zeros((), dtype)
            kept = jnp.where(failed, zero, vals[:, 0].astype(dtype))
            lost = jnp.where(lost_mask, lost_weights.astype(dtype), zero)
            return entries, kept, jax.ops.segment_sum(lost, lost_rows, num_segments=block)

        return coeffs

    def _mix_leaf(self, x: jax.Array, coeffs: Any, n_devices: int) -> jax.Array:
        block = x.shape[0]
        path = self.path_on(n_devices)
        if path == "shift":
            return gossip_kernels.shift_mix(x, self.offsets, list(coeffs), n_devices)
        entries, weight, lost = coeffs
        if path == "halo":
            source, index = gossip_kernels.halo_source(x, entries[:, 1], *self.band, self.n_agents)
        else:
            source, index = jax.lax.all_gather(x, AGENT_AXIS, tiled=True), entries[:, 1]
        out = gossip_kernels.entry_mix(source, index, entries[:, 0], weight, block)
        return out if lost is None else out + per_agent(lost, x) * x

    def mean(self, tree: PyTree) -> PyTree:
        """Average over all agents (the server's mean); no round needed."""
        return self.base.mean(tree)

    def average(self, tree: PyTree) -> PyTree:
        """The all-agent average kept per agent (delegates to ``base``)."""
        return self.base.average(tree)

    def bytes_per_mix(self, tree: PyTree) -> int:
        """Bytes each agent sends in one :meth:`mix`: one broadcast of its vector.

        Counted whether or not its links fail this round (see the module
        docstring); zero when no round has off-diagonal entries.
        """
        return comm._bytes_per_agent(tree) if self.max_out_degree else 0

    def bytes_per_mean(self, tree: PyTree) -> int:
        """Bytes each agent uploads in one :meth:`mean` (one vector)."""
        return self.base.bytes_per_mean(tree)
