r"""B-CPP in the asynchronous broadcast setting: compressed Push-Pull on random wake-ups.

Time advances in ticks. In each tick some agents wake (independent Bernoulli draws
whose probabilities follow the agents' compute speeds); only the woken agents compute a
gradient, update their iterate and broadcast compressed messages to their
out-neighbours; the others only receive. The per-tick mixing matrices :math:`R_k`,
:math:`C_k` follow from who woke (:func:`tick_matrices`). With every agent awake in
every tick the method is CPP (:func:`algos.cpp`) step for step. The update form is a
reconstruction (ALGORITHMS.md §2.7, tag [RECON]): the paper says only that B-CPP is "a
broadcast-like version of CPP" that "can be applied in an asynchronous broadcast
setting"; its body was not readable.

References:
  * Z. Song, L. Shi, S. Pu, M. Yan. "Compressed Gradient Tracking for Decentralized
    Optimization over General Directed Networks". IEEE TSP 70 (2022) 1775-1787.
    https://arxiv.org/abs/2106.07243
  * S. Pu, W. Shi, J. Xu, A. Nedić. "Push-Pull Gradient Methods for Distributed
    Optimization in Networks" (G-Push-Pull, the random-wake-up template). IEEE TAC 2021.
    https://arxiv.org/abs/1810.06653
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import optax

from decentjax.algos._directed import (
    LossFn,
    PyTree,
    Variant,
    check_pair,
    check_unit_interval,
    check_variant,
)
from decentjax.algos.push_compressed import _X_CHANNEL, _Y_CHANNEL, cpp_steps, cpp_x_step
from decentjax.core import async_links, asynchrony, compressed_defaults, compression
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.asynchrony import AsyncModel
from decentjax.core.comm import Gossip
from decentjax.core.compressed_gossip import message_bytes
from decentjax.core.mesh import as_varying
from decentjax.core.tree import block_size, combine, leaf_dtype, select


class BCppAsyncState(NamedTuple):
    """State of asynchronous B-CPP.

    Attributes:
      params: iterates :math:`x_i`, leaves ``(b, ...)``.
      tracker: :math:`y_i`, including the mass pushed to ``i`` since it last woke.
      prev_grad: :math:`g_i`, the gradient of ``i``'s last wake-up (zero before it).
      h_x: x-channel reference point :math:`h_{x,i}` (known to ``i``'s out-neighbours).
      h_x_pulled: :math:`(R H_x)_i`, kept equal to ``R @ h_x`` from the messages.
      h_y: y-channel reference point :math:`h_{y,i}` (out-neighbours keep a copy).
      opt_state: per-agent optax state (advances only when the agent wakes).
      wakes: int32 ``(b,)``: how many times each agent has woken.
      tick: int32 ``(b,)``: ticks elapsed (the same on every agent).
      x_links: with delays, the x-messages in flight to each agent (an
        :class:`~core.async_links.InFlight` over ``R``'s in-edges) and the arrival
        tick ``(b, K)`` of each edge's latest message; else ``None``.
      y_links: the same for the y-messages over ``C``'s in-edges; else ``None``.
    """

    params: PyTree
    tracker: PyTree
    prev_grad: PyTree
    h_x: PyTree
    h_x_pulled: PyTree
    h_y: PyTree
    opt_state: optax.OptState
    wakes: jax.Array
    tick: jax.Array
    x_links: tuple[async_links.InFlight, jax.Array] | None = None
    y_links: tuple[async_links.InFlight, jax.Array] | None = None


def tick_matrices(
    pull_matrix: npt.ArrayLike,
    push_matrix: npt.ArrayLike,
    woken: npt.ArrayLike,
    pushes: npt.ArrayLike,
    gamma: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    r"""The tick's dense :math:`R_k` and :math:`C_k` (host side, for checks and docs).

    .. math::

      R_k = I - \gamma\,\operatorname{diag}(a^k)(I - R), \qquad
      C_k = I - \gamma\,(I - C)\operatorname{diag}(s^k),

    with :math:`a^k` the agents that woke and :math:`s^k \le a^k` those of them that
    push their tracker (every woken agent after its first wake-up). Rows of woken
    agents are :math:`(1-\gamma)e_i^\top + \gamma r_i^\top`, the others
    :math:`e_i^\top`, so :math:`R_k` is row-stochastic; columns of pushing agents are
    :math:`(1-\gamma)e_i + \gamma c_i`, the others :math:`e_i`, so :math:`C_k` is
    column-stochastic, for every wake pattern and :math:`\gamma \in (0, 1]`.

    Args:
      pull_matrix: row-stochastic :math:`R`, ``(n, n)``.
      push_matrix: column-stochastic :math:`C`, ``(n, n)``.
      woken: bool ``(n,)``, :math:`a^k`.
      pushes: bool ``(n,)``, :math:`s^k`.
      gamma: the consensus step :math:`\gamma`.

    Returns:
      ``(R_k, C_k)``, float64 ``(n, n)``.
    """
    r, c = np.asarray(pull_matrix, np.float64), np.asarray(push_matrix, np.float64)
    eye = np.eye(r.shape[0])
    a = np.asarray(woken, np.float64)
    s = np.asarray(pushes, np.float64)
    return eye - gamma * a[:, None] * (eye - r), eye - gamma * (eye - c) * s[None, :]


def b_cpp_async(
    loss_fn: LossFn,
    pull: Gossip,
    push: Gossip,
    model: AsyncModel,
    learning_rate: float | optax.Schedule | None = None,
    *,
    compressor: compression.Compressor,
    gamma: float | None = None,
    beta: float | None = None,
    variant: Variant = "ab",
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""B-CPP in the asynchronous broadcast setting (Song, Shi, Pu, Yan, IEEE TSP 2022).

    **Wake-ups, time and delays** follow the execution model ``model`` of
    :mod:`core.asynchrony`, as for :func:`algos.ad_psgd` and :func:`algos.async_push_sum`:
    one step is one tick, agent :math:`i` wakes with probability :math:`p_i`
    (:func:`core.asynchrony.wake`; e.g. ``async_model(n, compute_time=τ, tick=Δ)``
    gives :math:`p_i = \Delta/\tau_i`), ``metrics["sim_time"]`` is the simulated
    wall-clock (ticks × ``model.tick``), and messages arrive ``0 .. model.max_delay``
    ticks after they are sent. A synchronous method on the same agents waits for the
    slowest (:func:`core.asynchrony.synchronous`).

    **Update ([RECON]; the paper's B-CPP was not readable).** With :math:`a^k` the
    woken agents and :math:`s^k = a^k \wedge (\text{woke before})` those that push
    their tracker, a tick is CPP (:func:`algos.cpp`) restricted to them:

    .. math::

      Q_x &= \operatorname{diag}(a^k)\,\mathcal C(X - H_x), \quad
        \hat X = H_x + Q_x, \quad \hat X^R = H_x^R + R Q_x, \\
      Q_y &= \operatorname{diag}(s^k)\,\mathcal C(Y - H_y), \quad \hat Y = H_y + Q_y, \\
      Y &\leftarrow Y - \gamma (I - C)\operatorname{diag}(s^k)\hat Y
        + G^{\mathrm{new}} - G^{\mathrm{old}}, \qquad
        G^{\mathrm{new}}_i = \nabla f_i(x_i) \text{ if } a^k_i \text{ else }
        G^{\mathrm{old}}_i, \\
      x_i &\leftarrow x_i - \gamma (\hat x_i - \hat x^R_i) - \alpha y_i
        \quad \text{for woken } i \text{ only,}

    and the references move as in CPP, :math:`H \leftarrow (1-\beta) H + \beta\hat
    H`, for senders only (:math:`H_x^R` with the same messages). With the identity
    compressor this is :math:`Y \leftarrow C_k Y + G^{\mathrm{new}} - G^{\mathrm{old}}`
    and, for woken :math:`i`, :math:`x_i \leftarrow (R_k \hat X)_i - \alpha y_i`, where
    :math:`\hat x_j` is the latest message from :math:`j` (this tick's :math:`x_j` if
    :math:`j` woke, else its last broadcast, :math:`h_{x,j}`), with the
    row-stochastic :math:`R_k = I - \gamma\operatorname{diag}(a^k)(I - R)` and the
    column-stochastic :math:`C_k = I - \gamma (I - C)\operatorname{diag}(s^k)`
    (:func:`tick_matrices`): woken agents pull from the latest messages of their
    in-neighbours, and push a :math:`\gamma` share of their tracker. An in-neighbour
    that has never broadcast counts with its reference :math:`h_{x,j} = 0`, as every
    reference starts in CPP (a transient while stragglers have not woken yet). Sleeping
    agents only receive: their :math:`H_x^R` and the mass pushed into their :math:`y`.
    An agent's first wake-up sends only its x-message, as CPP's first step does. With
    every agent awake in every tick and no delay this is CPP step for step, with the
    same compressor draws.

    **Delays ([RECON]).** With ``model.max_delay`` > 0 (or ``model.buffer`` > 1) the
    messages to :math:`i` from :math:`j` (:math:`r_{ij} Q_{x,j}` and
    :math:`\gamma c_{ij}\hat y_j`) travel through the ring buffers of
    :mod:`core.async_links` on **in-order channels** (:func:`core.async_links.in_order_arrival`:
    a delay drawn per edge and tick, but no message overtakes an earlier one on its
    edge and at most one arrives per edge and tick). A receiver applies each message at
    its arrival tick, in :math:`\hat x^R_i = H^R_{x,i} + r_{ii} Q_{x,i} + \sum_{\text{arrived}}
    r_{ij} Q_{x,j}` and :math:`y_i \mathrel{+}= \gamma\sum_{\text{arrived}} c_{ij}\hat y_j`;
    its own share (:math:`r_{ii}`, :math:`c_{ii}`) is immediate. In order, each
    arrival is decoded against the receiver's copy of the sender's reference as of the
    message's send, so :math:`\hat x_j` seen by :math:`i` is the **latest message
    received** from :math:`j`, and what holds is, with :math:`M_x`, :math:`M_y` the
    messages in flight:

    .. math::

      H_x^R + \beta M_x = R H_x, \qquad
      \mathbf 1^\top Y + \mathbf 1^\top M_y = \mathbf 1^\top G

    after every tick (the tracker-sum invariant counts the tracker mass in flight;
    :math:`\mathbf 1^\top Y = \mathbf 1^\top G` alone holds only when nothing is in
    flight). With ``max_delay = 0`` and ``buffer = 1`` (the default) messages arrive
    within the tick without buffers.

    How receivers hold :math:`\hat y_j`: the pushed term :math:`\gamma c_{ij}\hat y_j`
    needs the sender's reference :math:`h_{y,j}`, so each agent keeps a copy of the
    y-references of its in-neighbours (O(in-degree) vectors), updated from the same
    messages. The simulation does not store those copies: it mixes (or, with delays,
    sends) the woken senders' :math:`\hat y`, which moves no information the receivers
    lack. Bytes are counted as what is sent: per woken agent the compressor's exact
    bits / 8 of its x-message, plus its y-message when it pushes (zero when asleep).

    This differs from §2.7's template (one agent per tick, gossip-type :math:`R_k`):
    any number of agents may wake, and :math:`R_k, C_k` are the rows / columns of
    :math:`(1-\gamma)I + \gamma R` and :math:`(1-\gamma)I + \gamma C` of the woken agents.
    Whether the paper's woken agent also pushes into sleeping agents' trackers the same
    way is unconfirmed. The synchronous variant is :func:`algos.b_cpp_sync`.

    **Constants [RECON]:** CPP's defaults (:func:`algos.push_compressed.cpp_steps`),
    :math:`\beta = \delta`, :math:`\gamma = \min(1, 1/(2\omega\max(\|I-R\|_2,
    \|I-C\|_2)))`: a sleeping agent's reference does not change, so the staleness
    that made :func:`algos.b_cpp_sync` scale :math:`\gamma` by :math:`p` does not arise.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      pull: gossip operator holding a row-stochastic ``R``.
      push: gossip operator holding a column-stochastic ``C``.
      model: wake probabilities, delay bound and tick length
        (:func:`core.asynchrony.async_model`, e.g. with
        ``compute_time=core.asynchrony.stragglers(...)``).
      learning_rate: :math:`\alpha`, a float or optax schedule (of the agent's own
        optimizer steps, which advance only when it wakes).
      compressor: any :class:`core.compression.Compressor`.
      gamma: consensus step :math:`\gamma \in (0, 1]`; default CPP's.
      beta: reference-point step :math:`\beta \in (0, 1]`; default :math:`\delta`.
      variant: ``"ab"`` or ``"push_pull"``, as in :func:`algos.cpp`.
      optimizer: optax transformation of the tracker direction instead of plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`BCppAsyncState`;
      ``metrics`` has ``"bytes_sent"`` per agent ``(b,)`` and ``"sim_time"``.

    Raises:
      ValueError: before compiling, if ``R``/``C`` fail their checks (e.g. the digraph
        is not strongly connected), ``gamma`` or ``beta`` is not in ``(0, 1]``, or
        ``model`` is not an :class:`~core.asynchrony.AsyncModel` for ``R``'s agents
        (a delay bound that does not fit the buffer is refused by ``async_model``).

    References:
      Song, Shi, Pu, Yan, https://arxiv.org/abs/2106.07243.
    """
    method = "b_cpp_async"
    check_variant(variant)
    check_pair(pull, push, method)
    if not isinstance(model, AsyncModel) or model.n_agents != pull.n_agents:
        raise ValueError(
            f"{method}: model must be core.asynchrony.async_model({pull.n_agents}, ...) "
            f"(one wake probability per agent of R), got {model!r}."
        )
    gamma = check_unit_interval("gamma", gamma, method)
    beta = check_unit_interval("beta", beta, method)
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)
    spread = compressed_defaults.operator_spread(pull, push)
    delayed = model.max_delay > 0 or model.buffer > 1
    channels = (async_links.links(pull), async_links.links(push)) if delayed else None

    def init(params: PyTree, data: PyTree, key: jax.Array) -> BCppAsyncState:
        del data, key
        zeros = jax.tree.map(jnp.zeros_like, params)
        # Varying over the agent axis: wake counts differ between agents.
        count = as_varying(jnp.zeros((block_size(params),), jnp.int32))
        opt_state = jax.vmap(opt.init)(params)
        state = BCppAsyncState(params, zeros, zeros, zeros, zeros, zeros, opt_state, count, count)
        if not delayed:
            return state
        x_links, y_links = (
            (
                async_links.in_flight_init(edges, params, model.buffer),
                as_varying(jnp.full((block_size(params), edges.slots), -1, jnp.int32)),
            )
            for edges in channels
        )
        return state._replace(x_links=x_links, y_links=y_links)

    def step(state: BCppAsyncState, batch: Batch, key: jax.Array):
        g, b = cpp_steps(state.params, compressor, spread, gamma, beta)
        woken = asynchrony.wake(model, key, block_size(state.params))
        pushes = woken & (state.wakes > 0)
        grads = select(woken, grad_fn(state.params, batch.data), state.prev_grad)

        # y-channel: pushers send C(Y - H_y); Y <- Y - gamma (I - C) diag(s) Yhat + dG.
        q = compression.compress_block(
            compressor,
            jax.random.fold_in(key, _Y_CHANNEL),
            optax.tree.sub(state.tracker, state.h_y),
        )
        zeros = jax.tree.map(jnp.zeros_like, q)
        y_hat = optax.tree.add(state.h_y, select(pushes, q, zeros))
        sent_y = select(pushes, y_hat, zeros)
        if delayed:
            mixed, y_links = _delayed_push(model, channels[1], state, sent_y, pushes, g, key)
        else:
            y_diff = optax.tree.sub(sent_y, push.mix(sent_y))
            mixed, y_links = combine(1.0, state.tracker, -g, y_diff), None
        tracker = optax.tree.add(mixed, optax.tree.sub(grads, state.prev_grad))
        h_y = y_hat if b == 1.0 else combine(1.0 - b, state.h_y, b, y_hat)
        h_y = select(pushes, h_y, state.h_y)

        # x-channel: woken agents broadcast C(X - H_x) and take CPP's x-step.
        if delayed:
            params, opt_state, h_x, h_x_pulled, x_links = _delayed_x_step(
                model, channels[0], compressor, opt, variant, state, tracker, key, g, b, woken
            )
        else:
            params, opt_state, h_x, h_x_pulled = cpp_x_step(
                pull, compressor, opt, variant, state, tracker, key, g, b, woken
            )
            x_links = None
        params = select(woken, params, state.params)
        new = BCppAsyncState(
            params,
            tracker,
            grads,
            h_x,
            h_x_pulled,
            h_y,
            select(woken, opt_state, state.opt_state),
            state.wakes + woken.astype(jnp.int32),
            state.tick + 1,
            x_links,
            y_links,
        )
        x_bytes = jnp.where(woken, message_bytes(pull, compressor, params), 0.0)
        y_bytes = jnp.where(pushes, message_bytes(push, compressor, tracker), 0.0)
        sim_time = asynchrony.tick_clock(model, state.tick)
        return new, {"bytes_sent": x_bytes + y_bytes, "sim_time": sim_time}

    return Algorithm(init=init, step=step, name="b-cpp-async")


def _in_order_channel(
    model: AsyncModel,
    edges: async_links.Links,
    channel: tuple[async_links.InFlight, jax.Array],
    message: PyTree,
    senders: jax.Array,
    scale: float,
    key: jax.Array,
    tick: jax.Array,
) -> tuple[PyTree, tuple[async_links.InFlight, jax.Array]]:
    """Sends ``scale * edge weight * message`` of the ``senders`` on in-order channels.

    Local view. Returns this tick's arrivals, summed over in-edges, ``(b, ...)``, and
    the channel's new ``(buffer, arrival ticks)``.
    """
    buffer, last = channel
    block = senders.shape[0]
    received, sent = edges.receive((message, senders.astype(leaf_dtype(message))))
    w = async_links.edge_weights(edges, block, sent) * sent
    delay = asynchrony.delays(model, key, block, edges.slots)
    delay, last = async_links.in_order_arrival(last, delay, w != 0, tick)
    buffer = async_links.send(edges, buffer, received, scale * w, delay, tick)
    arrived, buffer = async_links.deliver(buffer, tick)
    return arrived, (buffer, last)


def _delayed_push(
    model: AsyncModel,
    edges: async_links.Links,
    state: BCppAsyncState,
    sent_y: PyTree,
    pushes: jax.Array,
    gamma: float,
    key: jax.Array,
) -> tuple[PyTree, tuple[async_links.InFlight, jax.Array]]:
    r"""The y-mix with delays: :math:`y_i - \gamma(1 - c_{ii})\hat y_i + \text{arrivals}`."""
    keep = async_links.self_weight(edges, pushes.shape[0], jax.tree.leaves(sent_y)[0])
    arrived, channel = _in_order_channel(
        model,
        edges,
        state.y_links,
        sent_y,
        pushes,
        gamma,
        jax.random.fold_in(key, _Y_CHANNEL),
        state.tick[0],
    )
    local = combine(1.0, state.tracker, -gamma * (1.0 - keep), sent_y)
    return optax.tree.add(local, arrived), channel


def _delayed_x_step(
    model: AsyncModel,
    edges: async_links.Links,
    compressor: compression.Compressor,
    opt: optax.GradientTransformation,
    variant: Variant,
    state: BCppAsyncState,
    tracker: PyTree,
    key: jax.Array,
    gamma: float,
    beta: float,
    woken: jax.Array,
):
    r""":func:`algos.push_compressed.cpp_x_step` with the x-messages on in-order channels.

    :math:`\hat x^R_i = H^R_{x,i} + r_{ii} Q_{x,i} + \sum_{\text{arrived}} r_{ij} Q_{x,j}`;
    returns ``(params, opt_state, h_x, h_x_pulled, x_links)``.
    """
    updates, opt_state = jax.vmap(opt.update)(tracker, state.opt_state, state.params)
    adapted = optax.apply_updates(state.params, updates)
    value = adapted if variant == "push_pull" else state.params
    x_key = jax.random.fold_in(key, _X_CHANNEL)
    q = compression.compress_block(compressor, x_key, optax.tree.sub(value, state.h_x))
    q = select(woken, q, jax.tree.map(jnp.zeros_like, q))
    arrived, channel = _in_order_channel(
        model, edges, state.x_links, q, woken, 1.0, x_key, state.tick[0]
    )
    keep = async_links.self_weight(edges, woken.shape[0], jax.tree.leaves(q)[0])
    v_hat = optax.tree.add(state.h_x, q)
    v_hat_pulled = optax.tree.add(combine(1.0, state.h_x_pulled, keep, q), arrived)
    if beta == 1.0:
        h_x, h_x_pulled = v_hat, v_hat_pulled
    else:
        h_x = combine(1.0 - beta, state.h_x, beta, v_hat)
        h_x_pulled = combine(1.0 - beta, state.h_x_pulled, beta, v_hat_pulled)
    params = combine(1.0, adapted, -gamma, optax.tree.sub(v_hat, v_hat_pulled))
    return params, opt_state, h_x, h_x_pulled, channel
