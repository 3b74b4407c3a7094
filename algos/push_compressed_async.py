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
from decentjax.algos.push_compressed import _ACTIVATION, _Y_CHANNEL, cpp_steps, cpp_x_step
from decentjax.core import compressed_defaults, compression
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.comm import Gossip
from decentjax.core.compressed_gossip import message_bytes
from decentjax.core.mesh import agent_keys, as_varying, local_agent_ids
from decentjax.core.tree import block_size, combine, select


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


def straggler_compute_time(
    n_agents: int,
    straggler_fraction: float = 0.0,
    straggler_slowdown: float = 1.0,
    *,
    seed: int = 0,
) -> npt.NDArray[np.float64]:
    """Per-agent compute time per gradient: 1, or ``straggler_slowdown`` for stragglers.

    ``round(straggler_fraction * n_agents)`` agents, drawn without replacement from
    ``numpy.random.default_rng(seed)``, are the stragglers, so the draw is reproducible
    and independent of the device count.

    Args:
      n_agents: number of agents.
      straggler_fraction: fraction of slow agents, in ``[0, 1]``.
      straggler_slowdown: how many times slower a straggler is, ``>= 1``.
      seed: seed of the draw of which agents straggle.

    Returns:
      float64 ``(n_agents,)`` time units per gradient.

    Raises:
      ValueError: naming the bad argument and its valid range.
    """
    if not 0.0 <= straggler_fraction <= 1.0:
        raise ValueError(f"straggler_fraction must be in [0, 1], got {straggler_fraction!r}.")
    if not (np.isfinite(straggler_slowdown) and straggler_slowdown >= 1.0):
        raise ValueError(
            f"straggler_slowdown must be a finite number >= 1, got {straggler_slowdown!r}."
        )
    times = np.ones(n_agents)
    slow = np.random.default_rng(seed).choice(
        n_agents, round(straggler_fraction * n_agents), replace=False
    )
    times[slow] = straggler_slowdown
    return times


def wake_probabilities(
    compute_time: npt.ArrayLike, wake_prob: float
) -> tuple[npt.NDArray[np.float64], float]:
    r"""Per-agent wake probabilities per tick and the tick's length in time units.

    Agent :math:`i` wakes with probability :math:`p_i = p\,\tau_{\min}/\tau_i` per tick
    (:math:`p` = ``wake_prob``, :math:`\tau_i` its compute time) and a tick lasts
    :math:`\Delta = p\,\tau_{\min}`, so every agent wakes on average once per
    :math:`\tau_i` time units: a Bernoulli approximation of Poisson clocks with rates
    :math:`1/\tau_i`, exact as :math:`p \to 0`.

    Args:
      compute_time: :math:`\tau`, positive ``(n_agents,)``.
      wake_prob: :math:`p \in (0, 1]`, the fastest agents' probability.

    Returns:
      ``(p_i, Delta)``.
    """
    tau = np.asarray(compute_time, np.float64)
    return wake_prob * tau.min() / tau, wake_prob * float(tau.min())


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


def _wake(key: jax.Array, probs: npt.NDArray[np.float64], block: int) -> jax.Array:
    """Which agents of this block wake: Bernoulli(``probs[i]``) from ``fold_in(key, i)``.

    ``probs`` holds every agent's probability by global index ``i``, so the draw does not
    depend on the device count. Local view only.
    """
    p = jnp.asarray(probs, jnp.result_type(float))[local_agent_ids(block)]
    return jax.vmap(jax.random.bernoulli)(agent_keys(key, block), p)


def _check_compute_time(compute_time: npt.ArrayLike | None, n: int) -> npt.NDArray[np.float64]:
    """``compute_time`` as float64 ``(n,)``, ones if ``None``; raises if not positive."""
    if compute_time is None:
        return np.ones(n)
    tau = np.asarray(compute_time, np.float64)
    if tau.shape != (n,) or not np.all(np.isfinite(tau)) or not np.all(tau > 0):
        raise ValueError(
            f"b_cpp_async: compute_time must be {n} finite positive numbers (one per "
            f"agent), got shape {tau.shape} and values {tau!r}."
        )
    return tau


