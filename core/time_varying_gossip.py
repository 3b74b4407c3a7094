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
import math
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core import comm, gossip_kernels, gossip_tables, operator_context, relabel
from decentjax.core.comm import Gossip
from decentjax.core.mesh import AGENT_AXIS, local_positions
from decentjax.core.operator_tables import AgentTable

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


class _Round(NamedTuple):
    """What the operator knows of the current round inside a traced step."""

    index: jax.Array  # int32, scalar or per agent (b,): the round k.
    key: jax.Array  # The round's key, the same on every device.


@dataclasses.dataclass(frozen=True, eq=False)
class TimeVaryingGossip:
    r"""Gossip with a matrix :math:`W_k` that changes every round (local view).

    Build with :func:`~core.time_varying.link_failures` or
    :func:`~core.time_varying.sequence`; use ``mix`` only inside a method wrapped by
    :func:`~core.time_varying.time_varying` (or inside :meth:`in_round`). ``mean``,
    ``average`` and ``bytes_per_mean`` are the server operations of the nominal
    operator and need no round.

    Attributes:
      kind: ``"symmetric"``, ``"pull"`` or ``"push"`` (link failures) or
        ``"sequence"``.
      base: the nominal operator: the failure-free base for link failures; for a
        sequence, the period average :math:`\frac1T \sum_k W_k` (its support is the
        union graph, which is what connectivity checks need).
      path: ``"shift"`` (neighbour exchange) or ``"dense"`` (all-gather).
      offsets: the shift offsets :math:`S` shared by every round (0 included).
      coeffs: ``(T, len(offsets), n)``: per-round coefficient tables; ``T = 1``
        (the base's) for link failures, where the round's draws modify them.
      out_coeffs: for ``push``, ``(len(offsets), n)`` with entry ``[s, j]`` the
        weight :math:`w_{(j - s) \bmod n,\, j}` of sender ``j``'s out-edge at
        offset ``s``; ``None`` otherwise.
      p: failure probability per edge and round (0 for a sequence).
      matrices: the sequence's ``T`` matrices (for link failures, the base matrix).
      tables: ``coeffs`` and ``out_coeffs`` agent-major, ``(n, T, |S|)`` and
        ``(n, |S|)``, as :class:`~core.operator_tables.AgentTable`\ s (set at
        construction: the compiled program gets them as sharded arguments, not as
        ``n``-sized constants).
    """

    kind: Kind
    base: Gossip
    path: Literal["shift", "dense"]
    offsets: tuple[int, ...]
    coeffs: np.ndarray
    out_coeffs: np.ndarray | None
    p: float
    matrices: tuple[np.ndarray, ...]
    tables: tuple[AgentTable, AgentTable | None] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        per_agent = np.ascontiguousarray(np.moveaxis(self.coeffs, 2, 0))
        coeffs = AgentTable(per_agent, "round coefficients")
        out = None
        if self.out_coeffs is not None:
            out = AgentTable(np.ascontiguousarray(self.out_coeffs.T), "out-edge coefficients")
        # Host-side, once, at construction (a frozen dataclass sets derived fields so).
        object.__setattr__(self, "tables", (coeffs, out))

    @property
    def matrix(self) -> np.ndarray:
        """The nominal ``(n, n)`` matrix (see ``base``)."""
        return self.base.matrix

    @property
    def n_agents(self) -> int:
        """Number of agents ``n``."""
        return self.base.n_agents

    @property
    def period(self) -> int | None:
        """``T`` for a sequence, ``None`` for link failures (no period)."""
        return len(self.matrices) if self.kind == "sequence" else None

    @property
    def max_out_degree(self) -> int:
        """Largest number of other agents one agent sends to in any single round."""
        return max(gossip_tables.max_out_degree(m) for m in self.matrices)  # O(nnz)

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
        relabel.check_layout(self.base.order)  # inside a Runner: its order must be this one
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
        ids = local_positions(block)
        # The round's draws once per call, its coefficients once per dtype, shared by
        # all leaves (not cached across calls: a call may sit inside a cond or scan).
        masks = self._failure_masks(current, ids)
        coeffs: dict[Any, jax.Array] = {}

        def leaf(x: jax.Array) -> jax.Array:
            if x.dtype not in coeffs:
                coeffs[x.dtype] = self._local_coeffs(current, ids, masks, x.dtype)
            return self._mix_leaf(x, ids, coeffs[x.dtype])

        return jax.tree.map(leaf, tree)

    def mix_if(self, send: jax.Array, tree: PyTree) -> PyTree:
        """:meth:`mix` where ``send`` is true, else ``tree`` with nothing exchanged.

        See :func:`core.comm.mix_if`.

        Args:
          send: bool scalar, the same on every device.
          tree: pytree of this device's block, leaves ``(b, ...)``.
        """
        return comm.mix_if(self.mix, send, tree)

    def _failure_masks(self, current: _Round, ids: jax.Array) -> tuple[jax.Array, jax.Array] | None:
        """This round's failed links of the agents ``ids``, each ``(len(offsets), b)``.

        The first mask marks agent ``i``'s in-edge from ``i + s``; the second (``push``
        only) its out-edge to ``i - s``. ``None`` for a sequence.
        """
        if self.kind == "sequence":
            return None
        n, key = self.n_agents, current.key
        threshold = jnp.uint32(min(math.floor(self.p * 2**32), 2**32 - 1))
        offsets = np.asarray(self.offsets, np.int32)[:, None]
        off_diagonal = jnp.asarray(offsets != 0)
        receivers = jnp.broadcast_to(ids[None, :], (len(self.offsets), ids.shape[0]))
        senders = (ids[None, :] + offsets) % n
        if self.kind == "symmetric":
            a, b = jnp.minimum(receivers, senders), jnp.maximum(receivers, senders)
        else:
            a, b = receivers, senders
        failed = _draw_edges(key, a, b, threshold) & off_diagonal
        if self.kind != "push":
            return failed, failed
        # Sender j draws the failure of its out-edge j -> j - s itself, with the same
        # (receiver, sender) pair as the receiver j - s did.
        out_failed = _draw_edges(key, (ids[None, :] - offsets) % n, receivers, threshold)
        return failed, out_failed & off_diagonal

    def _local_coeffs(
        self,
        current: _Round,
        ids: jax.Array,
        masks: tuple[jax.Array, jax.Array] | None,
        dtype: Any,
    ) -> jax.Array:
        """This round's ``c_s[i]`` for the agents ``ids``: shape ``(len(offsets), b)``."""
        coeff_table, out_table = self.tables
        block = ids.shape[0]
        table = jnp.moveaxis(coeff_table.local(block).astype(dtype), 0, 2)  # (T, |S|, b)
        if masks is None:
            period = table.shape[0]
            index = jnp.broadcast_to(current.index, ids.shape) % period
            # Each agent reads its own round's column (all agents share the round).
            return jax.vmap(lambda k, col: col[k], in_axes=(0, 2), out_axes=1)(index, table)
        c, zero = table[0], jnp.zeros((), dtype)
        failed, out_failed = masks
        if self.kind == "push":
            # Sender j keeps the weights of its failed out-edges (per-agent table).
            out_coeffs = out_table.local(block).astype(dtype).T  # (|S|, b)
            lost = jnp.where(out_failed, out_coeffs, zero)
        else:
            # Pull: the receiver i keeps w_ij. Symmetric: w_ji = w_ij and the draw is
            # shared, so this row rule is also the column rule.
            lost = jnp.where(failed, c, zero)
        kept = jnp.where(failed, zero, c)
        return kept.at[self.offsets.index(0)].add(jnp.sum(lost, axis=0))

    def _mix_leaf(self, x: jax.Array, ids: jax.Array, coeffs: jax.Array) -> jax.Array:
        block = x.shape[0]
        n_devices = jax.lax.axis_size(AGENT_AXIS)
        if self.path == "dense":
            # This device's rows of W_k, scattered from the |S| coefficients per agent,
            # then the all-gather reference path of core.comm.
            offsets = np.asarray(self.offsets, np.int32)[:, None]
            cols = (ids[None, :] + offsets) % self.n_agents
            rows = jnp.broadcast_to(jnp.arange(block, dtype=cols.dtype)[None, :], cols.shape)
            local = jnp.zeros((block, self.n_agents), x.dtype).at[rows, cols].add(coeffs)
            full = jax.lax.all_gather(x, AGENT_AXIS, tiled=True)
            return jnp.tensordot(local, full, axes=1, precision=jax.lax.Precision.HIGHEST)
        return gossip_kernels.shift_mix(x, self.offsets, list(coeffs), n_devices)

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
