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

from core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from core.comm import Gossip
from core.mesh import as_varying, local_agent_ids
from core.tree import block_size, select

PyTree = Any
StepSize = float | optax.Schedule


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


def _check_local_steps(local_steps: Any) -> int:
    if isinstance(local_steps, bool) or not isinstance(local_steps, numbers.Integral):
        raise ValueError(f"local_steps must be an integer >= 1, got {local_steps!r}.")
    if local_steps < 1:
        raise ValueError(f"local_steps must be an integer >= 1, got {local_steps}.")
    return int(local_steps)


def _num_participants(participation: Any, n_agents: int) -> int:
    """``round(participation * n)`` clients per round, at least one."""
    if (
        isinstance(participation, bool)
        or not isinstance(participation, numbers.Real)
        or not 0.0 < float(participation) <= 1.0
    ):
        raise ValueError(
            f"participation must be a fraction of clients in (0, 1], got {participation!r}."
        )
    return max(1, round(float(participation) * n_agents))


def _check_step_size(value: Any, name: str) -> StepSize:
    """A positive finite float, or an optax schedule (checked when called)."""
    if callable(value):
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ValueError(f"{name} must be a positive float or an optax schedule, got {value!r}.")
    return float(value)


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


def _at(step_size: StepSize, index: jax.Array) -> jax.Array | float:
    """A step size (constant or schedule) at an integer index."""
    return step_size(index) if callable(step_size) else step_size


def _like(value: jax.Array | float, leaf: jax.Array) -> jax.Array | float:
    """``value`` in ``leaf``'s dtype (schedules return their own dtype; promotion is strict)."""
    return value if isinstance(value, float) else jnp.asarray(value, leaf.dtype)


def _per_agent_zeros(block: int, dtype: Any) -> jax.Array:
    """Zeros ``(b,)`` typed as varying over the agent axis, like every state leaf.

    ``lax.cond``/``lax.scan`` need both branches and the carry to agree on this
    type, whether or not ``init`` ran through a ``shard_map`` of its own.
    """
    return as_varying(jnp.zeros((block,), dtype))


def _draw_participants(key: jax.Array, n_agents: int, num: int, block: int) -> jax.Array:
    """Bool ``(b,)``: this block's clients among ``num`` drawn uniformly from ``n``.

    A permutation of the global indices from a key every device shares, so the
    draw does not depend on the device count.
    """
    perm = jax.random.permutation(key, n_agents)
    # rank[i] is agent i's position in the permutation; the first ``num`` are drawn.
    rank = jnp.zeros((n_agents,), jnp.int32).at[perm].set(jnp.arange(n_agents, dtype=jnp.int32))
    return rank[local_agent_ids(block)] < num


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
        scale = comm.n_agents / num
        return jax.tree.map(lambda m: m * scale, comm.average(masked))
    block = active.shape[0]
    dtype = jax.tree.leaves(trees)[0].dtype
    w = jnp.asarray(weights, dtype)[local_agent_ids(block)] * active.astype(dtype)
    num_tree = jax.tree.map(lambda t: t * w.reshape(w.shape + (1,) * (t.ndim - 1)), masked)
    sums, total = comm.average((num_tree, w))
    return jax.tree.map(lambda s: s / total.reshape(total.shape + (1,) * (s.ndim - 1)), sums)


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


def _round_boundary(n: int, num: int) -> tuple[Callable, Callable]:
    """The two ``lax.cond`` branches of a step: start a round, or keep the current one.

    Both take ``(state, key)`` of a state with ``active``, ``server_params`` and
    ``client_params`` fields and return ``(active, params)``: at a round start the
    participants are drawn from the round key and download the server model (the others
    keep theirs); inside a round both stay as they are.
    """

    def begin_round(state: Any, key: jax.Array) -> tuple[jax.Array, PyTree]:
        active = _draw_participants(key, n, num, state.active.shape[0])
        return active, select(active, state.server_params, state.client_params)

    def keep_round(state: Any, key: jax.Array) -> tuple[jax.Array, PyTree]:
        del key
        return state.active, state.client_params

    return begin_round, keep_round


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
    ``weights`` (equal :math:`w_i`) the two coincide and the aggregate is unbiased. With ``server_optimizer`` this is
    FedOpt (Reddi et al. 2021): :math:`-\Delta^r` is the pseudo-gradient fed to an
    optax transformation, e.g. ``optax.adam`` (FedAdam), ``optax.yogi`` (FedYogi)
    or ``optax.sgd(1.0, momentum=0.9)`` (server momentum); ``optax.sgd(1.0)`` is
    plain FedAvg. With :math:`K = 1`, full participation and plain SGD, FedAvg is
    centralized minibatch SGD.

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
