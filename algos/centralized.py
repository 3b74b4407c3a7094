r"""Centralized baselines on the same agent layout: SGD and random reshuffling.

Every agent holds the same iterate :math:`x`; each step the agents' stochastic
gradients are averaged by the server mean and all apply the same update

.. math::

  x^{k+1} = x^k - \alpha_k \frac1n \sum_{i=1}^n \nabla f_{i,\xi_i^k}(x^k).

Driven by :func:`core.sampling.reshuffle` this is the RR papers' centralized RR
("CRR", each agent reshuffles its own shard); driven by :func:`core.sampling.iid`
it is centralized minibatch SGD with one sample per agent per step. It shows on
every plot what the network costs.

Reference: K. Huang et al., "Distributed Random Reshuffling over Networks", IEEE
TSP 2023 (https://arxiv.org/abs/2112.15287), baseline CRR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.core.algorithm import Algorithm, Batch, local_optimizer
from decentjax.core.comm import Gossip
from decentjax.core.conv_lowering import lowered_on_cpu
from decentjax.core.mesh import as_varying

PyTree = Any


class CentralizedState(NamedTuple):
    """State of the centralized baseline.

    Attributes:
      params: the common iterate, repeated on every agent, leaves ``(b, ...)``.
      opt_state: optimizer state, identical on every agent, leaves ``(b, ...)``.
    """

    params: PyTree
    opt_state: optax.OptState


def centralized(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    name: str = "centralized",
) -> Algorithm:
    r"""Centralized (server-averaged) gradient method.

    .. math::

      x^{k+1} = x^k - \alpha_k \frac1n \sum_{i=1}^n \nabla f_{i,\xi_i^k}(x^k),

    held by every agent (with ``optimizer``, its optax update of the averaged
    gradient). Driven by :func:`core.sampling.reshuffle` it is centralized RR;
    by :func:`core.sampling.iid`, minibatch SGD.

    The initial iterate is the average of the agents' initial parameters. Each
    step every agent uploads one gradient (counted in ``bytes_sent``).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      comm: communication operator; only its ``mean`` is used.
      learning_rate: step size, float or optax schedule.
      optimizer: optional optax optimizer for the server update.
      name: name for logs (``"centralized-rr"`` / ``"centralized-sgd"``).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`CentralizedState`.

    References:
          Huang et al., IEEE TSP 2023, https://arxiv.org/abs/2112.15287 (CRR baseline).
    """
    opt = local_optimizer(learning_rate, optimizer)

    def block_loss(params: PyTree, data: PyTree) -> jax.Array:
        # Sum of this device's agents' losses at the one common iterate. Its gradient
        # is the block's sum of per-agent gradients, computed as one model on the
        # block's pooled batch (one GEMM per layer) instead of b per-agent gradients
        # and b copies of the update: 64 agents of an MLP 784-256-10 went from 91 ms
        # to the cost of one model on the pooled batch (launch.benchmarks equal_work).
        return jnp.sum(jax.vmap(loss_fn, in_axes=(None, 0))(params, data))

    def init(params: PyTree, data: PyTree, key: jax.Array) -> CentralizedState:
        del data, key
        params = comm.average(params)
        return CentralizedState(params=params, opt_state=jax.vmap(opt.init)(params))

    def step(state: CentralizedState, batch: Batch, key: jax.Array):
        del key
        # Every agent holds the same iterate and optimizer state (init averages them
        # and every step applies the same update), so agent 0 of the block stands for all.
        params, opt_state = jax.tree.map(lambda a: a[0], (state.params, state.opt_state))
        grad_sum = jax.grad(lowered_on_cpu(block_loss))(params, batch.data)
        grads = comm.mean(jax.tree.map(lambda g: g[None], grad_sum))
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        new = jax.tree.map(
            lambda a, like: as_varying(jnp.broadcast_to(a, like.shape)),
            CentralizedState(params, opt_state),
            CentralizedState(state.params, state.opt_state),
        )
        return new, {"bytes_sent": comm.bytes_per_mean(state.params)}

    return Algorithm(init=init, step=step, name=name)
