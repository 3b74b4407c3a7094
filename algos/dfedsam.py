r"""Decentralized federated learning: DFedAvg(M), DFedSAM and DFedSAM-MGS.

Each client runs :math:`K` local steps from its own model, then the clients gossip
their models with their neighbours :math:`Q` times; there is no server. DFedAvg
(Sun, Li, Wang 2022) takes plain (or heavy-ball, DFedAvgM) local SGD steps; DFedSAM
(Shi et al. 2023) takes sharpness-aware steps (:func:`core.sam.sam`), and
DFedSAM-MGS gossips :math:`Q > 1` times per round ("multiple gossip steps"), which
multiplies the models by :math:`W^Q` and so shrinks their disagreement by
:math:`\lambda^Q` per round, :math:`\lambda` the second largest singular value of
:math:`W`, for :math:`Q` times the communication.

One call of ``step`` is one local step of every client; a round is ``local_steps``
steps and the gossip happens at the end of the last one, inside ``jax.lax.cond`` on
a per-agent step counter that is the same on every agent and device (the design of
:mod:`algos.federated`), so the :math:`Q` exchanges run once per round.

References:
  * Y. Shi, L. Shen, K. Wei, Y. Sun, B. Yuan, X. Wang, D. Tao. "Improving the Model
    Consistency of Decentralized Federated Learning" (DFedSAM, DFedSAM-MGS). ICML 2023.
    https://arxiv.org/abs/2302.04083
  * T. Sun, D. Li, B. Wang. "Decentralized Federated Averaging" (DFedAvg, DFedAvgM).
    IEEE TPAMI 2022. https://arxiv.org/abs/2104.11375
  * P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur. "Sharpness-Aware Minimization for
    Efficiently Improving Generalization." ICLR 2021. https://arxiv.org/abs/2010.01412
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos._federated_round import _check_local_steps, _per_agent_zeros
from decentjax.core import requirements
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.comm import Gossip
from decentjax.core.sam import sam
from decentjax.core.tree import block_size

PyTree = Any


class DFedState(NamedTuple):
    """State of DFedAvg(M) / DFedSAM / DFedSAM-MGS.

    Attributes:
      params: per-client models :math:`x_i`, leaves ``(b, ...)``: the local iterate
        inside a round, the gossiped model after its last step.
      opt_state: per-client state of the local optax optimizer, kept across rounds
        (DFedAvgM's momentum buffer; its count drives step-size schedules).
      count: int32 ``(b,)``: local steps taken so far (the same on every agent).
    """

    params: PyTree
    opt_state: optax.OptState
    count: jax.Array


def _check_gossip_steps(gossip_steps: Any) -> int:
    if (
        isinstance(gossip_steps, bool)
        or not isinstance(gossip_steps, numbers.Integral)
        or gossip_steps < 1
    ):
        raise ValueError(f"gossip_steps must be an integer >= 1, got {gossip_steps!r}.")
    return int(gossip_steps)


def dfedsam(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    local_steps: int,
    rho: float,
    gossip_steps: int = 1,
    optimizer: optax.GradientTransformation | None = None,
    name: str | None = None,
) -> Algorithm:
    r"""DFedSAM / DFedSAM-MGS (Shi et al. 2023, Algorithm 1): local SAM steps, then gossip.

    Round :math:`t`, client :math:`i`: :math:`y_i^{t,0} = x_i^t` and for
    :math:`k = 0, \dots, K-1`, on a fresh minibatch :math:`\xi`,

    .. math::

      g = \nabla f_i(y_i^{t,k}; \xi), \qquad
      y_i^{t,k+1} = y_i^{t,k} - \eta\,\nabla f_i\big(y_i^{t,k} + \rho\,g/\|g\|;\ \xi\big),

    then :math:`Q` gossip steps with the mixing matrix :math:`W`:

    .. math::

      X^{t+1} = W^Q\, Y^{t,K}

    (rows are clients). :math:`Q = 1` is DFedSAM, :math:`Q > 1` DFedSAM-MGS; with
    :math:`\rho = 0` (:func:`dfedavg`) the local steps are plain SGD and this is
    DFedAvg, or DFedAvgM with ``optimizer=optax.sgd(lr, momentum=β)``; with
    :math:`K = 1`, :math:`Q = 1`, :math:`\rho = 0` it is DSGD (ATC). Any optax
    ``optimizer`` replaces :math:`-\eta\,\cdot` applied to the SAM gradient.

    Communication per round: each client sends :math:`Q` vectors, all at the last
    local step of the round (``bytes_sent`` is zero at the other steps).

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar`` (through
        :func:`algos.with_model` for a model with state or a keyed loss).
      comm: gossip operator; ``W`` doubly stochastic, checked on the host.
      learning_rate: local step :math:`\eta`, a float or an optax schedule of the
        client's local step count.
      local_steps: :math:`K \ge 1`, local steps per round.
      rho: SAM radius :math:`\rho \ge 0` (the paper tunes it in {0.01, ..., 0.1});
        ``0`` gives DFedAvg exactly (one gradient per step).
      gossip_steps: :math:`Q \ge 1`, gossip steps at the end of a round.
      optimizer: a local optax optimizer instead of plain SGD steps.
      name: name for logs; default ``"dfedsam"``, ``"dfedsam-mgs"`` for :math:`Q > 1`.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`DFedState`.

    Raises:
      ValueError: for ``local_steps`` or ``gossip_steps`` below 1, ``rho < 0``, a
        ``learning_rate`` / ``optimizer`` pair that is not exactly one, or a ``comm``
        whose ``W`` is not doubly stochastic. Before compiling.

    Examples:
      >>> from decentjax.core import comm, topology, weights
      >>> from decentjax.models import least_squares
      >>> op = comm.gossip(weights.metropolis_hastings(topology.ring(8)))
      >>> dfedsam(least_squares().loss, op, 0.1, local_steps=5, rho=0.05, gossip_steps=4).name
      'dfedsam-mgs'

    References:
      Shi et al., ICML 2023, https://arxiv.org/abs/2302.04083 (Algorithm 1; MGS: Q gossip
      steps); Sun, Li, Wang, TPAMI 2022, https://arxiv.org/abs/2104.11375 (DFedAvg(M)).
    """
    k_steps = _check_local_steps(local_steps)
    q_steps = _check_gossip_steps(gossip_steps)
    sam_loss = sam(loss_fn, rho)  # Checks rho; at rho = 0 the plain loss (one gradient).
    grad_loss = loss_fn if rho == 0 else sam_loss
    name = name or ("dfedsam-mgs" if q_steps > 1 else "dfedsam")
    requirements.check_operator(comm, name, "doubly_stochastic")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(grad_loss)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> DFedState:
        del data, key
        return DFedState(
            params, jax.vmap(opt.init)(params), _per_agent_zeros(block_size(params), jnp.int32)
        )

    def gossip(params: PyTree) -> PyTree:
        for _ in range(q_steps):
            params = comm.mix(params)
        return params

    def step(state: DFedState, batch: Batch, key: jax.Array):
        del key  # Deterministic given the batch.
        grads = grad_fn(state.params, batch.data)
        updates, opt_state = jax.vmap(opt.update)(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # count is identical on every agent, so every device takes the same branch.
        last = state.count[0] % k_steps == k_steps - 1
        params = jax.lax.cond(last, gossip, lambda p: p, params)
        sent = jnp.where(last, q_steps * comm.bytes_per_mix(params), 0)
        return DFedState(params, opt_state, state.count + 1), {"bytes_sent": sent}

    return Algorithm(init=init, step=step, name=name)


def dfedavg(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    local_steps: int,
    gossip_steps: int = 1,
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""DFedAvg / DFedAvgM (Sun, Li, Wang 2022): :func:`dfedsam` with :math:`\rho = 0`.

    .. math::

      y_i^{t,k+1} = y_i^{t,k} - \eta\,\nabla f_i(y_i^{t,k}; \xi), \quad k < K, \qquad
      X^{t+1} = W^Q\,Y^{t,K};

    ``optimizer=optax.sgd(η, momentum=β)`` gives DFedAvgM (each client's heavy-ball
    buffer kept across rounds). The base case DFedSAM is compared with.

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: gossip operator, ``W`` doubly stochastic.
      learning_rate: local step :math:`\eta`, float or optax schedule.
      local_steps: :math:`K \ge 1`.
      gossip_steps: :math:`Q \ge 1` gossip steps per round.
      optimizer: a local optax optimizer instead of plain SGD steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`DFedState`, named
      ``"dfedavg"``.

    Raises:
      ValueError: as :func:`dfedsam`.

    References:
      Sun, Li, Wang, "Decentralized Federated Averaging", IEEE TPAMI 2022,
      https://arxiv.org/abs/2104.11375.
    """
    return dfedsam(
        loss_fn,
        comm,
        learning_rate,
        local_steps=local_steps,
        rho=0.0,
        gossip_steps=gossip_steps,
        optimizer=optimizer,
        name="dfedavg",
    )
