r"""Per-edge messages and in-flight ring buffers for the asynchronous methods.

An asynchronous push needs each message separately, not ``W @ X``: it is delayed by
its own random number of ticks. :func:`links` reads a gossip operator's matrix
``M`` (``M[i, j] != 0``: ``j`` sends to ``i``) as **in-edge slots**: slot ``k`` of
agent ``i`` is one sender ``j`` with weight ``M[i, j]``. :meth:`Links.receive` hands
every agent the rows of its senders, ``(b, K, ...)``, with the library's
communication kernels (:mod:`core.gossip_kernels`):

* on the operator's **shift** path a slot is an offset ``s`` (sender ``i + s``):
  one ``ppermute`` pair of block slices per offset, O(degree) rows per agent
  (circulant graphs, and any graph with few distinct offsets);
* otherwise a slot is a column of the padded neighbour list, read from the
  all-gathered block (the dense path: O(n) per agent, the fallback for graphs with
  many distinct offsets).

Messages in flight are held at the **receiver** in a ring buffer :class:`InFlight` of
fixed shape ``(b, K, L, ...)``, ``L > max_delay`` (``AsyncModel.buffer``): a message
sent at tick ``t`` with delay ``δ`` is added to position ``(t + δ) mod L`` of its slot
(:func:`send`), and at tick ``t`` the receiver takes (and clears) position
``t mod L`` (:func:`deliver`). Since ``δ <= L - 1``, a position is read exactly at
the arrival tick of every message it holds: a message is never visible before it
arrives, and none is lost. Messages that arrive at the same tick on the same edge
are summed, as push-sum needs.

**In-order channels** (:func:`in_order_arrival`, the "latest message received" mode):
a method whose messages are differences against references both ends keep (CPP and
B-CPP's compressed messages) needs every message of an edge applied in send order,
one at a time; then a receiver's copy of the sender's reference is exact as of the
latest message it has received. :func:`in_order_arrival` turns the drawn delays into
arrival ticks :math:`a = \max(t + \delta, a_{\text{prev}} + 1)` per edge: a message
never overtakes an earlier one on its edge, at most one arrives per edge and tick, and
still :math:`a \le t + \text{max\_delay}` (by induction, :math:`a_{\text{prev}} \le
t - 1 + \text{max\_delay}`), so the same buffers hold them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from decentjax.core import gossip_kernels
from decentjax.core.comm import Gossip
from decentjax.core.mesh import AGENT_AXIS, as_varying
from decentjax.core.operator_tables import AgentTable

PyTree = Any


@dataclasses.dataclass(frozen=True, eq=False)
class Links:
    """The in-edges of every agent of an operator, as slots (host; read in local view).

    Attributes:
      n_agents: ``n``.
      offsets: on the shift path, slot ``k``'s offset (sender ``(i + s_k) mod n``);
        else ``None``.
      cols: off the shift path, ``(n, K)`` int32 senders (padding: the agent itself
        with weight 0); else ``None``.
      weights: ``(n, K)`` float64 ``M[i, sender]`` (0 where slot ``k`` is no edge).
      self_weight: ``(n,)`` float64 ``M[i, i]``.
    """

    n_agents: int
    offsets: tuple[int, ...] | None
    cols: AgentTable | None
    weights: AgentTable
    self_weight: AgentTable

    @property
    def slots(self) -> int:
        """``K``, the number of in-edge slots per agent."""
        return self.weights.host.shape[1]

    def receive(self, tree: PyTree) -> PyTree:
        """Every agent's senders' rows of ``tree``: leaves ``(b, ...) -> (b, K, ...)``.

        Local view. Rows of a padding slot are the agent's own (its weight is 0).
        """
        n_devices = jax.lax.axis_size(AGENT_AXIS)

        def leaf(x: jax.Array) -> jax.Array:
            block = x.shape[0]
            if block * n_devices != self.n_agents:
                raise ValueError(
                    f"links are for n_agents={self.n_agents} but the agent axis holds "
                    f"{block} agents on each of {n_devices} devices."
                )
            if self.offsets is not None:
                rows = [gossip_kernels.shift_mix(x, (s,), [1.0], n_devices) for s in self.offsets]
            else:
                full = jax.lax.all_gather(x, AGENT_AXIS, tiled=True)
                cols = self.cols.local(block)
                rows = [full[cols[:, k]] for k in range(self.slots)]
            return jnp.stack(rows, axis=1)

        return jax.tree.map(leaf, tree)


def links(op: Gossip) -> Links:
    """The in-edge slots of ``op``'s matrix (see the module docstring).

    Args:
      op: a gossip operator (any path; not relabelled).

    Returns:
      :class:`Links` on the operator's shift path, or neighbour lists otherwise.

    Raises:
      ValueError: if the operator is relabelled (``order`` given) or has no edges.
    """
    if op.order is not None:
        raise ValueError("asynchronous links need an operator without relabelling (order=None).")
    n = op.n_agents
    coo = sp.coo_array(op.matrix)
    keep = coo.data != 0.0
    rows, cols, vals = coo.row[keep], coo.col[keep], coo.data[keep].astype(np.float64)
    diag = rows == cols
    self_weight = np.zeros(n)
    self_weight[rows[diag]] = vals[diag]
    rows, cols, vals = rows[~diag], cols[~diag], vals[~diag]
    if rows.size == 0:
        raise ValueError("the operator's matrix has no off-diagonal entries: nothing to send.")
    if op.path == "shift":
        offsets = tuple(int(s) for s in np.unique((cols - rows) % n))
        slot = np.searchsorted(offsets, (cols - rows) % n)
        weights = np.zeros((n, len(offsets)))
        weights[rows, slot] = vals
        return Links(n, offsets, None, AgentTable(weights, "in-edge weights"), _table(self_weight))
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = np.bincount(rows, minlength=n)
    width = int(counts.max())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(rows.size) - starts[rows]
    senders = np.repeat(np.arange(n, dtype=np.int32)[:, None], width, axis=1)
    weights = np.zeros((n, width))
    senders[rows, slot] = cols
    weights[rows, slot] = vals
    return Links(
        n,
        None,
        AgentTable(senders, "in-edge senders"),
        AgentTable(weights, "in-edge weights"),
        _table(self_weight),
    )


def _table(self_weight: np.ndarray) -> AgentTable:
    return AgentTable(self_weight, "self weights")


class InFlight(NamedTuple):
    """Messages in flight, held at their receivers.

    Attributes:
      messages: leaves ``(b, K, L, ...)``: per in-edge slot and arrival tick modulo
        ``L > max_delay``, the sum of the (weighted) messages due then.
    """

    messages: PyTree


def in_flight_init(links_: Links, tree: PyTree, length: int) -> InFlight:
    """Empty ring buffers of ``length`` ticks for messages shaped like ``tree``'s rows.

    Local view; ``length`` must exceed the largest delay (``AsyncModel.buffer``).
    """

    def leaf(x: jax.Array) -> jax.Array:
        shape = (x.shape[0], links_.slots, length, *x.shape[1:])
        return as_varying(jnp.zeros(shape, x.dtype))

    return InFlight(jax.tree.map(leaf, tree))


def _slot_mask(positions: jax.Array, length: int, x: jax.Array) -> jax.Array:
    """One-hot ``(..., L)`` of ``positions`` broadcast against a buffer leaf ``x``."""
    ticks = jnp.arange(length, dtype=positions.dtype).reshape((1,) * positions.ndim + (length,))
    hot = (positions[..., None] == ticks).astype(x.dtype)
    return hot.reshape(hot.shape + (1,) * (x.ndim - hot.ndim))


def send(
    links_: Links,
    buffer: InFlight,
    received: PyTree,
    weights: jax.Array,
    delay: jax.Array,
    tick: jax.Array,
) -> InFlight:
    """Puts this tick's messages in flight: ``weights * received`` due at ``tick + delay``.

    Local view.

    Args:
      links_: the links the rows came through.
      buffer: the buffers.
      received: :meth:`Links.receive` of what the senders sent, leaves ``(b, K, ...)``.
      weights: ``(b, K)`` per-slot factors (the edge weight times whether the
        sender sent; 0 drops the message).
      delay: ``(b, K)`` int32 delays in ``0 .. L - 1``.
      tick: int32 scalar, the current tick.
    """
    del links_

    def leaf(buf: jax.Array, rows: jax.Array) -> jax.Array:
        length = buf.shape[2]
        due = _slot_mask(jnp.remainder(tick + delay, length), length, buf)
        scaled = weights.astype(rows.dtype).reshape(weights.shape + (1,) * (rows.ndim - 2)) * rows
        return buf + due * scaled[:, :, None]

    return InFlight(jax.tree.map(leaf, buffer.messages, received))


def in_order_arrival(
    last: jax.Array, delay: jax.Array, sent: jax.Array, tick: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""Arrival ticks on in-order channels (see the module docstring).

    Local view. A message sent at ``tick`` with drawn delay :math:`\delta` arrives at
    :math:`a = \max(t + \delta, a_{\text{prev}} + 1)`, :math:`a_{\text{prev}}` the arrival
    tick of the edge's previous message.

    Args:
      last: ``(b, K)`` int32 arrival tick of each edge's previous message (-1 before any).
      delay: ``(b, K)`` int32 drawn delays in ``0 .. max_delay``.
      sent: ``(b, K)`` bool, whether the edge carries a message this tick.
      tick: int32 scalar, the current tick.

    Returns:
      ``(delay, last)``: the effective delays ``a - t`` (in ``0 .. max_delay``) for
      :func:`send`, and the updated arrival ticks.
    """
    arrival = jnp.maximum(tick + delay, last + 1)
    return arrival - tick, jnp.where(sent, arrival, last)


