r"""A token walking the graph, in local view: the holder's rows and the walk's next draw.

Token (random-walk) methods keep one model that sits at one agent at a time. In
decentjax's layout (each agent a slice of a sharded array) the token is a pytree that
every device holds a copy of, plus the index of the agent holding it. One step of such
a method needs two collectives, both here so that algorithms stay collective-free:

* :func:`from_holder`: the holder's value (its gradient on its own minibatch) on every
  device: each device picks the holder's row if the holder is in its block, zeros
  otherwise, and a ``psum`` over the agent axis adds one value to zeros (exact, so the
  result is the same bits on any number of devices). This is a simulation cost (one
  all-reduce of ``d`` floats per step), not the method's communication, which is one
  model sent on one edge.
* :func:`draw_next`: the next holder, a draw from the categorical distribution with
  unnormalised log-weights :math:`\ell_j` spread over the devices' blocks, by the
  Gumbel-max trick: :math:`X^+ = \arg\max_j (\ell_j + G_j)` with
  :math:`G_j` standard Gumbel drawn from ``fold_in(key, j)``, so the draw depends
  only on the key and the weights, never on how agents are split over devices
  (a ``pmax`` and a ``pmin`` of one scalar each).

:func:`transition_table` holds the transition matrix :math:`P` as an
:class:`~core.operator_tables.AgentTable` of its columns (agent ``j``'s row is
:math:`P_{\cdot j}`), so a device reads :math:`P(i, j)` for its own ``j`` and any
holder ``i``, and the compiled program holds no ``n × n`` constant (the table is a
sharded argument: ``n²/D`` floats per device for ``D`` devices).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core.mesh import AGENT_AXIS, local_agent_ids
from decentjax.core.operator_tables import AgentTable

PyTree = Any
WALK_STREAM = 0x7A1C  # folded into the step key before the per-agent Gumbel keys


def stationary_distribution(p: np.ndarray) -> np.ndarray:
    r"""The stationary distribution :math:`\mu` of a row-stochastic irreducible ``p``.

    Args:
      p: ``(n, n)`` transition matrix, rows summing to one.

    Returns:
      :math:`\mu` with :math:`\mu^\top P = \mu^\top`, :math:`\sum_j \mu_j = 1`, float64.

    Raises:
      ValueError: if ``p`` is not square, has negative entries, rows not summing to
        one, or is reducible (some :math:`\mu_j = 0`).
    """
    p = np.asarray(p, np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"the transition matrix must be square, got shape {p.shape}.")
    rows = p.sum(axis=1)
    if np.any(p < 0) or not np.allclose(rows, 1.0, atol=1e-12):
        raise ValueError(
            "the transition matrix must be row-stochastic (non-negative, rows summing to "
            f"1); row sums range over [{rows.min():.6g}, {rows.max():.6g}]."
        )
    n = p.shape[0]
    # mu^T (I - P + 1 1^T) = 1^T: a linear solve, exact for an irreducible chain.
    try:
        mu = np.linalg.solve((np.eye(n) - p + np.ones((n, n))).T, np.ones(n))
    except np.linalg.LinAlgError:  # Singular: more than one closed class.
        mu = np.zeros(n)
    if not np.all(mu > 1e-14):
        raise ValueError(
            "the walk is reducible (its graph is not connected): some stationary "
            f"probabilities are zero, min {mu.min():.3g}."
        )
    return mu / mu.sum()


def transition_table(p: np.ndarray) -> AgentTable:
    """``P`` as a per-agent table of its columns: row ``j`` is :math:`P_{\\cdot j}`."""
    return AgentTable(np.ascontiguousarray(np.asarray(p, np.float64).T), "walk columns")


def holder_mask(holder: jax.Array, block: int) -> jax.Array:
    """``(block,)`` bool: which agents of this device's block hold the token (local view)."""
    return local_agent_ids(block) == holder


def holder_rows(tree: PyTree, here: jax.Array) -> PyTree:
    """Each leaf's row of the holder if it is in this block, else row 0 (a placeholder).

    Args:
      tree: per-agent pytree, leaves ``(b, ...)``.
      here: ``(b,)`` bool from :func:`holder_mask`.
    """
    index = jnp.argmax(here)
    return jax.tree.map(lambda a: a[index], tree)


def from_holder(tree: PyTree, here: jax.Array) -> PyTree:
    """The holder device's ``tree`` (one agent's value, no agent axis) on every device.

    Args:
      tree: a value computed on every device; only the holder's device's counts.
      here: ``(b,)`` bool from :func:`holder_mask`.

    Returns:
      ``tree`` of the device whose block holds the token, the same on every device.
    """
    present = jnp.any(here)
    return jax.tree.map(
        lambda a: jax.lax.psum(jnp.where(present, a, jnp.zeros_like(a)), AGENT_AXIS), tree
    )


def draw_next(key: jax.Array, log_weights: jax.Array) -> jax.Array:
    r"""The next holder: :math:`\arg\max_j (\ell_j + G_j)`, :math:`G_j` Gumbel (local view).

    Args:
      key: the step's key, the same on every device.
      log_weights: ``(b,)`` unnormalised log-probabilities of this block's agents
        (``-inf`` for agents the walk cannot reach); the draw is from their softmax.

    Returns:
      int32 scalar, the same on every device: the drawn agent's global index.
    """
    block = log_weights.shape[0]
    ids = local_agent_ids(block)
    walk_key = jax.random.fold_in(key, WALK_STREAM)
    gumbel = jax.vmap(
        lambda i: jax.random.gumbel(jax.random.fold_in(walk_key, i), dtype=log_weights.dtype)
    )(ids)
    scores = log_weights + gumbel
    best = jax.lax.pmax(jnp.max(scores), AGENT_AXIS)
    big = jnp.iinfo(jnp.int32).max
    candidate = jnp.min(jnp.where(scores == best, ids.astype(jnp.int32), big))
    return jax.lax.pmin(candidate, AGENT_AXIS)
