r"""FedBuff and asynchronous FedAvg: buffered aggregation of stale client updates.

The server keeps ``concurrency`` :math:`C` clients training at once. Client
:math:`i` needs :math:`K_i \cdot t_i` units of simulated time for its local work
(:math:`K_i` local steps, :math:`t_i` = ``compute_time[i]`` per step: the straggler
model lives in :math:`t`); it trains from the server model it downloaded, which may
be several server steps old when it arrives. The server buffers arriving updates
and, once it holds ``buffer_size`` :math:`B` of them, steps with their
staleness-weighted mean (Nguyen et al. 2022, Algorithm 1). :math:`B = 1` is
asynchronous FedAvg (each arrival is applied at once, :func:`async_fedavg`).

**Simulation (event-driven, one call = one server step).** Each of the :math:`C`
slots holds a client, the server step :math:`v` of the model it downloaded, its
finish time, and its update :math:`\Delta_i`. Step :math:`t` (server clock
:math:`T_t`, model :math:`x^t`):

1. *dispatch*: the :math:`B` free slots get :math:`B` clients drawn uniformly
   without replacement among the :math:`N - (C - B)` idle ones; each downloads
   :math:`x^t` (:math:`v = t`) at time :math:`T_t` and finishes at
   :math:`T_t + K_i t_i`. Their local work (exactly :func:`algos.cohort.cohort_fedavg`'s,
   same keys) runs now, on the cohort of :math:`B` only, and its result waits in the
   slot: it is *applied* only once the clock reaches its finish time.
2. *arrivals*: the :math:`B` slots with the earliest finish times (ties by slot)
   arrive; :math:`T_{t+1}` is the latest of them, the staleness of each is
   :math:`\tau_j = t - v_j`.
3. *server step*:

   .. math::

     x^{t+1} = x^t + \eta_g(t)\,\frac{N}{B}\sum_{j=1}^{B} p_{c_j}\, s(\tau_j)\,\Delta_{c_j},
     \qquad \Delta_{c_j} = y_{c_j}^{K} - x^{v_j},

   with :math:`p_i = w_i/\sum_k w_k` (uniform weights: :math:`\frac1B\sum_j s(\tau_j)
   \Delta_{c_j}`, FedBuff's form) and :math:`s(\tau) = 1/\sqrt{1+\tau}` (FedBuff's
   choice, ``staleness_weight="inverse_sqrt"``) or :math:`s = 1` (``"constant"``) or any
   callable. The arrived slots are freed.

Initialisation dispatches :math:`C - B` clients (:math:`C - 1` with ``"on_arrival"``)
from :math:`x^0` at time 0, so step 0 dispatches the remaining ones and :math:`C`
clients start at time 0.

**Dispatch.** With ``dispatch="at_step"`` (the default) the :math:`B - 1` slots
freed before the buffer fills wait for the server step and their replacements download
the *new* model, so a step trains its :math:`B` newcomers as one cohort from
:math:`x^{t}` at :math:`T_t`; between server steps only :math:`C - B + 1` to :math:`C`
slots are busy. FedBuff itself replaces each arriving client at once, with the model
of that moment: ``dispatch="on_arrival"`` (:mod:`algos._fedbuff_arrival`), where
:math:`C` clients train throughout and the newcomers of step :math:`t` still all
download :math:`x^t` (one cohort). For :math:`B = 1` the two coincide. With :math:`B = C`
and equal compute times, ``"at_step"`` has every client of a step download :math:`x^t`
and arrive with :math:`\tau = 0`, so the method *is* the cohort FedAvg (tested step for
step); ``"on_arrival"`` is not (the refilled clients arrive one step stale).

**Memory.** The state holds the server model once (replicated), per slot three
scalars (client, version, finish time: :math:`3C` numbers, replicated) and the
:math:`C` pending updates, one model-sized row per slot, sharded over the devices
(:math:`\lceil C/P \rceil d` per device). Storing the update rather than the
downloaded model costs the same :math:`d` per slot and needs no copy of old server
models (whose count, the largest staleness, is unbounded under stragglers).

References:
  Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba 2022, "Federated learning with
  buffered asynchronous aggregation", AISTATS, https://arxiv.org/abs/2106.06639;
  Xie, Koyejo, Gupta 2019, "Asynchronous federated optimization",
  https://arxiv.org/abs/1903.03934 (FedAsync: staleness-weighted immediate updates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from decentjax.algos import _async_slots as slots
from decentjax.algos._cohort_plan import StepSize, _at, _check_positive_int, _check_step, _Plan
from decentjax.algos._fedbuff_arrival import on_arrival_round
from decentjax.core import cohort
from decentjax.core.comm import _bytes_per_agent
from decentjax.core.loss_inputs import as_task
from decentjax.core.mesh import AGENT_AXIS, as_varying
from decentjax.core.rounds import CohortState, RoundAlgorithm

PyTree = Any


class FedBuffServer(NamedTuple):
    """The replicated part of a FedBuff state (``CohortState.server``).

    Attributes:
      params: the server model :math:`x^t`.
      client: int32 ``(C,)``: the client in each slot, ``-1`` for a free slot.
      version: int32 ``(C,)``: the server step whose model the slot's client downloaded.
      finish: float ``(C,)``: the simulated time its update arrives (``inf`` if free).
      clock: float scalar: the server's simulated time :math:`T_t` (``"sim_time"``).
    """

    params: PyTree
    client: jax.Array
    version: jax.Array
    finish: jax.Array
    clock: jax.Array


def fedbuff(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    n_clients: int,
    concurrency: int,
    buffer_size: int,
    learning_rate: StepSize,
    *,
    compute_time: Any,
    batch_size: int,
    local_steps: int | None = None,
    local_epochs: int | None = None,
    server_learning_rate: StepSize = 1.0,
    staleness_weight: str | Callable[[jax.Array], jax.Array] = "inverse_sqrt",
    weights: Any = "uniform",
    dispatch: str = "at_step",
) -> RoundAlgorithm:
    r"""FedBuff (buffered asynchronous aggregation); one call = one server step.

    The update, the simulation of arrivals and the memory are in the module docstring.
    Metrics per step: ``"sim_time"`` (the server's clock :math:`T_{t+1}` when it
    steps), ``"staleness"`` (int32 ``(B,)``, :math:`\tau_j` of the arrivals),
    ``"arrived"`` (their clients), ``"cohort"`` (the clients dispatched, ``-1``
    padding) and ``"bytes_sent"`` (one update per arrival, averaged over the
    :math:`N` clients).

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar`` (a mean over the batch).
      n_clients: :math:`N`.
      concurrency: :math:`C`, clients training at once, ``1 <= C <= N``.
      buffer_size: :math:`B`, updates per server step, ``1 <= B <= C``.
      learning_rate: local step :math:`\eta_l` (float or schedule of the global
        local-step index, as :func:`algos.cohort.cohort_fedavg`).
      compute_time: ``(N,)`` positive simulated time per local step of each client
        (e.g. :func:`core.asynchrony.stragglers`).
      batch_size: :math:`B_l`, samples per local step.
      local_steps: :math:`K` local steps; or
      local_epochs: passes over the client's own samples.
      server_learning_rate: :math:`\eta_g` (float or schedule of the server step).
      staleness_weight: ``"inverse_sqrt"`` (:math:`1/\sqrt{1+\tau}`), ``"constant"``,
        or a callable of a float array of staleness values.
      weights: ``"uniform"`` (FedBuff), ``"samples"`` (:math:`w_i = m_i`) or ``N``
        positive numbers.
      dispatch: ``"at_step"`` (slots freed while the buffer fills wait for the server
        step; the module docstring) or ``"on_arrival"`` (FedBuff's continuous dispatch:
        a freed slot is refilled at once with the current model,
        :mod:`algos._fedbuff_arrival`). They coincide for :math:`B = 1`.

    Returns:
      A :class:`~core.rounds.RoundAlgorithm`; run it with :class:`core.rounds.RoundRunner`.

    Raises:
      ValueError: (before compiling) ``buffer_size > concurrency``, ``concurrency >
        n_clients``, non-positive sizes, compute times not positive or of the wrong
        shape, an unknown staleness weight or dispatch, a loss with a key or model state, or any
        argument :func:`algos.cohort.cohort_fedavg` refuses.
    """
    concurrency = _check_positive_int(concurrency, "concurrency")
    plan = _Plan(n_clients, buffer_size, batch_size, local_steps, local_epochs, weights, "unbiased")
    if concurrency > plan.n:
        raise ValueError(
            f"concurrency={concurrency} is larger than n_clients={plan.n}; at most every "
            "client trains at once."
        )
    if plan.size > concurrency:
        raise ValueError(
            f"buffer_size={plan.size} is larger than concurrency={concurrency}; the server "
            "would wait for more updates than clients are training."
        )
    if as_task(loss_fn) is not None:
        raise ValueError(
            "fedbuff takes a plain loss (params, batch) -> scalar; a loss with a key or model "
            f"state is not supported, got {loss_fn!r}."
        )
    times = slots.check_compute_time(compute_time, plan.n)
    learning_rate = _check_step(learning_rate, "learning_rate")
    server_learning_rate = _check_step(server_learning_rate, "server_learning_rate")
    weight = slots.staleness_weight(staleness_weight)
    if dispatch not in ("at_step", "on_arrival"):
        raise ValueError(f"dispatch must be 'at_step' or 'on_arrival', got {dispatch!r}.")
    on_arrival = dispatch == "on_arrival" and plan.size > 1
    # Clients in training at each dispatch: on arrival, all but the slot freed last.
    n_busy = concurrency - (1 if on_arrival else plan.size)

    def dispatch(server, store, key, busy, free_slots, version):
        """Draws ``len(free_slots)`` idle clients and trains them from ``server.params``."""
        n_devices = jax.lax.axis_size(AGENT_AXIS)
        num = free_slots.shape[0]
        pad = cohort.padded_cohort_size(num, n_devices)
        members = slots.draw_idle(
            jax.random.fold_in(key, 0), plan.n - busy.shape[0], num, pad, busy
        )
        deltas, _ = slots.local_deltas(
            loss_fn, plan, learning_rate, server.params, store, members, key, version
        )
        new = members[:num]
        clock = server.clock
        steps = slots.local_step_counts(plan, store, new)
        duration = jnp.asarray(times, clock.dtype)[new] * steps.astype(clock.dtype)
        target = jnp.concatenate([free_slots, jnp.full((pad - num,), -1, jnp.int32)])
        return (
            members,
            deltas,
            target,
            server._replace(
                client=server.client.at[free_slots].set(new),
                version=server.version.at[free_slots].set(version),
                finish=server.finish.at[free_slots].set(clock + duration),
            ),
        )

    def init(params: PyTree, store: cohort.ClientStore, key: jax.Array) -> CohortState:
        plan.check_store(store)
        n_devices = jax.lax.axis_size(AGENT_AXIS)
        rows = cohort.padded_cohort_size(concurrency, n_devices) // n_devices
        dtype = jnp.result_type(float)
        server = FedBuffServer(
            params,
            jnp.full((concurrency,), -1, jnp.int32),
            jnp.zeros((concurrency,), jnp.int32),
            jnp.full((concurrency,), jnp.inf, dtype),
            jnp.zeros((), dtype),
        )
        pending = jax.tree.map(lambda p: jnp.zeros((rows, *p.shape), p.dtype), params)
        pending = jax.tree.map(as_varying, pending)
        if n_busy:
            first = jnp.arange(n_busy, dtype=jnp.int32)
            _, deltas, target, server = dispatch(
                server, store, key, jnp.zeros((0,), jnp.int32), first, jnp.zeros((), jnp.int32)
            )
            pending = cohort.scatter(pending, target, deltas)
        return CohortState(server, pending, jnp.zeros((), jnp.int32))

    def round_fn(state: CohortState, store: cohort.ClientStore, key: jax.Array):
        if on_arrival:
            return on_arrival_round(
                state,
                store,
                key,
                loss_fn=loss_fn,
                plan=plan,
                times=times,
                weight=weight,
                learning_rate=learning_rate,
                server_learning_rate=server_learning_rate,
            )
        server, t = state.server, state.round
        # 1. Dispatch into the B free slots (slot order: the sort is stable).
        free_slots = jnp.argsort(server.client >= 0, stable=True)[: plan.size].astype(jnp.int32)
        busy = jnp.where(server.client >= 0, server.client, -1)
        busy = jnp.sort(busy)[plan.size :]  # the C - B clients in training
        members, deltas, target, server = dispatch(server, store, key, busy, free_slots, t)
        pending = cohort.scatter(state.clients, target, deltas)
        # 2. Arrivals: the B earliest finish times, ties broken by slot index.
        arrived = jnp.argsort(server.finish, stable=True)[: plan.size].astype(jnp.int32)
        clients = server.client[arrived]
        clock = server.finish[arrived[-1]]
        tau = t - server.version[arrived]
        n_devices = jax.lax.axis_size(AGENT_AXIS)
        pad = cohort.padded_cohort_size(plan.size, n_devices)
        fill = jnp.full((pad - plan.size,), -1, jnp.int32)
        rows = jnp.concatenate([arrived, fill])
        who = jnp.concatenate([clients, fill])
        # 3. Server step with the staleness-weighted buffer.
        updates = cohort.gather(pending, rows)
        mine = cohort.local_slice(who)
        dtype = jax.tree.leaves(server.params)[0].dtype
        s = jnp.concatenate([weight(tau.astype(dtype)), jnp.zeros((pad - plan.size,), dtype)])
        s_mine = cohort.local_slice(s)
        p = plan.probabilities(store, who, mine, dtype)
        delta = plan.aggregate(updates, p * s_mine)
        eta_g = _at(server_learning_rate, t)
        params = jax.tree.map(
            lambda xs, d: xs + jnp.asarray(eta_g, d.dtype) * d, server.params, delta
        )
        server = FedBuffServer(
            params,
            server.client.at[arrived].set(-1),
            server.version.at[arrived].set(0),
            server.finish.at[arrived].set(jnp.inf),
            clock,
        )
        upload = _bytes_per_agent(deltas)
        metrics = {
            "bytes_sent": jnp.asarray(upload * plan.size / plan.n, jnp.result_type(float)),
            "cohort": members,
            "arrived": clients,
            "staleness": tau,
            "sim_time": clock,
        }
        return CohortState(server, pending, t + 1), metrics

    def params(state: CohortState) -> PyTree:
        return state.server.params

    name = "async_fedavg" if plan.size == 1 else "fedbuff"
    return RoundAlgorithm(init=init, round=round_fn, params=params, name=name)


def async_fedavg(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    n_clients: int,
    concurrency: int,
    learning_rate: StepSize,
    **kwargs: Any,
) -> RoundAlgorithm:
    r"""Asynchronous FedAvg: :func:`fedbuff` with ``buffer_size=1``.

    Every arriving update is applied at once, weighted by its staleness:
    :math:`x^{t+1} = x^t + \eta_g\, s(\tau)\,(y_c^K - x^{v})`, and the client's slot
    is refilled with an idle client that downloads :math:`x^{t+1}`. This is FedBuff's
    form of the update (the change the client computed, :math:`y - x^{v}`); FedAsync
    (Xie et al. 2019) instead mixes :math:`x^{t+1} = (1-\alpha_t)x^t + \alpha_t y`, i.e.
    measures the change from the *current* model, which differs when :math:`\tau > 0`.

    Args:
      loss_fn: as :func:`fedbuff`.
      n_clients: :math:`N`.
      concurrency: :math:`C` clients in training at once.
      learning_rate: local step :math:`\eta_l`.
      **kwargs: the keyword arguments of :func:`fedbuff` (``compute_time``,
        ``batch_size``, ``local_steps`` ...), except ``buffer_size``.

    Returns:
      A :class:`~core.rounds.RoundAlgorithm`, one call per arriving update.

    Raises:
      ValueError: as :func:`fedbuff`, or a ``buffer_size`` among ``kwargs``.
    """
    if "buffer_size" in kwargs:
        raise ValueError(
            f"async_fedavg has buffer_size 1; got buffer_size={kwargs['buffer_size']!r} "
            "(use fedbuff for a larger buffer)."
        )
    return fedbuff(loss_fn, n_clients, concurrency, 1, learning_rate, **kwargs)
