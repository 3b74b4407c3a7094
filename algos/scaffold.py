r"""SCAFFOLD (Karimireddy et al. 2020): federated averaging with control variates.

The clients correct every local step by :math:`c - c_i` (option II control
variates), which removes the client drift of FedAvg under heterogeneous data. Rounds,
client sampling and the server mean inside ``lax.cond`` are those of
:mod:`algos.federated` (its docstring states the design), shared through
:mod:`algos._federated_round`; :mod:`algos.federated` re-exports :func:`scaffold`
and :class:`ScaffoldState`.

Reference:
  S. P. Karimireddy, S. Kale, M. Mohri, S. J. Reddi, S. U. Stich, A. T. Suresh.
  "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning." ICML 2020.
  https://arxiv.org/abs/1910.06378
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos._federated_round import (
    PyTree,
    StepSize,
    _at,
    _check_local_steps,
    _check_step_size,
    _like,
    _num_participants,
    _per_agent_zeros,
    _round_boundary,
)
from decentjax.core.algorithm import Algorithm, Batch, agent_grad
from decentjax.core.comm import Gossip
from decentjax.core.tree import block_size, select


class ScaffoldState(NamedTuple):
    """State of SCAFFOLD (``client_*`` and ``server_*`` as in :class:`FedAvgState`).

    Attributes:
      client_params: client models :math:`y_i`, leaves ``(b, ...)``.
      client_control: client control variates :math:`c_i`, leaves ``(b, ...)``.
      server_params: the server model :math:`x_s`, one copy per agent; the iterate
        metrics evaluate.
      server_control: the server control variate :math:`c`, one copy per agent.
      active: bool ``(b,)``: whether each client is sampled in the current round.
      count: int32 ``(b,)``: local steps taken so far (the same on every agent).
    """

    client_params: PyTree
    client_control: PyTree
    server_params: PyTree
    server_control: PyTree
    active: jax.Array
    count: jax.Array


def scaffold(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: StepSize,
    *,
    local_steps: int,
    server_learning_rate: StepSize = 1.0,
    participation: float = 1.0,
) -> Algorithm:
    r"""SCAFFOLD with option II control variates (Karimireddy et al. 2020).

    Round :math:`r`, sampled clients :math:`S_r` as in :func:`fedavg`. Each
    :math:`i\in S_r` sets :math:`y_i = x^r` and takes :math:`K` corrected steps

    .. math::

      y_i \leftarrow y_i - \eta_l\big(\nabla f_{i,\xi}(y_i) - c_i + c\big),

    then updates its control variate (option II) and the server aggregates:

    .. math::

      c_i^+ = c_i - c + \frac{1}{K\eta_l}(x^r - y_i), \qquad
      x^{r+1} = x^r + \frac{\eta_g}{|S_r|}\sum_{i\in S_r}(y_i - x^r), \qquad
      c \leftarrow c + \frac1n\sum_{i\in S_r}(c_i^+ - c_i),

    and :math:`c_i \leftarrow c_i^+` for :math:`i \in S_r`. All control variates
    start at zero, so :math:`c = \frac1n\sum_i c_i` at every round. With a step-size
    schedule :math:`\eta_l` is evaluated at the global local-step index
    :math:`rK + k` and :math:`K\eta_l` becomes :math:`\sum_k \eta_l(rK+k)`, which
    keeps :math:`c_i^+` equal to the average corrected direction of the round.

    Communication per round: each sampled client downloads :math:`(x^r, c)` and
    uploads two vectors :math:`(y_i - x^r,\ c_i^+ - c_i)`; ``bytes_sent`` counts
    the upload at the last local step of the round.

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      learning_rate: local step :math:`\eta_l`, a positive float or optax schedule.
      local_steps: :math:`K \ge 1`.
      server_learning_rate: global step :math:`\eta_g`, a float or optax schedule
        of the round index.
      participation: fraction of clients sampled per round, in ``(0, 1]``.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`ScaffoldState`,
      whose ``params`` is the server model.

    Raises:
      ValueError: on ``local_steps < 1``, ``participation`` outside ``(0, 1]`` or
        a non-positive step size.

    Examples:
      >>> from core import comm, weights
      >>> from models import least_squares
      >>> server = comm.gossip(weights.averaging(8))
      >>> scaffold(least_squares().loss, server, 0.05, local_steps=10).name
      'scaffold'

    References:
      Karimireddy et al. 2020, https://arxiv.org/abs/1910.06378 (Algorithm 1).
    """
    k_steps = _check_local_steps(local_steps)
    n = comm.n_agents
    num = _num_participants(participation, n)
    lr = _check_step_size(learning_rate, "learning_rate")
    server_lr = _check_step_size(server_learning_rate, "server_learning_rate")
    grad_fn = agent_grad(loss_fn)

    def round_step_sum(count: jax.Array) -> jax.Array | float:
        """:math:`\\sum_k \\eta_l(rK + k)` over the round ending at step ``count``."""
        if not callable(lr):
            return k_steps * lr
        first = count - (k_steps - 1)
        return jnp.sum(jax.vmap(lr)(first + jnp.arange(k_steps, dtype=count.dtype)))

    def init(params: PyTree, data: PyTree, key: jax.Array) -> ScaffoldState:
        del data, key
        server = comm.average(params)
        zeros = jax.tree.map(jnp.zeros_like, server)
        block = block_size(params)
        return ScaffoldState(
            client_params=server,
            client_control=zeros,
            server_params=server,
            server_control=zeros,
            active=_per_agent_zeros(block, bool),
            count=_per_agent_zeros(block, jnp.int32),
        )

    begin_round, keep_round = _round_boundary(n, num)

    def aggregate(params: PyTree, state: ScaffoldState, active: jax.Array):
        x, c, c_i = state.server_params, state.server_control, state.client_control
        scale = 1.0 / round_step_sum(state.count[0])
        c_plus = jax.tree.map(
            lambda ci, cs, xs, y: ci - cs + _like(scale, y) * (xs - y), c_i, c, x, params
        )
        delta_y = optax.tree.sub(params, x)
        delta_c = optax.tree.sub(c_plus, c_i)
        zeros = jax.tree.map(jnp.zeros_like, (delta_y, delta_c))
        # One server mean of both uploads; means over all n agents of masked values,
        # i.e. (|S|/n) times the participant means.
        mean_y, mean_c = comm.average(select(active, (delta_y, delta_c), zeros))
        eta_g = _at(server_lr, state.count[0] // k_steps) * (n / num)
        server = jax.tree.map(lambda xs, d: xs + _like(eta_g, d) * d, x, mean_y)
        control = optax.tree.add(c, mean_c)
        return server, control, select(active, c_plus, c_i)

    def keep_server(params: PyTree, state: ScaffoldState, active: jax.Array):
        del params, active
        return state.server_params, state.server_control, state.client_control

    def step(state: ScaffoldState, batch: Batch, key: jax.Array):
        # count is identical on every agent, so every device takes the same branch.
        phase = state.count[0] % k_steps
        active, params = jax.lax.cond(phase == 0, begin_round, keep_round, state, key)
        grads = grad_fn(params, batch.data)
        eta = _at(lr, state.count[0])
        stepped = jax.tree.map(
            lambda y, g, ci, c: y - _like(eta, y) * (g - ci + c),
            params,
            grads,
            state.client_control,
            state.server_control,
        )
        params = select(active, stepped, params)
        last = phase == k_steps - 1
        server, control, client_control = jax.lax.cond(
            last, aggregate, keep_server, params, state, active
        )
        new = ScaffoldState(params, client_control, server, control, active, state.count + 1)
        # Two vectors up per sampled client per round: the model and control changes.
        sent = jnp.where(last & active, 2 * comm.bytes_per_mean(params), 0)
        return new, {"bytes_sent": sent}

    return Algorithm(
        init=init, step=step, params=lambda state: state.server_params, name="scaffold"
    )
