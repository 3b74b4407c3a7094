r"""Gradient tracking over directed graphs: Push-Pull / AB and Push-DIGing / ADD-OPT.

Push-Pull pulls :math:`x` over a row-stochastic :math:`R` and pushes the tracker over
a column-stochastic :math:`C`; Push-DIGing needs :math:`C` only and de-biases by the
pushed mass (see :mod:`algos._directed`). The tracker update is
:func:`algos.tracking.next_tracker`'s, so :math:`Y^0 = G^0` and the tracker's first
step sends nothing.

References:
  * S. Pu, W. Shi, J. Xu, A. Nedić. "Push-Pull Gradient Methods for Distributed
    Optimization in Networks." IEEE TAC 2021. https://arxiv.org/abs/1810.06653
  * R. Xin, U. A. Khan. "A Linear Algorithm for Optimization over Directed Graphs
    with Geometric Convergence" (AB). IEEE L-CSS 2018. https://arxiv.org/abs/1803.02503
  * A. Nedić, A. Olshevsky, W. Shi. "Achieving Geometric Convergence for Distributed
    Optimization over Time-Varying Graphs" (Push-DIGing). SIAM J. Optim. 2017.
    https://arxiv.org/abs/1607.03218
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos._directed import LossFn, PyTree, Variant, check_pair, check_push, check_variant
from decentjax.algos.tracking import next_tracker
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.comm import Gossip
from decentjax.core.tree import block_size, debias, leaf_dtype


class PushPullState(NamedTuple):
    """State of Push-Pull / AB.

    Attributes:
      params: iterates :math:`x_i^k`, leaves ``(b, ...)``.
      tracker: :math:`y_i^{k-1}`, the tracker used by the previous step.
      prev_grad: :math:`g_i^{k-1}`, the gradient evaluated by the previous step.
      opt_state: per-agent optax state.
      count: int32 ``(b,)``: steps taken.
    """

    params: PyTree
    tracker: PyTree
    prev_grad: PyTree
    opt_state: optax.OptState
    count: jax.Array


def push_pull(
    loss_fn: LossFn,
    pull: Gossip,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    variant: Variant = "push_pull",
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""Push-Pull (Pu, Shi, Xu, Nedić 2021) and AB (Xin & Khan 2018).

    With :math:`G^k = \nabla F(X^k)` (or a stochastic version) and :math:`Y^0 = G^0`:

    .. math::

      \text{push\_pull:}\quad & X^{k+1} = R\,(X^k - \alpha_k Y^k), \\
      \text{ab:}\quad & X^{k+1} = R X^k - \alpha_k Y^k, \\
      \text{both:}\quad & Y^{k+1} = C Y^k + G^{k+1} - G^k.

    :math:`x` is pulled over the graph of :math:`R`, the tracker pushed over the
    graph of :math:`C` (the two graphs may differ). Invariant:
    :math:`\mathbf 1^\top Y^k = \mathbf 1^\top G^k`, because :math:`C` is column
    stochastic. With exact gradients and a small constant step both converge
    linearly to :math:`\mathbf 1 x^{*\top}`. Initialisation: the given params (need
    not be consensual), :math:`Y^0 = G^0`. Communication: two vectors per agent per
    step (one on the first step, whose tracker is local).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      pull: gossip operator holding a row-stochastic ``R``.
      push: gossip operator holding a column-stochastic ``C``.
      learning_rate: :math:`\alpha_k`, a float or optax schedule.
      variant: ``"push_pull"`` (adapt then pull) or ``"ab"`` (pull, then adapt).
      optimizer: optax transformation of the tracker direction instead of plain
        steps (``x + update(y)`` replaces ``x - alpha y``).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`PushPullState`.

    Raises:
      ValueError: if ``R`` is not row-stochastic or ``C`` not column-stochastic (the
        message names the failing check), their sizes differ, or an argument is
        invalid.

    Examples:
      >>> from core import comm, directed
      >>> from models import least_squares
      >>> a = directed.unbalanced_example(8)
      >>> pull = comm.gossip(directed.row_stochastic(a), doubly_stochastic=False)
      >>> push = comm.gossip(directed.column_stochastic(a), doubly_stochastic=False)
      >>> push_pull(least_squares().loss, pull, push, learning_rate=0.05).name
      'push-pull'

    References:
      Pu et al., https://arxiv.org/abs/1810.06653; Xin & Khan,
      https://arxiv.org/abs/1803.02503.
    """
    check_variant(variant)
    check_pair(pull, push, "push_pull")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> PushPullState:
        del data, key
        zeros = jax.tree.map(jnp.zeros_like, params)
        count = jnp.zeros((block_size(params),), jnp.int32)
        return PushPullState(params, zeros, zeros, jax.vmap(opt.init)(params), count)

    def step(state: PushPullState, batch: Batch, key: jax.Array):
        del key
        first = state.count == 0
        grads = grad_fn(state.params, batch.data)
        tracker = next_tracker(first, grads, state.prev_grad, state.tracker, push.mix_if)
        updates, opt_state = jax.vmap(opt.update)(tracker, state.opt_state, state.params)
        if variant == "push_pull":
            params = pull.mix(optax.apply_updates(state.params, updates))
        else:
            params = optax.apply_updates(pull.mix(state.params), updates)
        new = PushPullState(params, tracker, grads, opt_state, state.count + 1)
        y_bytes = jnp.where(first, 0, push.bytes_per_mix(tracker))
        return new, {"bytes_sent": pull.bytes_per_mix(params) + y_bytes}

    return Algorithm(init=init, step=step, name="push-pull" if variant == "push_pull" else "ab")


