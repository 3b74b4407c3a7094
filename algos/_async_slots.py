r"""The server's side of buffered asynchronous federated learning (see :mod:`algos.fedbuff`).

Host-side checks (compute times, staleness weights), the draw of new clients among
the idle ones, and a cohort member's local training from a downloaded model. All
draws come from keys every device shares and fold in *global* client indices, so
results do not depend on the device count.

Per-client compute times are plain arrays here (``compute_time``); the straggler
model (a fraction of clients ``k`` times slower, reproducible from a seed) is
:func:`core.asynchrony.stragglers`, shared with the asynchronous gossip methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.algos._cohort_plan import StepSize, _at, _Plan
from decentjax.algos.cohort import _masked_loss
from decentjax.core import cohort
from decentjax.core.algorithm import agent_grad
from decentjax.core.mesh import AGENT_AXIS, as_varying
from decentjax.core.tree import select

PyTree = Any

STALENESS_WEIGHTS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # FedBuff (Nguyen et al. 2022, Sec. 4): s(tau) = 1 / sqrt(1 + tau).
    "inverse_sqrt": lambda tau: 1.0 / jnp.sqrt(1.0 + tau),
    "constant": jnp.ones_like,
}


def staleness_weight(option: Any) -> Callable[[jax.Array], jax.Array]:
    """``s(tau)`` from a name in :data:`STALENESS_WEIGHTS` or a callable of a float array."""
    if callable(option):
        return option
    if option not in STALENESS_WEIGHTS:
        raise ValueError(
            f"staleness_weight must be one of {sorted(STALENESS_WEIGHTS)} or a callable "
            f"tau -> weight, got {option!r}."
        )
    return STALENESS_WEIGHTS[option]


def check_compute_time(compute_time: Any, n_clients: int) -> np.ndarray:
    """``(N,)`` finite positive simulated times per local step, as float64."""
    t = np.asarray(compute_time, np.float64)
    if t.shape != (n_clients,):
        raise ValueError(
            f"compute_time must hold one time per local step for each of the {n_clients} "
            f"clients, shape ({n_clients},); got shape {t.shape}."
        )
    bad = ~(np.isfinite(t) & (t > 0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"compute_time must be finite and > 0 for every client; client {i} has {t[i]!r}."
        )
    return t


def draw_idle(key: jax.Array, n_idle: int, num: int, padded: int, busy: jax.Array) -> jax.Array:
    """``padded`` global indices: ``num`` clients uniform without replacement among the
    ``n_idle`` clients not in ``busy`` (whose ``-1`` entries are empty slots), then ``-1``.

    Ranks among the idle clients come from :func:`core.cohort.draw_cohort` (so with
    nobody busy the draw *is* the cohort draw of the same key); rank ``k`` maps to the
    ``k``-th idle client by stepping over the sorted busy indices, O(num x |busy|).
    """
    rank = cohort.draw_cohort(key, n_idle, num, padded)
    if busy.shape[0] == 0:
        return rank
    live = rank >= 0
    # Empty slots sort last as a value no index reaches, so they are never stepped over.
    ordered = jnp.sort(jnp.where(busy >= 0, busy, jnp.iinfo(jnp.int32).max))

    def skip(i, j):
        return j + (ordered[i] <= j).astype(j.dtype)

    j = jax.lax.fori_loop(0, busy.shape[0], skip, jnp.where(live, rank, 0))
    return jnp.where(live, j, -1)


def local_deltas(
    loss_fn: Callable,
    plan: _Plan,
    learning_rate: StepSize,
    x: PyTree,
    store: cohort.ClientStore,
    members: jax.Array,
    key: jax.Array,
    round_index: jax.Array,
) -> tuple[PyTree, jax.Array]:
    r"""This device's cohort slice of :math:`y_i^K - x` after local SGD from ``x``.

    The local work of :func:`algos.cohort.cohort_fedavg` (random reshuffling over the
    member's own samples, step :math:`\eta_l(rK_{\max}+k)`, sample orders from
    ``fold_in(fold_in(key, 1), i)``), for plain losses ``(params, batch) -> scalar``.

    Returns:
      ``(deltas, mine)``: leaves ``(C/P, ...)`` and this device's member indices.
    """
    _, m_max = plan.check_store(store)
    ragged = plan.local_epochs is not None and (store.min_count < m_max or m_max % plan.batch != 0)
    grad_fn = agent_grad(_masked_loss(loss_fn) if ragged else loss_fn)
    local = members.shape[0] // jax.lax.axis_size(AGENT_AXIS)
    mine = cohort.local_slice(members)
    data = cohort.gather(store.data, members)
    counts = jnp.maximum(cohort.gather(store.counts, members), 1)  # dummies: 1 row of zeros
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        jax.random.fold_in(key, 1), jnp.where(mine >= 0, mine, plan.n)
    )
    order, mask = plan.sample_orders(keys, counts, m_max, store.min_count)
    steps = plan.steps(m_max)
    y0 = jax.tree.map(lambda p: as_varying(jnp.broadcast_to(p, (local, *p.shape))), x)

    def local_step(y, s):
        idx, live = order[:, s], mask[:, s]
        batch = jax.tree.map(lambda a: jax.vmap(lambda ai, ii: ai[ii])(a, idx), data)
        grads = grad_fn(y, (batch, live) if ragged else batch)
        eta = _at(learning_rate, round_index * steps + s)
        stepped = jax.tree.map(lambda yi, g: yi - jnp.asarray(eta, g.dtype) * g, y, grads)
        return select(jnp.any(live, axis=1), stepped, y), None

    y, _ = jax.lax.scan(local_step, y0, jnp.arange(steps, dtype=jnp.int32))
    return jax.tree.map(lambda yi, xs: yi - xs[None], y, x), mine


def local_step_counts(plan: _Plan, store: cohort.ClientStore, clients: jax.Array) -> jax.Array:
    r"""Non-empty local steps of each of ``clients`` (global indices) per round, replicated.

    ``K`` with ``local_steps``; with ``local_epochs`` :math:`E\lceil m_i/B\rceil`, from
    the counts of the devices that hold the clients (one all-reduce of ``len(clients)``
    integers).
    """
    if plan.local_steps is not None:
        return jnp.full(clients.shape, plan.local_steps, jnp.int32)
    counts = cohort.lookup(store.counts, clients)
    return plan.local_epochs * ((counts + plan.batch - 1) // plan.batch)