def b_cpp_async(
    loss_fn: LossFn,
    pull: Gossip,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    compressor: compression.Compressor,
    wake_prob: float,
    compute_time: npt.ArrayLike | None = None,
    gamma: float | None = None,
    beta: float | None = None,
    variant: Variant = "ab",
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""B-CPP in the asynchronous broadcast setting (Song, Shi, Pu, Yan, IEEE TSP 2022).

    **Wake-ups and time.** One step is one tick. Agent :math:`i` wakes with
    probability :math:`p_i = p\,\tau_{\min}/\tau_i` (:math:`p` = ``wake_prob``,
    :math:`\tau_i` = ``compute_time[i]``, its time per gradient), drawn from the tick
    key folded with its global index; a tick lasts :math:`\Delta = p\,\tau_{\min}`,
    so each agent computes on average once per :math:`\tau_i` time units
    (:func:`wake_probabilities`). ``metrics["sim_time"]`` is the global simulated
    wall-clock :math:`(k+1)\Delta` after tick :math:`k` (the same on every agent).
    Messages arrive within the tick (no delay model here). A synchronous method on the
    same agents waits for the slowest: its round lasts :math:`\max_i \tau_i`.

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
    reference starts in CPP (a transient while stragglers have not woken yet). Sleeping agents
    only receive: their :math:`H_x^R` and the mass pushed into their :math:`y`. So
    :math:`\mathbf 1^\top Y = \mathbf 1^\top G` holds after every tick for every wake
    pattern and compressor (:math:`\mathbf 1^\top (I - C) = 0`), with :math:`G` each
    agent's last gradient (zero before its first wake-up, and :math:`Y^0 = 0`). An
    agent's first wake-up sends only its x-message, as CPP's first step does. With
    every agent awake in every tick (:math:`p = 1`, equal ``compute_time``) this is
    CPP step for step, with the same compressor draws.

    How receivers hold :math:`\hat y_j`: the pushed term :math:`\gamma c_{ij}\hat y_j`
    needs the sender's reference :math:`h_{y,j}`, so each agent keeps a copy of the
    y-references of its in-neighbours (O(in-degree) vectors), updated from the same
    messages. The simulation does not store those copies: it mixes the woken senders'
    :math:`\hat y` with ``push``, which moves no information the receivers lack.
    Bytes are counted as what is sent: per woken agent the compressor's exact bits / 8
    of its x-message, plus its y-message when it pushes (zero when asleep).

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
      learning_rate: :math:`\alpha`, a float or optax schedule (of the agent's own
        optimizer steps, which advance only when it wakes).
      compressor: any :class:`core.compression.Compressor`.
      wake_prob: the fastest agents' wake probability per tick, in ``(0, 1]``.
      compute_time: per-agent time per gradient :math:`\tau_i > 0`, ``(n_agents,)``
        (e.g. :func:`straggler_compute_time`); default all 1.
      gamma: consensus step :math:`\gamma \in (0, 1]`; default CPP's.
      beta: reference-point step :math:`\beta \in (0, 1]`; default :math:`\delta`.
      variant: ``"ab"`` or ``"push_pull"``, as in :func:`algos.cpp`.
      optimizer: optax transformation of the tracker direction instead of plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`BCppAsyncState`;
      ``metrics`` has ``"bytes_sent"`` and ``"sim_time"`` per agent, ``(b,)``.

    Raises:
      ValueError: before compiling, if ``R``/``C`` fail their checks (e.g. the digraph
        is not strongly connected), ``wake_prob``, ``gamma`` or ``beta`` is not in
        ``(0, 1]``, or ``compute_time`` is not one positive number per agent.

    References:
      Song, Shi, Pu, Yan, https://arxiv.org/abs/2106.07243.
    """
    method = "b_cpp_async"
    check_variant(variant)
    check_pair(pull, push, method)
    checked = check_unit_interval("wake_prob", wake_prob, method)
    if checked is None:
        raise ValueError(f"{method}: wake_prob must be a number in (0, 1], got None.")
    probs, tick_length = wake_probabilities(
        _check_compute_time(compute_time, pull.n_agents), checked
    )
    gamma = check_unit_interval("gamma", gamma, method)
    beta = check_unit_interval("beta", beta, method)
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)
    spread = compressed_defaults.operator_spread(pull, push)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> BCppAsyncState:
        del data, key
        zeros = jax.tree.map(jnp.zeros_like, params)
        # Varying over the agent axis: wake counts differ between agents.
        count = as_varying(jnp.zeros((block_size(params),), jnp.int32))
        opt_state = jax.vmap(opt.init)(params)
        return BCppAsyncState(params, zeros, zeros, zeros, zeros, zeros, opt_state, count, count)

    def step(state: BCppAsyncState, batch: Batch, key: jax.Array):
        g, b = cpp_steps(state.params, compressor, spread, gamma, beta)
        woken = _wake(jax.random.fold_in(key, _ACTIVATION), probs, block_size(state.params))
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
        y_diff = optax.tree.sub(sent_y, push.mix(sent_y))
        mixed = combine(1.0, state.tracker, -g, y_diff)
        tracker = optax.tree.add(mixed, optax.tree.sub(grads, state.prev_grad))
        h_y = y_hat if b == 1.0 else combine(1.0 - b, state.h_y, b, y_hat)
        h_y = select(pushes, h_y, state.h_y)

        # x-channel: woken agents broadcast C(X - H_x) and take CPP's x-step.
        params, opt_state, h_x, h_x_pulled = cpp_x_step(
            pull, compressor, opt, variant, state, tracker, key, g, b, woken
        )
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
        )
        x_bytes = jnp.where(woken, message_bytes(pull, compressor, params), 0.0)
        y_bytes = jnp.where(pushes, message_bytes(push, compressor, tracker), 0.0)
        sim_time = new.tick.astype(jnp.result_type(float)) * tick_length
        return new, {"bytes_sent": x_bytes + y_bytes, "sim_time": sim_time}

    return Algorithm(init=init, step=step, name="b-cpp-async")
