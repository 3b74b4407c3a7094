r"""FedAvg-M and SCAFFOLD-M: local steps mixing the fresh gradient with the server's momentum.

Cheng, Huang, Wu and Yuan (ICLR 2024) add momentum to FedAvg and SCAFFOLD *inside the
clients' local steps*: every local step moves along
:math:`\beta\,(\text{stochastic gradient}) + (1-\beta)\,g^r`, where :math:`g^r` is the
server's momentum, the average local direction of the previous round, downloaded with
the model. With full participation FedAvg-M converges without any bound on the data
heterogeneity, with a constant local step; with partial participation SCAFFOLD-M
converges faster than SCAFFOLD. :math:`\beta = 1` gives FedAvg / SCAFFOLD back exactly.

Not to be confused with *server* momentum (FedAvgM, Hsu, Qi, Brown 2019: momentum on
the server's pseudo-gradient, ``algos.fedavg(server_optimizer=optax.sgd(1, momentum=...))``,
the launch name ``fedavgm``): here the momentum enters every local step.

Two implementations, as for FedAvg and SCAFFOLD: :func:`fedavg_client_momentum` /
:func:`scaffold_client_momentum` run every client every step (masking the unsampled
ones; rounds, draws and the server mean of :mod:`algos.federated`), and
:func:`cohort_fedavg_client_momentum` / :func:`cohort_scaffold_client_momentum` run one
round per call on the sampled cohort only (:mod:`algos.cohort`).

Which form [RECALL, medium] (ALGORITHMS.md §7; the paper's algorithm boxes were not
readable here, only its abstract): the local direction above, :math:`g^0 = 0`, the
server's :math:`g^{r+1} = \frac{1}{|S_r|\sum_k\eta_k}\sum_{i\in S_r}(x^r - y_i^{r,K})`
and :math:`x^{r+1} = x^r - \gamma g^{r+1}`, here with
:math:`\gamma = \eta_g\sum_k \eta_k` (:math:`\eta_g = 1`: plain averaging of the
clients' models, as the library's FedAvg); SCAFFOLD-M's control variate is the
client's average gradient of the round, :math:`c_i^+ = \sum_k\eta_k\nabla
f_i(y_i^{r,k}) / \sum_k \eta_k`, which is SCAFFOLD's option II at :math:`\beta = 1`.

Reference:
  Z. Cheng, X. Huang, P. Wu, K. Yuan. "Momentum Benefits Non-IID Federated Learning
  Simply and Provably." ICLR 2024. https://arxiv.org/abs/2306.16504
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos import _checks
from decentjax.algos._cohort_plan import _check_step, _Plan
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
from decentjax.algos.cohort import Aggregation, _round_algorithm
from decentjax.core.algorithm import Algorithm, Batch, agent_grad
from decentjax.core.comm import Gossip
from decentjax.core.rounds import RoundAlgorithm
from decentjax.core.tree import block_size, select


class ClientMomentumState(NamedTuple):
    """State of FedAvg-M / SCAFFOLD-M (leaves ``(b, ...)``; ``()`` where unused).

    Attributes:
      client_params: client models :math:`y_i`.
      client_control: SCAFFOLD-M's :math:`c_i` (``()`` for FedAvg-M).
      grad_sum: SCAFFOLD-M's :math:`\\sum_k \\eta_k \\nabla f_i(y_i^{r,k})` of the current
        round (``()`` for FedAvg-M).
      server_params: the server model :math:`x^r`, one copy per agent; the iterate
        metrics evaluate.
      server_control: SCAFFOLD-M's :math:`c` (``()`` for FedAvg-M).
      server_momentum: :math:`g^r`, one copy per agent.
      active: bool ``(b,)``: whether each client is sampled in the current round.
      count: int32 ``(b,)``: local steps taken so far (the same on every agent).
    """

    client_params: PyTree
    client_control: PyTree
    grad_sum: PyTree
    server_params: PyTree
    server_control: PyTree
    server_momentum: PyTree
    active: jax.Array
    count: jax.Array


def _check_momentum(momentum: Any) -> float:
    return _checks.real(
        "momentum", momentum, low=0, high=1, low_open=True,
        note="the weight beta of the fresh gradient; 1 is FedAvg / SCAFFOLD",
    )  # fmt: skip


def _client_momentum(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: StepSize,
    *,
    local_steps: int,
    momentum: float,
    server_learning_rate: StepSize,
    participation: float,
    control: bool,
    name: str,
) -> Algorithm:
    """FedAvg-M (``control=False``) and SCAFFOLD-M (``True``), every client every step."""
    k_steps = _check_local_steps(local_steps)
    beta = _check_momentum(momentum)
    n = comm.n_agents
    num = _num_participants(participation, n)
    lr = _check_step_size(learning_rate, "learning_rate")
    server_lr = _check_step_size(server_learning_rate, "server_learning_rate")
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> ClientMomentumState:
        del data, key
        server = comm.average(params)
        zeros = jax.tree.map(jnp.zeros_like, server)
        maybe = zeros if control else ()
        block = block_size(params)
        return ClientMomentumState(
            client_params=server,
            client_control=maybe,
            grad_sum=maybe,
            server_params=server,
            server_control=maybe,
            server_momentum=zeros,  # g^0 = 0.
            active=_per_agent_zeros(block, bool),
            count=_per_agent_zeros(block, jnp.int32),
        )

    begin_round, keep_round = _round_boundary(n, num)

    def aggregate(state: ClientMomentumState, params: PyTree, grad_sum: PyTree, eta_sum):
        x, active = state.server_params, state.active
        delta_y = optax.tree.sub(params, x)
        uploads = (delta_y,)
        if control:
            c_plus = jax.tree.map(lambda s: s / _like(eta_sum, s), grad_sum)
            uploads = (delta_y, optax.tree.sub(c_plus, state.client_control))
        zeros = jax.tree.map(jnp.zeros_like, uploads)
        # One server mean of the uploads: means over all n agents of masked values, so
        # (|S|/n) times the participant means.
        means = comm.average(select(active, uploads, zeros))
        mean_y = optax.tree.scale(n / num, means[0])
        eta_g = _at(server_lr, state.count[0] // k_steps)
        server = jax.tree.map(lambda xs, d: xs + _like(eta_g, d) * d, x, mean_y)
        g_new = jax.tree.map(lambda d: -d / _like(eta_sum, d), mean_y)
        if not control:
            return server, (), g_new, ()
        c = optax.tree.add(state.server_control, means[1])
        return server, c, g_new, select(active, c_plus, state.client_control)

    def keep_server(state: ClientMomentumState, params: PyTree, grad_sum: PyTree, eta_sum):
        del params, grad_sum, eta_sum
        return (
            state.server_params,
            state.server_control,
            state.server_momentum,
            (state.client_control),
        )

    def step(state: ClientMomentumState, batch: Batch, key: jax.Array):
        # count is identical on every agent, so every device takes the same branch.
        phase = state.count[0] % k_steps
        active, params = jax.lax.cond(phase == 0, begin_round, keep_round, state, key)
        state = state._replace(active=active)
        grads = grad_fn(params, batch.data)
        direction = grads
        if control:
            direction = jax.tree.map(
                lambda g, ci, c: g - ci + c, grads, state.client_control, state.server_control
            )
        direction = jax.tree.map(
            lambda g, m: beta * g + (1.0 - beta) * m, direction, state.server_momentum
        )
        eta = _at(lr, state.count[0])
        stepped = jax.tree.map(lambda y, d: y - _like(eta, y) * d, params, direction)
        params = select(active, stepped, params)
        grad_sum = state.grad_sum
        if control:  # Restarted at every round; only the sampled clients' sums are used.
            kept = jax.tree.map(lambda s: jnp.where(phase == 0, jnp.zeros_like(s), s), grad_sum)
            grad_sum = jax.tree.map(lambda s, g: s + _like(eta, g) * g, kept, grads)
        eta_sum = _round_step_sum(lr, k_steps, state.count[0])
        last = phase == k_steps - 1
        server, c, g, client_control = jax.lax.cond(
            last, aggregate, keep_server, state, params, grad_sum, eta_sum
        )
        new = ClientMomentumState(
            params, client_control, grad_sum, server, c, g, active, state.count + 1
        )
        uploads = 2 if control else 1  # Model change (and control change) per round.
        sent = jnp.where(last & active, uploads * comm.bytes_per_mean(params), 0)
        return new, {"bytes_sent": sent}

    return Algorithm(init=init, step=step, params=lambda state: state.server_params, name=name)


def _round_step_sum(lr: StepSize, k_steps: int, count: jax.Array) -> jax.Array | float:
    """:math:`\\sum_k \\eta_l(rK + k)` over the round that step ``count`` belongs to."""
    if not callable(lr):
        return k_steps * lr
    first = count - count % k_steps
    return jnp.sum(jax.vmap(lr)(first + jnp.arange(k_steps, dtype=count.dtype)))


def fedavg_client_momentum(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: StepSize,
    *,
    local_steps: int,
    momentum: float,
    server_learning_rate: StepSize = 1.0,
    participation: float = 1.0,
) -> Algorithm:
    r"""FedAvg-M (Cheng, Huang, Wu, Yuan 2024): local steps along the server's momentum too.

    Round :math:`r`, sampled clients :math:`S_r` (``participation``, drawn as in
    :func:`algos.fedavg`), :math:`d_i^{r,k} = \nabla f_{i,\xi}(y_i^{r,k})`:

    .. math::

      y_i^{r,k+1} &= y_i^{r,k} - \eta_k\bigl(\beta\,d_i^{r,k} + (1-\beta)\,g^r\bigr),
        \qquad y_i^{r,0} = x^r, \\
      g^{r+1} &= \frac{1}{|S_r|\sum_k\eta_k}\sum_{i\in S_r}(x^r - y_i^{r,K}), \qquad
      x^{r+1} = x^r - \eta_g\Bigl(\sum_k\eta_k\Bigr) g^{r+1}, \qquad g^0 = 0,

    with :math:`\eta_g = 1` plain averaging of the clients' models. One call of ``step``
    is one local step; the module docstring says which form and what is [RECALL].

    Args:
      loss_fn: per-client objective ``(params, batch) -> scalar``.
      comm: communication operator; only its server mean is used.
      learning_rate: local step :math:`\eta_k`, a positive float or optax schedule of
        the global local-step index.
      local_steps: :math:`K \ge 1`.
      momentum: :math:`\beta \in (0, 1]`, the weight of the fresh gradient (the paper's
        convention: small :math:`\beta` is heavy momentum); 1 is :func:`algos.fedavg`.
      server_learning_rate: :math:`\eta_g`, a float or schedule of the round.
      participation: fraction of clients per round, in ``(0, 1]``.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`ClientMomentumState`,
      whose ``params`` is the server model. Each sampled client uploads one vector per
      round and downloads :math:`(x^r, g^r)`.

    Raises:
      ValueError: ``momentum`` outside ``(0, 1]``, ``local_steps < 1``,
        ``participation`` outside ``(0, 1]`` or a non-positive step size.

    References:
      Cheng, Huang, Wu, Yuan, ICLR 2024, https://arxiv.org/abs/2306.16504
    """
    return _client_momentum(
        loss_fn,
        comm,
        learning_rate,
        local_steps=local_steps,
        momentum=momentum,
        server_learning_rate=server_learning_rate,
        participation=participation,
        control=False,
        name="fedavg-m",
    )


def scaffold_client_momentum(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: StepSize,
    *,
    local_steps: int,
    momentum: float,
    server_learning_rate: StepSize = 1.0,
    participation: float = 1.0,
) -> Algorithm:
    r"""SCAFFOLD-M (Cheng, Huang, Wu, Yuan 2024): SCAFFOLD plus the server's momentum.

    As :func:`fedavg_client_momentum` with the SCAFFOLD-corrected gradient
    :math:`d_i^{r,k} = \nabla f_{i,\xi}(y_i^{r,k}) - c_i + c`:

    .. math::

      y_i^{r,k+1} &= y_i^{r,k} - \eta_k\bigl(\beta\,d_i^{r,k} + (1-\beta)\,g^r\bigr),
        \qquad y_i^{r,0} = x^r, \\
      g^{r+1} &= \frac{1}{|S_r|\sum_k\eta_k}\sum_{i\in S_r}(x^r - y_i^{r,K}), \qquad
      x^{r+1} = x^r - \eta_g\Bigl(\sum_k\eta_k\Bigr) g^{r+1}, \qquad g^0 = 0,

    then :math:`c_i^+ = \sum_k \eta_k \nabla f_{i,\xi}(y_i^{r,k}) / \sum_k\eta_k` for
    :math:`i \in S_r` and :math:`c \leftarrow c + \frac1n\sum_{i\in S_r}(c_i^+ - c_i)`
    (all control variates start at 0, so :math:`c = \frac1n\sum_i c_i`). At
    :math:`\beta = 1` this is :func:`algos.scaffold` (option II). Each sampled client
    uploads two vectors per round.

    Args: as :func:`fedavg_client_momentum`.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`ClientMomentumState`.

    Raises:
      ValueError: as :func:`fedavg_client_momentum`.

    References:
      Cheng, Huang, Wu, Yuan, ICLR 2024, https://arxiv.org/abs/2306.16504
    """
    return _client_momentum(
        loss_fn,
        comm,
        learning_rate,
        local_steps=local_steps,
        momentum=momentum,
        server_learning_rate=server_learning_rate,
        participation=participation,
        control=True,
        name="scaffold-m",
    )


def _cohort(
    loss_fn, n_clients, cohort_size, learning_rate, batch_size, local_steps, local_epochs,
    momentum, server_learning_rate, weights, aggregation, scaffold, name,
) -> RoundAlgorithm:  # fmt: skip
    plan = _Plan(
        n_clients, cohort_size, batch_size, local_steps, local_epochs, weights, aggregation
    )
    return _round_algorithm(
        loss_fn,
        plan,
        learning_rate=_check_step(learning_rate, "learning_rate"),
        optimizer=None,
        mu=0.0,
        scaffold=scaffold,
        server_optimizer=None,
        server_learning_rate=_check_step(server_learning_rate, "server_learning_rate"),
        name=name,
        momentum=_check_momentum(momentum),
    )


def cohort_fedavg_client_momentum(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    n_clients: int,
    cohort_size: int,
    learning_rate: StepSize,
    *,
    batch_size: int,
    momentum: float,
    local_steps: int | None = None,
    local_epochs: int | None = None,
    server_learning_rate: StepSize = 1.0,
    weights: Any = "samples",
    aggregation: Aggregation = "unbiased",
) -> RoundAlgorithm:
    r"""FedAvg-M on the sampled cohort; one call = one round (:func:`algos.cohort_fedavg`).

    Each member :math:`i\in S_r` steps
    :math:`y_i \leftarrow y_i - \eta_l(\beta\nabla f_{i,B}(y_i) + (1-\beta) g^r)` from
    :math:`y_i = x^r`; the server forms :math:`\Delta^r` from the members' changes and
    :math:`g^{r+1}` from their mean directions :math:`(x^r - y_i)/\sum_k \eta_l^{(k)}`,
    both aggregated alike (``aggregation``, ``weights``: the module docstring of
    :mod:`algos.cohort`; with uniform weights both are cohort means, the paper's
    form), and sets :math:`x^{r+1} = x^r + \eta_g\Delta^r`; :math:`g^0 = 0`, held on
    the server beside the model. One vector up per member per round.

    Args: as :func:`algos.cohort_fedavg` (plain SGD local steps only), and
      momentum: :math:`\beta \in (0, 1]`; 1 is :func:`algos.cohort_fedavg`.

    Returns:
      A :class:`~core.rounds.RoundAlgorithm`.

    Raises:
      ValueError: as :func:`algos.cohort_fedavg`, or ``momentum`` outside ``(0, 1]``.

    References:
      Cheng, Huang, Wu, Yuan, ICLR 2024, https://arxiv.org/abs/2306.16504
    """
    return _cohort(
        loss_fn, n_clients, cohort_size, learning_rate, batch_size, local_steps, local_epochs,
        momentum, server_learning_rate, weights, aggregation, False, "fedavg-m",
    )  # fmt: skip


def cohort_scaffold_client_momentum(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    n_clients: int,
    cohort_size: int,
    learning_rate: StepSize,
    *,
    batch_size: int,
    momentum: float,
    local_steps: int | None = None,
    local_epochs: int | None = None,
    server_learning_rate: StepSize = 1.0,
    weights: Any = "uniform",
    aggregation: Aggregation = "unbiased",
) -> RoundAlgorithm:
    r"""SCAFFOLD-M on the sampled cohort; one call = one round (:func:`algos.cohort_scaffold`).

    As :func:`cohort_fedavg_client_momentum` with the corrected gradient
    :math:`\nabla f_{i,B}(y_i) - c_i + c` in place of :math:`\nabla f_{i,B}(y_i)`, then
    :math:`c_i^+ = \sum_k\eta_l^{(k)}\nabla f_{i,B}(y_i^{(k)})/\sum_k\eta_l^{(k)}` (the
    member's step-weighted mean gradient; option II at :math:`\beta = 1`) and
    :math:`c \leftarrow c + \frac1N\sum_{i\in S}(c_i^+ - c_i)`. Two vectors up per member
    per round.

    Args: as :func:`cohort_fedavg_client_momentum`.

    Returns:
      A :class:`~core.rounds.RoundAlgorithm`.

    Raises:
      ValueError: as :func:`cohort_fedavg_client_momentum`.

    References:
      Cheng, Huang, Wu, Yuan, ICLR 2024, https://arxiv.org/abs/2306.16504
    """
    return _cohort(
        loss_fn, n_clients, cohort_size, learning_rate, batch_size, local_steps, local_epochs,
        momentum, server_learning_rate, weights, aggregation, True, "scaffold-m",
    )  # fmt: skip
