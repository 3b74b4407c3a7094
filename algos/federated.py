r"""Federated methods: FedAvg / local SGD, FedProx, FedOpt and SCAFFOLD.

The clients are the agents of the agent axis and the server is the all-agent mean
of :mod:`core.comm` (:meth:`~core.comm.Gossip.average`); no gossip graph is used.
One call of ``step`` is one *local* step of every client; a communication round is
``local_steps`` (:math:`K`) consecutive steps, and the server aggregates at the end
of the last one. Rounds are counted in steps, not epochs, so they may straddle
epoch boundaries (with :func:`core.sampling.full_batch`, one step is one epoch).

**Round boundaries and collectives.** Every state carries a per-agent step counter
``count`` that *every* client advances at every step, sampled or not, so it holds
the same value on every agent and device. The round start (``count % K == 0``) and
end (``count % K == K - 1``) are decided from it, and the server aggregation runs
inside ``jax.lax.cond``. Under ``jax.shard_map`` with ``check_vma=True`` (JAX
0.10.2) a ``cond`` whose predicate is typed device-varying may contain collectives;
it lowers to an XLA ``conditional`` with the all-reduce inside the branch, which is
correct because all devices evaluate the same predicate value. So the server mean
is executed once per round, not once per step, and ``bytes_sent`` is non-zero only
at the last step of a round, for the sampled clients.

**Client sampling.** At the first step of a round, ``round(participation * n)``
clients are drawn uniformly without replacement: a permutation of the *global*
agent indices ``0..n-1`` from that step's key (the same key on every device), so the
draw is identical on 1 or 8 devices. Clients not drawn do nothing in the round:
their client state (model, optimizer state, control variate) is left bit-for-bit
as it was, and they send nothing.

References:
  * H. B. McMahan, E. Moore, D. Ramage, S. Hampson, B. Agüera y Arcas.
    "Communication-Efficient Learning of Deep Networks from Decentralized Data"
    (FedAvg). AISTATS 2017. https://arxiv.org/abs/1602.05629
  * T. Li, A. K. Sahu, M. Zaheer, M. Sanjabi, A. Talwalkar, V. Smith. "Federated
    Optimization in Heterogeneous Networks" (FedProx). MLSys 2020.
    https://arxiv.org/abs/1812.06127
  * S. Reddi, Z. Charles, M. Zaheer, Z. Garrett, K. Rush, J. Konečný, S. Kumar,
    H. B. McMahan. "Adaptive Federated Optimization" (FedOpt: FedAdam, FedYogi,
    FedAdagrad). ICLR 2021. https://arxiv.org/abs/2003.00295
  * S. P. Karimireddy, S. Kale, M. Mohri, S. J. Reddi, S. U. Stich, A. T. Suresh.
    "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning." ICML 2020.
    https://arxiv.org/abs/1910.06378
  * K. Huang, X. Li, S. Pu. "Distributed Stochastic Optimization under a General
    Variance Condition" (FedAvg and SCAFFOLD without a heterogeneity bound). IEEE
    TAC 2024. https://arxiv.org/abs/2301.12677

This module holds FedAvg / local SGD, FedProx and FedOpt; SCAFFOLD lives in
:mod:`algos.scaffold` and the round machinery they share in
:mod:`algos._federated_round`. :func:`scaffold` and :class:`ScaffoldState` are
re-exported here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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
from decentjax.algos.scaffold import ScaffoldState, scaffold
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.comm import Gossip
from decentjax.core.mesh import local_agent_ids
from decentjax.core.tree import block_size, debias, scale, select

__all__ = [
    "FedAvgState",
    "PyTree",
    "ScaffoldState",
    "StepSize",
    "fedavg",
    "fedprox",
    "scaffold",
]


class FedAvgState(NamedTuple):
    """State of FedAvg / local SGD, FedProx and FedOpt.

    The ``client_*`` fields belong to the clients and are left bit-for-bit untouched
    in rounds where a client is not sampled; the ``server_*`` fields are the
    server's, replicated on every agent so that every leaf has the agent axis.

    Attributes:
      client_params: client models :math:`y_i`, leaves ``(b, ...)``.
      client_opt_state: per-client state of the local optax optimizer, kept across
        rounds (its count drives step-size schedules), leaves ``(b, ...)``.
      server_params: the server model :math:`x_s`, one copy per agent, leaves
        ``(b, ...)``; this is the iterate metrics evaluate.
      server_opt_state: the server optimizer's state, one copy per agent; ``()``
        without a server optimizer.
      active: bool ``(b,)``: whether each client is sampled in the current round.
      count: int32 ``(b,)``: local steps taken so far (the same on every agent).
    """

    client_params: PyTree
    client_opt_state: optax.OptState
    server_params: PyTree
    server_opt_state: optax.OptState
    active: jax.Array
    count: jax.Array


def _check_weights(weights: Any, n_agents: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_agents,) or not np.all(np.isfinite(w)) or not np.all(w > 0):
        raise ValueError(
            f"weights must be {n_agents} finite positive numbers (one per client, e.g. data "
            f"sizes), got shape {w.shape} with values {w!r}."
        )
    return w


def _participant_mean(
    comm: Gossip, trees: PyTree, active: jax.Array, weights: np.ndarray | None, num: int
) -> PyTree:
    r"""Mean over the sampled clients, handed back to every agent (local view).

    With ``weights`` the mean is :math:`\sum_{i\in S} w_i t_i / \sum_{i\in S} w_i`
    (self-normalised, McMahan et al. 2017; biased under partial participation);
    without, :math:`\frac1{|S|}\sum_{i\in S} t_i`. One server mean (all-reduce) of
    all leaves together.
    """
    masked = select(active, trees, jax.tree.map(jnp.zeros_like, trees))
    if weights is None:
        # Static |S|: the all-agent mean times n/|S| (exactly 1.0 at full participation,
        # so full-participation FedAvg is the plain all-agent average).
        factor = comm.n_agents / num
        return jax.tree.map(lambda m: m * factor, comm.average(masked))
    block = active.shape[0]
    dtype = jax.tree.leaves(trees)[0].dtype
    w = jnp.asarray(weights, dtype)[local_agent_ids(block)] * active.astype(dtype)
    num_tree = scale(w, masked)
    sums, total = comm.average((num_tree, w))
    return debias(sums, total)


def _local_sgd(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    opt: optax.GradientTransformation,
    *,
    local_steps: Any,
    participation: Any,
    server_optimizer: optax.GradientTransformation | None,
    server_learning_rate: Any,
    weights: Any,
    mu: float,
    name: str,
) -> Algorithm:
    """FedAvg with an optional proximal term; shared by :func:`fedavg` and :func:`fedprox`."""
    k_steps = _check_local_steps(local_steps)
    n = comm.n_agents
    num = _num_participants(participation, n)
    weights = _check_weights(weights, n)
    server_lr = _check_step_size(server_learning_rate, "server_learning_rate")
    if server_optimizer is not None and server_lr != 1.0:
        raise ValueError(
            "server_learning_rate applies only without server_optimizer (put the server step "
            f"size inside the optax transform); got server_learning_rate={server_learning_rate!r}."
        )
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> FedAvgState:
        del data, key  # The first round's draw uses the step key.
        server = comm.average(params)  # The server starts from the clients' mean.
        block = block_size(params)
        return FedAvgState(
            client_params=server,
            client_opt_state=jax.vmap(opt.init)(server),
            server_params=server,
            server_opt_state=()
            if server_optimizer is None
            else jax.vmap(server_optimizer.init)(server),
            active=_per_agent_zeros(block, bool),
            count=_per_agent_zeros(block, jnp.int32),
        )

    begin_round, keep_round = _round_boundary(n, num)

    def aggregate(client_params: PyTree, state: FedAvgState, active: jax.Array):
        delta = optax.tree.sub(client_params, state.server_params)
        mean_delta = _participant_mean(comm, delta, active, weights, num)
        if server_optimizer is None:
            lr = _at(server_lr, state.count[0] // k_steps)  # Schedules index rounds.
            server = jax.tree.map(
                lambda x, d: x + _like(lr, d) * d, state.server_params, mean_delta
            )
            return server, state.server_opt_state
        # FedOpt: the pseudo-gradient is -Delta, so optax.sgd(1.0) gives x_s + Delta.
        pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
        updates, server_opt_state = jax.vmap(server_optimizer.update)(
            pseudo_grad, state.server_opt_state, state.server_params
        )
        return optax.apply_updates(state.server_params, updates), server_opt_state

    def keep_server(client_params: PyTree, state: FedAvgState, active: jax.Array):
        del client_params, active
        return state.server_params, state.server_opt_state

    def step(state: FedAvgState, batch: Batch, key: jax.Array):
        # count is identical on every agent, so every device takes the same branch.
        phase = state.count[0] % k_steps
        active, params = jax.lax.cond(phase == 0, begin_round, keep_round, state, key)
        grads = grad_fn(params, batch.data)
        # FedProx: gradient of mu/2 ||y - x_s||^2 (added even at mu = 0, where it is +0).
        grads = jax.tree.map(lambda g, y, x: g + mu * (y - x), grads, params, state.server_params)
        updates, opt_state = jax.vmap(opt.update)(grads, state.client_opt_state, params)
        params = select(active, optax.apply_updates(params, updates), params)
        opt_state = select(active, opt_state, state.client_opt_state)
        last = phase == k_steps - 1
        server, server_opt_state = jax.lax.cond(last, aggregate, keep_server, params, state, active)
        new = FedAvgState(params, opt_state, server, server_opt_state, active, state.count + 1)
        # Each sampled client uploads one vector (its model change) per round.
        sent = jnp.where(last & active, comm.bytes_per_mean(params), 0)
        return new, {"bytes_sent": sent}

    return Algorithm(init=init, step=step, params=lambda state: state.server_params, name=name)


def fedavg(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: StepSize | None = None,
    *,
    local_steps: int,
    optimizer: optax.GradientTransformation | None = None,
    participation: float = 1.0,
    server_optimizer: optax.GradientTransformation | None = None,
    server_learning_rate: StepSize = 1.0,
    weights: Any = None,
) -> Algorithm:
    r"""FedAvg / local SGD with partial participation, and FedOpt.

    Round :math:`r` with server model :math:`x^r` and sampled clients
    :math:`S_r` (:math:`|S_r| = \operatorname{round}(p\,n)`, uniform without
    replacement): each :math:`i \in S_r` sets :math:`y_i^{r,0} = x^r` and takes
    :math:`K` local steps

    .. math::

      y_i^{r,k+1} = y_i^{r,k} - \alpha\, \nabla f_{i,\xi_i^{r,k}}(y_i^{r,k}),
      \qquad k = 0, \dots, K-1,

    (any optax transformation replaces :math:`-\alpha\nabla f`), then the server
    forms the weighted mean change and steps

    .. math::

      \Delta^r = \frac{\sum_{i\in S_r} w_i\,(y_i^{r,K} - x^r)}{\sum_{i\in S_r} w_i},
      \qquad
      x^{r+1} = x^r + \eta_g \Delta^r
      \quad\text{or}\quad
      x^{r+1} = x^r + \mathrm{ServerOpt}(-\Delta^r),

    with :math:`w_i = 1` unless ``weights`` are given. Clients outside
    :math:`S_r` do nothing in round :math:`r`.

    **Which weighted form.** With ``weights`` and partial participation this is the
    *self-normalised* (ratio) aggregate of McMahan et al. 2017: the weights are
    renormalised over the sampled clients. It is a *biased* estimate of the
    full-participation aggregate :math:`\sum_{i=1}^n w_i \Delta_i / \sum_{i=1}^n w_i`
    (the expectation of a ratio is not the ratio of expectations), unless all
    :math:`w_i` are equal or :math:`p = 1`. The unbiased estimate under uniform
    sampling, :math:`\frac{n}{|S_r|}\sum_{i \in S_r} p_i \Delta_i` with
    :math:`p_i = w_i / \sum_j w_j`, is not offered by this function. Without
    ``weights`` (equal :math:`w_i`) the two coincide and the aggregate is unbiased.

    With ``server_optimizer`` this is FedOpt (Reddi et al. 2021): :math:`-\Delta^r` is
    the pseudo-gradient fed to an optax transformation, e.g. ``optax.adam`` (FedAdam),
    ``optax.yogi`` (FedYogi) or ``optax.sgd(1.0, momentum=0.9)`` (server momentum);
    ``optax.sgd(1.0)`` is plain FedAvg. With :math:`K = 1`, full participation and
    plain SGD, FedAvg is centralized minibatch SGD.

    Communication per round: each sampled client downloads :math:`x^r` and uploads
    one vector :math:`y_i^{r,K} - x^r`. ``bytes_sent`` counts the upload, at the
    last local step of the round, for sampled clients only.

    The local optimizer state is kept across rounds (not reset at download), so a
    schedule counts the client's own local steps and local momentum carries over;
    with :math:`K=1` and full participation, local SGD with momentum (linear in the
    gradients) is then centralized SGD with the same momentum.

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      learning_rate: local step :math:`\alpha`, a float or optax schedule (of the
        client's local step count).
      local_steps: :math:`K \ge 1`, local steps per round.
      optimizer: a local optax optimizer instead of plain SGD steps.
      participation: fraction :math:`p \in (0, 1]` of clients sampled per round.
      server_optimizer: optional optax transformation of the pseudo-gradient.
      server_learning_rate: :math:`\eta_g > 0` without ``server_optimizer``, a
        float or optax schedule of the round index.
      weights: optional ``(n,)`` positive per-client aggregation weights (e.g. data
        sizes), normalised over the sampled clients (the biased self-normalised
        form; see "Which weighted form" above).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`FedAvgState`, whose
      ``params`` is the server model (a copy on every agent).

    Raises:
      ValueError: on ``local_steps < 1``, ``participation`` outside ``(0, 1]``, a
        non-positive step size, bad ``weights``, or ``server_learning_rate != 1``
        together with ``server_optimizer``.

    Examples:
      >>> import optax
      >>> from core import comm, weights
      >>> from models import least_squares
      >>> server = comm.gossip(weights.averaging(8))
      >>> alg = fedavg(least_squares().loss, server, 0.1, local_steps=5, participation=0.5)
      >>> alg.name
      'fedavg'
      >>> fedavg(least_squares().loss, server, 0.1, local_steps=5,
      ...        server_optimizer=optax.adam(0.01)).name
      'fedopt'

    References:
      McMahan et al. 2017, https://arxiv.org/abs/1602.05629;
      Reddi et al. 2021, https://arxiv.org/abs/2003.00295.
    """
    return _local_sgd(
        loss_fn,
        comm,
        local_optimizer(learning_rate, optimizer),
        local_steps=local_steps,
        participation=participation,
        server_optimizer=server_optimizer,
        server_learning_rate=server_learning_rate,
        weights=weights,
        mu=0.0,
        name="fedavg" if server_optimizer is None else "fedopt",
    )


def fedprox(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: StepSize | None = None,
    *,
    mu: float,
    local_steps: int,
    optimizer: optax.GradientTransformation | None = None,
    participation: float = 1.0,
    server_optimizer: optax.GradientTransformation | None = None,
    server_learning_rate: StepSize = 1.0,
    weights: Any = None,
) -> Algorithm:
    r"""FedProx: FedAvg whose clients minimise a proximally regularised loss.

    In round :math:`r` each sampled client runs :math:`K` local steps on

    .. math::

      h_i(y; x^r) = f_i(y) + \frac{\mu}{2}\|y - x^r\|^2, \qquad
      y_i^{r,k+1} = y_i^{r,k} - \alpha\big(\nabla f_{i,\xi}(y_i^{r,k})
        + \mu\,(y_i^{r,k} - x^r)\big),

    and the server aggregates as in :func:`fedavg`. The paper's inexact local
    solver is these :math:`K` (optax) steps, as in its experiments. ``mu = 0`` is
    FedAvg. Communication as in :func:`fedavg`: one vector up per sampled client per
    round.

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      learning_rate: local step :math:`\alpha`, float or optax schedule.
      mu: proximal weight :math:`\mu \ge 0`.
      local_steps: :math:`K \ge 1`.
      optimizer: a local optax optimizer instead of plain SGD steps.
      participation: fraction of clients sampled per round, in ``(0, 1]``.
      server_optimizer: optional optax transformation of the pseudo-gradient.
      server_learning_rate: :math:`\eta_g` without ``server_optimizer``.
      weights: optional ``(n,)`` positive per-client aggregation weights,
        normalised over the sampled clients (the biased self-normalised form of
        :func:`fedavg`).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`FedAvgState`.

    Raises:
      ValueError: if ``mu`` is negative or not finite, or as :func:`fedavg`.

    Examples:
      >>> from core import comm, weights
      >>> from models import least_squares
      >>> server = comm.gossip(weights.averaging(8))
      >>> fedprox(least_squares().loss, server, 0.1, mu=0.01, local_steps=5).name
      'fedprox'

    References:
      Li et al. 2020, https://arxiv.org/abs/1812.06127.
    """
    if (
        isinstance(mu, bool)
        or not isinstance(mu, numbers.Real)
        or not math.isfinite(mu)
        or not mu >= 0
    ):
        raise ValueError(f"mu must be a finite number >= 0, got {mu!r}.")
    return _local_sgd(
        loss_fn,
        comm,
        local_optimizer(learning_rate, optimizer),
        local_steps=local_steps,
        participation=participation,
        server_optimizer=server_optimizer,
        server_learning_rate=server_learning_rate,
        weights=weights,
        mu=float(mu),
        name="fedprox",
    )