def deliver(buffer: InFlight, tick: jax.Array) -> tuple[PyTree, InFlight]:
    """The messages due at ``tick``, summed over in-edges, and the buffers without them.

    Local view. Returns ``(arrived, buffer)`` with ``arrived`` leaves ``(b, ...)``.
    """

    def leaf(buf: jax.Array) -> tuple[jax.Array, jax.Array]:
        length = buf.shape[2]
        now = _slot_mask(jnp.remainder(tick, length)[None], length, buf[:, 0])[:, None]
        return jnp.sum(buf * now, axis=(1, 2)), buf * (1 - now)

    pairs = jax.tree.map(leaf, buffer.messages)
    outer = jax.tree.structure(buffer.messages)
    inner = jax.tree.structure((0, 0))
    arrived, kept = jax.tree.transpose(outer, inner, pairs)
    return arrived, InFlight(kept)


def in_flight_total(buffer: InFlight) -> PyTree:
    """Each agent's in-flight mass (summed over slots and arrival ticks), leaves ``(b, ...)``."""
    return jax.tree.map(lambda buf: jnp.sum(buf, axis=(1, 2)), buffer.messages)


def self_weight(links_: Links, block: int, like: jax.Array) -> jax.Array:
    """This block's ``M[i, i]`` ``(b,)`` in the dtype of ``like`` (local view)."""
    return links_.self_weight.local(block).astype(like.dtype)


def edge_weights(links_: Links, block: int, like: jax.Array) -> jax.Array:
    """This block's in-edge weights ``(b, K)`` in the dtype of ``like`` (local view)."""
    return links_.weights.local(block).astype(like.dtype)
