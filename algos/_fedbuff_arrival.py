r"""FedBuff's server step with continuous dispatch: a freed slot is refilled at once.

:func:`algos.fedbuff` with ``dispatch="on_arrival"`` (Nguyen et al. 2022, Algorithm 1):
every client that arrives while the buffer is filling is replaced at its arrival time
by an idle client that downloads the current model :math:`x^t`; only the arrival that
fills the buffer leaves its slot free until the server step, whose replacement
downloads :math:`x^{t+1}`. So :math:`C` clients train at every moment.

Step :math:`t` (server clock :math:`T_t`, model :math:`x^t`, one free slot):

1. the free slot gets an idle client, which downloads :math:`x^t` at :math:`T_t`;
2. for :math:`e = 0, \dots, B-1`: the busy slot with the earliest finish time (ties by
   slot) arrives at :math:`a_e`, staleness :math:`\tau_e = t - v_e`; for :math:`e < B-1`
   its slot gets an idle client (the one that just arrived included) that downloads
   :math:`x^t` at :math:`a_e`, and may itself arrive within the step;
3. :math:`T_{t+1} = a_{B-1}` and the server steps as in :mod:`algos.fedbuff`.

Every newcomer of step :math:`t` downloads :math:`x^t`, so the :math:`B` of them train
as one cohort (same compute and keys as ``"at_step"``); only the schedule (who, when)
runs as a loop of :math:`B` scalar events. Updates of newcomers that arrive within the
step are applied from the cohort's rows; the others wait in their slots. With
:math:`B = 1` this is the ``"at_step"`` dispatch exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.algos import _async_slots as slots
from decentjax.algos._cohort_plan import StepSize, _at, _Plan
from decentjax.core import cohort
from decentjax.core.comm import _bytes_per_agent
from decentjax.core.mesh import AGENT_AXIS
from decentjax.core.rounds import CohortState

PyTree = Any


def _pad(values: jax.Array, size: int) -> jax.Array:
    return jnp.concatenate([values, jnp.full((size - values.shape[0],), -1, values.dtype)])


def on_arrival_round(
    state: CohortState,
    store: cohort.ClientStore,
    key: jax.Array,
    *,
    loss_fn: Callable,
    plan: _Plan,
    times: np.ndarray,
    weight: Callable[[jax.Array], jax.Array],
    learning_rate: StepSize,
    server_learning_rate: StepSize,
) -> tuple[CohortState, dict]:
    """One server step with continuous dispatch (module docstring); local view.

    ``state.server`` is a :class:`algos.fedbuff.FedBuffServer` with exactly one free
    slot; returns the new state (again one free slot) and the metrics of
    :func:`algos.fedbuff`.
    """
    server, t = state.server, state.round
    size = plan.size
    n_idle = plan.n - (server.client.shape[0] - 1)  # one slot is free at every draw
    pad = cohort.padded_cohort_size(size, jax.lax.axis_size(AGENT_AXIS))
    client, version, finish = server.client, server.version, server.finish
    source = jnp.full(client.shape, -1, jnp.int32)  # cohort index of a newcomer, per slot

    def place(m, slot, when, client, version, finish, source):
        """Slot ``slot`` gets newcomer ``m``, an idle client downloading x^t at ``when``."""
        draw_key = jax.random.fold_in(key, 0) if m == 0 else jax.random.fold_in(key, 2 + m)
        new = slots.draw_idle(draw_key, n_idle, 1, 1, client)[0]
        steps = slots.local_step_counts(plan, store, new[None])[0]
        done = when + jnp.asarray(times, when.dtype)[new] * steps.astype(when.dtype)
        return new, (
            client.at[slot].set(new),
            version.at[slot].set(t),
            finish.at[slot].set(done),
            source.at[slot].set(m),
        )

    free = jnp.argmin(client >= 0)
    new, (client, version, finish, source) = place(
        0, free, server.clock, client, version, finish, source
    )
    members, arrivals = [new], []
    for e in range(size):
        j = jnp.argmin(finish)  # the first of equal finish times: ties by slot
        arrivals.append((j, client[j], version[j], source[j], finish[j]))
        when = finish[j]
        client, finish = client.at[j].set(-1), finish.at[j].set(jnp.inf)
        source = source.at[j].set(-1)
        if e < size - 1:
            new, (client, version, finish, source) = place(
                e + 1, j, when, client, version, finish, source
            )
            members.append(new)
    slot_of, who, born, src, at = (jnp.stack(column) for column in zip(*arrivals, strict=True))
    tau = t - born
    cohort_members = _pad(jnp.stack(members), pad)
    deltas, mine = slots.local_deltas(
        loss_fn, plan, learning_rate, server.params, store, cohort_members, key, t
    )
    dtype = jax.tree.leaves(server.params)[0].dtype
    s = weight(tau.astype(dtype))
    # Arrivals that waited in their slots, read before the newcomers overwrite them.
    waited = src < 0
    old_who = _pad(jnp.where(waited, who, -1), pad)
    old = cohort.gather(state.clients, _pad(jnp.where(waited, slot_of, -1), pad))
    old_s = cohort.local_slice(
        jnp.concatenate([jnp.where(waited, s, 0), jnp.zeros((pad - size,), dtype)])
    )
    delta = plan.aggregate(
        old, plan.probabilities(store, old_who, cohort.local_slice(old_who), dtype) * old_s
    )
    # Newcomers that arrived within the step (staleness 0), from the cohort's rows.
    in_step = jnp.any(src[:, None] == jnp.arange(size, dtype=src.dtype)[None], axis=0)
    fresh = jnp.where(in_step, weight(jnp.zeros((size,), dtype)), 0)
    new_s = cohort.local_slice(jnp.concatenate([fresh, jnp.zeros((pad - size,), dtype)]))
    p_new = plan.probabilities(store, cohort_members, mine, dtype)
    delta = jax.tree.map(jnp.add, delta, plan.aggregate(deltas, p_new * new_s))
    # The other newcomers wait in the slot they still hold.
    hold = source[None, :] == jnp.arange(size, dtype=source.dtype)[:, None]
    target = _pad(jnp.where(hold.any(axis=1), jnp.argmax(hold, axis=1), -1), pad)
    pending = cohort.scatter(state.clients, target, deltas)
    eta_g = _at(server_learning_rate, t)
    params = jax.tree.map(lambda xs, d: xs + jnp.asarray(eta_g, d.dtype) * d, server.params, delta)
    server = server._replace(
        params=params, client=client, version=version, finish=finish, clock=at[-1]
    )
    metrics = {
        "bytes_sent": jnp.asarray(_bytes_per_agent(deltas) * size / plan.n, jnp.result_type(float)),
        "cohort": cohort_members,
        "arrived": who,
        "staleness": tau,
        "sim_time": at[-1],
    }
    return CohortState(server, pending, t + 1), metrics
