r"""FedSpeed (Sun, Shen, Huang, Ding, Tao, ICLR 2023): prox-correction and merged SAM steps.

FedAvg's local steps drift towards each client's own minimiser; a proximal term
:math:`\frac{1}{2\lambda}\|y - x^t\|^2` keeps them close but biases the fixed point.
FedSpeed adds a *prox-correction* :math:`\hat g_i`, a per-client dual variable that
accumulates the client's past drifts and cancels that bias, and steps along a
*merged* gradient :math:`(1-\alpha)\nabla f_i(y) + \alpha\nabla f_i(y + \rho g/\|g\|)`
(a SAM-style perturbation against local over-fitting, :func:`core.sam.sam`). Rounds,
client sampling and the server mean inside ``lax.cond`` are those of
:mod:`algos.federated` (shared through :mod:`algos._federated_round`).

Reference:
  Y. Sun, L. Shen, T. Huang, L. Ding, D. Tao. "FedSpeed: Larger Local Interval, Less
  Communication Round, and Higher Generalization Accuracy." ICLR 2023.
  https://arxiv.org/abs/2302.10429 (authors' code: ``woodenchild95/FL-Simulator``).
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
from decentjax.core.sam import sam
from decentjax.core.tree import block_size, select


class FedSpeedState(NamedTuple):
    """State of FedSpeed (``client_*`` and ``server_*`` as in :class:`FedAvgState`).

    Attributes:
      client_params: client models :math:`y_i`, leaves ``(b, ...)``.
      client_correction: prox-correction terms :math:`\\hat g_i`, leaves ``(b, ...)``,
        zero at the start and kept by clients outside the round.
      server_params: the server model :math:`x^t`, one copy per agent; the iterate
        metrics evaluate.
      active: bool ``(b,)``: whether each client is sampled in the current round.
      count: int32 ``(b,)``: local steps taken so far (the same on every agent).
    """

    client_params: PyTree
    client_correction: PyTree
    server_params: PyTree
    active: jax.Array
    count: jax.Array


def fedspeed(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: StepSize,
    *,
    local_steps: int,
    rho: float,
    lam: float,
    alpha: float = 1.0,
    participation: float = 1.0,
    correction_mean: str = "sampled",
) -> Algorithm:
    r"""FedSpeed (Sun et al. 2023, Algorithm 1).

    Round :math:`t`, sampled clients :math:`S_t` as in :func:`fedavg`. Each
    :math:`i\in S_t` sets :math:`y_i^{0} = x^t` and for :math:`k < K`, on a minibatch
    :math:`\xi`,

    .. math::

      g_1 = \nabla f_i(y_i^k;\xi), \quad
      g_2 = \nabla f_i\big(y_i^k + \rho\,g_1/\|g_1\|;\ \xi\big), \quad
      \tilde g = (1-\alpha)\,g_1 + \alpha\,g_2,

      y_i^{k+1} = y_i^k - \eta_l\Big(\tilde g - \hat g_i + \tfrac1\lambda\,(y_i^k - x^t)\Big),

    then updates its prox-correction and uploads its corrected model, and the server
    averages:

    .. math::

      \hat g_i \leftarrow \hat g_i - \tfrac1\lambda\,(y_i^K - x^t), \qquad
      \hat x_i = y_i^K - \lambda\,\hat g_i, \qquad
      x^{t+1} = \frac{1}{|S_t|}\sum_{i\in S_t} \hat x_i .

    All :math:`\hat g_i` start at zero; clients outside :math:`S_t` keep theirs.

    **The authors' code.** ``FL-Simulator`` writes :math:`h_i = -\lambda\hat g_i`
    (``lamb`` :math:`= 1/\lambda`), which gives the same local steps and, at full
    participation, the same server model. With partial participation its server takes
    :math:`\mathrm{mean}_{S_t}\,y_i^K + \mathrm{mean}_{\text{all } i}\,h_i` (every
    client's correction; ``correction_mean="all"``, which the server can form from
    the uploads alone, as it can track every :math:`h_i`) where the paper takes
    :math:`\mathrm{mean}_{S_t}\hat x_i` (``"sampled"``, the default); its ESAM
    optimiser uses :math:`\alpha = 1` (pure SAM; the default here) and clips the local
    gradient's norm at 10, which this function does not.

    Communication per round: each sampled client downloads :math:`x^t` and uploads one
    vector :math:`\hat x_i`; ``bytes_sent`` counts the upload at the last local step.

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      learning_rate: local step :math:`\eta_l`, a positive float or optax schedule of
        the global local-step index.
      local_steps: :math:`K \ge 1`.
      rho: perturbation radius :math:`\rho \ge 0` (the authors use 0.1).
      lam: prox coefficient :math:`\lambda > 0` (the authors' ``lamb`` = 1/λ = 0.1).
      alpha: merge weight :math:`\alpha \in [0, 1]` of the perturbed gradient.
      participation: fraction of clients sampled per round, in ``(0, 1]``.
      correction_mean: ``"sampled"`` (the paper: the server averages the sampled
        clients' :math:`\hat x_i`) or ``"all"`` (the authors' code: the sampled
        :math:`y_i^K` plus every client's :math:`-\lambda\hat g_i`); equal at
        full participation.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`FedSpeedState`, whose
      ``params`` is the server model.

    Raises:
      ValueError: on ``local_steps < 1``, ``participation`` outside ``(0, 1]``, a
        non-positive step size or ``lam``, ``rho < 0`` or ``alpha`` outside ``[0, 1]``.

    Examples:
      >>> from decentjax.core import comm, weights
      >>> from decentjax.models import least_squares
      >>> server = comm.gossip(weights.averaging(8))
      >>> fedspeed(least_squares().loss, server, 0.05, local_steps=5, rho=0.1, lam=10.0).name
      'fedspeed'

    References:
      Sun, Shen, Huang, Ding, Tao, ICLR 2023, https://arxiv.org/abs/2302.10429.
    """
    if correction_mean not in ("sampled", "all"):
        raise ValueError(f"correction_mean must be 'sampled' or 'all', got {correction_mean!r}.")
    k_steps = _check_local_steps(local_steps)
    n = comm.n_agents
    num = _num_participants(participation, n)
    lr = _check_step_size(learning_rate, "learning_rate")
    lam = _check_step_size(lam, "lam (the prox coefficient lambda)")
    if callable(lam):
        raise ValueError(f"lam must be a positive float, got the callable {lam!r}.")
    grad_fn = agent_grad(sam(loss_fn, rho, alpha=alpha))

    def init(params: PyTree, data: PyTree, key: jax.Array) -> FedSpeedState:
        del data, key
        server = comm.average(params)
        block = block_size(params)
        return FedSpeedState(
            client_params=server,
            client_correction=jax.tree.map(jnp.zeros_like, server),
            server_params=server,
            active=_per_agent_zeros(block, bool),
            count=_per_agent_zeros(block, jnp.int32),
        )

    begin_round, keep_round = _round_boundary(n, num)

    def aggregate(params: PyTree, state: FedSpeedState, active: jax.Array):
        x = state.server_params
        correction = jax.tree.map(
            lambda h, y, xs: h - (y - xs) / lam, state.client_correction, params, x
        )
        correction = select(active, correction, state.client_correction)
        if correction_mean == "sampled":
            sampled, every = jax.tree.map(lambda y, h: y - lam * h, params, correction), None
        else:
            sampled, every = params, jax.tree.map(lambda h: -lam * h, correction)
        zeros = jax.tree.map(jnp.zeros_like, sampled)
        # The all-agent mean of masked uploads times n/|S| (exactly 1.0 at full
        # participation) is the mean over the sampled clients; one server mean in all.
        total, every = comm.average((select(active, sampled, zeros), every))
        server = jax.tree.map(lambda m: m * (n / num), total)
        if every is not None:
            server = optax.tree.add(server, every)
        return server, correction

    def keep_server(params: PyTree, state: FedSpeedState, active: jax.Array):
        del params, active
        return state.server_params, state.client_correction

    def step(state: FedSpeedState, batch: Batch, key: jax.Array):
        # count is identical on every agent, so every device takes the same branch.
        phase = state.count[0] % k_steps
        active, params = jax.lax.cond(phase == 0, begin_round, keep_round, state, key)
        grads = grad_fn(params, batch.data)
        eta = _at(lr, state.count[0])
        stepped = jax.tree.map(
            lambda y, g, h, xs: y - _like(eta, y) * (g - h + (y - xs) / lam),
            params,
            grads,
            state.client_correction,
            state.server_params,
        )
        params = select(active, stepped, params)
        last = phase == k_steps - 1
        server, correction = jax.lax.cond(last, aggregate, keep_server, params, state, active)
        new = FedSpeedState(params, correction, server, active, state.count + 1)
        sent = jnp.where(last & active, comm.bytes_per_mean(params), 0)
        return new, {"bytes_sent": sent}

    return Algorithm(
        init=init, step=step, params=lambda state: state.server_params, name="fedspeed"
    )