class PushDigingState(NamedTuple):
    """State of Push-DIGing / ADD-OPT.

    Attributes:
      numerator: push-sum numerators :math:`u_i^k`, leaves ``(b, ...)``.
      weight: push-sum weights :math:`v_i^k` ``(b,)``.
      tracker: :math:`y_i^{k-1}`, the tracker used by the previous step.
      prev_grad: :math:`g_i^{k-1}`, the gradient evaluated by the previous step.
      opt_state: per-agent optax state.
      count: int32 ``(b,)``: steps taken.
    """

    numerator: PyTree
    weight: jax.Array
    tracker: PyTree
    prev_grad: PyTree
    opt_state: optax.OptState
    count: jax.Array


def push_diging(
    loss_fn: LossFn,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""Push-DIGing (Nedić, Olshevsky, Shi 2017) / ADD-OPT: push-sum gradient tracking.

    Only a column-stochastic :math:`C` is needed (ALGORITHMS.md §3.5):

    .. math::

      U^{k+1} &= C\,(U^k - \alpha_k Y^k), \qquad v^{k+1} = C v^k, \qquad
      X^{k+1} = \operatorname{diag}(v^{k+1})^{-1} U^{k+1}, \\
      Y^{k+1} &= C Y^k + \nabla F(X^{k+1}) - \nabla F(X^k),

    initialised with :math:`U^0 = X^0` (the given params), :math:`v^0 = \mathbf 1`,
    :math:`Y^0 = \nabla F(X^0)`. ``params(state)`` is :math:`X^k`. Invariant:
    :math:`\mathbf 1^\top Y^k = \mathbf 1^\top G^k`. Linear convergence to
    :math:`x^*` with exact gradients and a small constant step. Communication: two
    vectors and one scalar per agent per step (the tracker is not sent on the first).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      push: gossip operator holding a column-stochastic ``C``.
      learning_rate: :math:`\alpha_k`, a float or optax schedule.
      optimizer: optax transformation of the tracker direction instead of plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`PushDigingState`.

    Raises:
      ValueError: if ``C`` is not column-stochastic, or the step size is invalid.

    References:
      Nedić, Olshevsky, Shi, https://arxiv.org/abs/1607.03218; ADD-OPT (Xi et al.),
      https://arxiv.org/abs/1607.04757.
    """
    check_push(push, "push_diging")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> PushDigingState:
        del data, key
        block = block_size(params)
        zeros = jax.tree.map(jnp.zeros_like, params)
        weight = jnp.ones((block,), leaf_dtype(params))
        count = jnp.zeros((block,), jnp.int32)
        return PushDigingState(params, weight, zeros, zeros, jax.vmap(opt.init)(params), count)

    def step(state: PushDigingState, batch: Batch, key: jax.Array):
        del key
        first = state.count == 0
        x = debias(state.numerator, state.weight)
        grads = grad_fn(x, batch.data)
        tracker = next_tracker(first, grads, state.prev_grad, state.tracker, push.mix_if)
        updates, opt_state = jax.vmap(opt.update)(tracker, state.opt_state, x)
        numerator, weight = push.mix((optax.apply_updates(state.numerator, updates), state.weight))
        new = PushDigingState(numerator, weight, tracker, grads, opt_state, state.count + 1)
        y_bytes = jnp.where(first, 0, push.bytes_per_mix(tracker))
        return new, {"bytes_sent": push.bytes_per_mix((numerator, weight)) + y_bytes}

    return Algorithm(
        init=init, step=step, params=lambda s: debias(s.numerator, s.weight), name="push-diging"
    )
