"""Round machinery shared by :mod:`algos.federated` (FedAvg family) and :mod:`algos.scaffold`.

Argument checks (``local_steps``, ``participation``, step sizes), step-size lookup at
a step index, per-agent counters, the client draw at a round start (a permutation of
the global agent indices from the round key, identical on 1 or 8 devices) and the
two ``lax.cond`` branches that start or keep a round. The design (rounds counted in
steps, the server mean inside ``lax.cond``, client sampling) is stated in the
docstring of :mod:`algos.federated`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from decentjax.core.mesh import as_varying, local_agent_ids
from decentjax.core.tree import select

PyTree = Any


StepSize = float | optax.Schedule


def _check_local_steps(local_steps: Any) -> int:
    if isinstance(local_steps, bool) or not isinstance(local_steps, numbers.Integral):
        raise ValueError(f"local_steps must be an integer >= 1, got {local_steps!r}.")
    if local_steps < 1:
        raise ValueError(f"local_steps must be an integer >= 1, got {local_steps}.")
    return int(local_steps)


def _num_participants(participation: Any, n_agents: int) -> int:
    """``round(participation * n)`` clients per round, at least one."""
    if (
        isinstance(participation, bool)
        or not isinstance(participation, numbers.Real)
        or not 0.0 < float(participation) <= 1.0
    ):
        raise ValueError(
            f"participation must be a fraction of clients in (0, 1], got {participation!r}."
        )
    return max(1, round(float(participation) * n_agents))


def _check_step_size(value: Any, name: str) -> StepSize:
    """A positive finite float, or an optax schedule (checked when called)."""
    if callable(value):
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ValueError(f"{name} must be a positive float or an optax schedule, got {value!r}.")
    return float(value)


def _at(step_size: StepSize, index: jax.Array) -> jax.Array | float:
    """A step size (constant or schedule) at an integer index."""
    return step_size(index) if callable(step_size) else step_size


def _like(value: jax.Array | float, leaf: jax.Array) -> jax.Array | float:
    """``value`` in ``leaf``'s dtype (schedules return their own dtype; promotion is strict)."""
    return value if isinstance(value, float) else jnp.asarray(value, leaf.dtype)


def _per_agent_zeros(block: int, dtype: Any) -> jax.Array:
    """Zeros ``(b,)`` typed as varying over the agent axis, like every state leaf.

    ``lax.cond``/``lax.scan`` need both branches and the carry to agree on this
    type, whether or not ``init`` ran through a ``shard_map`` of its own.
    """
    return as_varying(jnp.zeros((block,), dtype))


def _draw_participants(key: jax.Array, n_agents: int, num: int, block: int) -> jax.Array:
    """Bool ``(b,)``: this block's clients among ``num`` drawn uniformly from ``n``.

    A permutation of the global indices from a key every device shares, so the
    draw does not depend on the device count.
    """
    perm = jax.random.permutation(key, n_agents)
    # rank[i] is agent i's position in the permutation; the first ``num`` are drawn.
    rank = jnp.zeros((n_agents,), jnp.int32).at[perm].set(jnp.arange(n_agents, dtype=jnp.int32))
    return rank[local_agent_ids(block)] < num


def _round_boundary(n: int, num: int) -> tuple[Callable, Callable]:
    """The two ``lax.cond`` branches of a step: start a round, or keep the current one.

    Both take ``(state, key)`` of a state with ``active``, ``server_params`` and
    ``client_params`` fields and return ``(active, params)``: at a round start the
    participants are drawn from the round key and download the server model (the others
    keep theirs); inside a round both stay as they are.
    """

    def begin_round(state: Any, key: jax.Array) -> tuple[jax.Array, PyTree]:
        active = _draw_participants(key, n, num, state.active.shape[0])
        return active, select(active, state.server_params, state.client_params)

    def keep_round(state: Any, key: jax.Array) -> tuple[jax.Array, PyTree]:
        del key
        return state.active, state.client_params

    return begin_round, keep_round
