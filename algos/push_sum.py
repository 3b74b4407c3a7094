r"""Subgradient-push / Stochastic Gradient Push over a column-stochastic C.

Push-sum divides the pushed numerators by the pushed mass :math:`v^k = C^k \mathbf 1`
to de-bias (see :mod:`algos._directed` for the directed-graph setting and checks).

References:
  * A. Nedić, A. Olshevsky. "Stochastic Gradient-Push for Strongly Convex Functions
    on Time-Varying Directed Graphs." IEEE TAC 2016. https://arxiv.org/abs/1406.2075
  * M. Assran, N. Loizou, N. Ballas, M. Rabbat. "Stochastic Gradient Push for
    Distributed Deep Learning." ICML 2019. https://arxiv.org/abs/1811.10792
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos._directed import LossFn, PyTree, check_push
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.comm import Gossip
from decentjax.core.tree import block_size, debias, leaf_dtype


class PushSumState(NamedTuple):
    """State of subgradient-push / SGP.

    Attributes:
      numerator: push-sum numerators :math:`x_i^k` (mass variables), leaves ``(b, ...)``.
      weight: push-sum weights :math:`v_i^k` ``(b,)``, :math:`v^0 = \\mathbf 1`.
      opt_state: per-agent optax state (its count drives schedules).
    """

    numerator: PyTree
    weight: jax.Array
    opt_state: optax.OptState


def push_sum_sgp(
    loss_fn: LossFn,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""Subgradient-push / Stochastic Gradient Push (SGP) over a column-stochastic C.

    With numerators :math:`X^k`, weights :math:`v^k` and de-biased iterates
    :math:`Z^k = \operatorname{diag}(v^k)^{-1} X^k`:

    .. math::

      X^{k+1} = C\big(X^k - \alpha_k \nabla F(Z^k)\big), \qquad
      v^{k+1} = C v^k, \qquad Z^{k+1} = \operatorname{diag}(v^{k+1})^{-1} X^{k+1}.

    This is SGP's order (local step, then push; Assran et al. 2019, Alg. 1 without
    momentum). Nedić & Olshevsky's subgradient-push writes the same recursion for
    :math:`\Omega^{k+1} = C X^k` (push, then step at the pushed ratio); the two
    sequences coincide up to where the first gradient step falls. Initialisation:
    :math:`X^0 =` the given params, :math:`v^0 = \mathbf 1`. ``params(state)`` is
    :math:`Z^k`. With a zero gradient this is push-sum averaging: :math:`Z^k \to`
    the exact mean of :math:`X^0` at every agent, on any strongly connected digraph.
    With a constant step and exact gradients it converges only to a neighbourhood of
    :math:`x^*` (like DSGD); use a decaying step or a tracking method for exactness.

    Communication: one vector and one scalar pushed per step.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      push: gossip operator holding a column-stochastic ``C``.
      learning_rate: :math:`\alpha_k`, a float or optax schedule.
      optimizer: optax transformation instead of plain steps (e.g. SGP's local
        Nesterov momentum, ``optax.sgd(lr, momentum=0.9, nesterov=True)``).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`PushSumState`.

    Raises:
      ValueError: if ``C`` is not column-stochastic (the message says which check
        fails), or the step size is invalid.

    References:
      Nedić & Olshevsky 2016, https://arxiv.org/abs/1406.2075; Assran et al. 2019,
      https://arxiv.org/abs/1811.10792.
    """
    check_push(push, "push_sum_sgp")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> PushSumState:
        del data, key
        weight = jnp.ones((block_size(params),), leaf_dtype(params))
        return PushSumState(params, weight, jax.vmap(opt.init)(params))

    def step(state: PushSumState, batch: Batch, key: jax.Array):
        del key
        z = debias(state.numerator, state.weight)
        grads = grad_fn(z, batch.data)
        updates, opt_state = jax.vmap(opt.update)(grads, state.opt_state, z)
        # One mix of (numerator, weight): one message of d + 1 numbers per agent.
        numerator, weight = push.mix((optax.apply_updates(state.numerator, updates), state.weight))
        new = PushSumState(numerator, weight, opt_state)
        return new, {"bytes_sent": push.bytes_per_mix((numerator, weight))}

    return Algorithm(
        init=init, step=step, params=lambda s: debias(s.numerator, s.weight), name="sgp"
    )
