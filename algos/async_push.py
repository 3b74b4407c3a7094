r"""Asynchronous push-sum / asynchronous Stochastic Gradient Push (overlap SGP).

Agents wake at random ticks (:mod:`core.asynchrony`); a woken agent takes a local
gradient step on its push-sum numerator and pushes column-stochastic shares of
(numerator, weight) to its out-neighbours; each share is delayed in flight by a random
number of ticks up to ``max_delay`` (:mod:`core.async_links`) and added to the
receiver's numerator and weight when it arrives. Agents that sleep neither step nor
send. No agent waits for another: the overlap of computation and communication of
SGP's asynchronous variants.

References:
  * M. Assran, M. Rabbat. "Asynchronous Gradient-Push." IEEE TAC 2021,
    https://arxiv.org/abs/1803.08950
  * M. Assran, N. Loizou, N. Ballas, M. Rabbat. "Stochastic Gradient Push for
    Distributed Deep Learning." ICML 2019, https://arxiv.org/abs/1811.10792
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from decentjax.algos._directed import LossFn, PyTree, check_push
from decentjax.core import async_links, asynchrony, digraph, weights
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.asynchrony import AsyncModel
from decentjax.core.comm import Gossip
from decentjax.core.mesh import as_varying
from decentjax.core.tree import block_size, debias, leaf_dtype, per_agent, select


class AsyncPushSumState(NamedTuple):
    """State of asynchronous push-sum / SGP.

    Attributes:
      numerator: push-sum numerators :math:`x_i`, leaves ``(b, ...)``.
      weight: push-sum weights :math:`v_i` ``(b,)``, :math:`v^0 = \\mathbf 1`.
      opt_state: per-agent optax state (advanced only when the agent wakes).
      in_flight: (numerator, weight) shares in flight, :class:`core.async_links.InFlight`.
      tick: ``(b,)`` int32 ticks done (equal for all agents).
    """

    numerator: PyTree
    weight: jax.Array
    opt_state: optax.OptState
    in_flight: async_links.InFlight
    tick: jax.Array


def check_positive_self_weights(push: Gossip, method: str) -> None:
    """Raises unless every ``C[i, i] > 0`` (a woken agent keeps a share of its mass)."""
    diag = np.asarray(push.matrix.diagonal())
    bad = np.flatnonzero(diag <= 0.0)
    if bad.size:
        raise ValueError(
            f"{method}: every agent must keep a share of its own mass, C[i, i] > 0, so its "
            f"push-sum weight stays positive while its messages are in flight; got "
            f"C[{bad[0]}, {bad[0]}] = {diag[bad[0]]} ({bad.size} agents). Use e.g. "
            "directed.column_stochastic, which gives 1 / (out-degree + 1)."
        )


def async_push_sum(
    loss_fn: LossFn,
    push: Gossip,
    model: AsyncModel,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""Asynchronous push-sum SGD over a column-stochastic :math:`C` with delayed messages.

    At tick :math:`t` let :math:`A^t` be the agents that wake (:func:`core.asynchrony.wake`).
    Each :math:`i \in A^t` steps at its de-biased estimate and pushes; every agent then
    adds the shares that arrive at :math:`t`:

    .. math::

      y_i &= x_i^t - \alpha\, \nabla f_i(x_i^t / v_i^t) \quad (i \in A^t), \qquad
      y_i = x_i^t \quad (i \notin A^t),\\
      x_i^{t+1} &= c_{ii}^{t}\, y_i + \sum_{j \to i} \sum_{s:\, s + \delta_{ij}^s = t}
        c_{ij}\, [j \in A^s]\, y_j^s, \qquad c_{ii}^t = c_{ii} \text{ if } i \in A^t
        \text{ else } 1,

    and the same recursion for the weights :math:`v` (without the gradient), with
    delays :math:`\delta_{ij}^s \in \{0, \dots, \text{max\_delay}\}` drawn uniformly per
    edge and tick. Sum of numerators plus the mass in flight is conserved by the
    pushes (:math:`\mathbf 1^\top C = \mathbf 1^\top`), and weights stay positive
    (:math:`c_{ii} > 0`, checked). ``params(state)`` is :math:`z_i = x_i / v_i`.

    With every agent awake every tick and no delay this is exactly
    :func:`algos.push_sum_sgp` (SGP, Assran et al. 2019 Alg. 1 without momentum):
    :math:`X^{t+1} = C(X^t - \alpha \nabla F(Z^t))`. Otherwise it is Assran & Rabbat's
    asynchronous gradient-push in the tick model of :mod:`core.asynchrony` [RECON: the
    paper's agents run on continuous clocks and process all received messages before
    each update; here arrivals are processed at every tick, by sleeping agents too].

    Metrics: ``bytes_sent`` per agent (one vector and one scalar when it wakes, else
    0) and ``sim_time`` (ticks × ``model.tick``).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      push: gossip operator holding a column-stochastic ``C`` of a strongly connected
        digraph with a positive diagonal.
      model: wake probabilities, delay bound and tick length (:func:`core.asynchrony.async_model`).
      learning_rate: :math:`\alpha_k`, a float or an optax schedule (of the agent's own
        number of updates).
      optimizer: optax transformation instead of plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`AsyncPushSumState`.

    Raises:
      ValueError: before compiling, if ``C`` is not column-stochastic, its digraph is
        not strongly connected, a diagonal entry is not positive, or ``model`` is for
        another number of agents.

    References:
      Assran & Rabbat 2021, https://arxiv.org/abs/1803.08950; Assran et al. 2019,
      https://arxiv.org/abs/1811.10792.
    """
    name = "async-push-sum"
    check_push(push, name)
    digraph.check_strongly_connected(weights.support(push.matrix))
    check_positive_self_weights(push, name)
    if model.n_agents != push.n_agents:
        raise ValueError(
            f"{name}: the asynchrony model is for {model.n_agents} agents but C for "
            f"{push.n_agents}."
        )
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)
    edges = async_links.links(push)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> AsyncPushSumState:
        del data, key
        block = block_size(params)
        weight = jnp.ones((block,), leaf_dtype(params))
        buffer = async_links.in_flight_init(edges, (params, weight), model.buffer)
        tick = as_varying(jnp.zeros((block,), jnp.int32))
        return AsyncPushSumState(params, weight, jax.vmap(opt.init)(params), buffer, tick)

    def step(state: AsyncPushSumState, batch: Batch, key: jax.Array):
        block = state.weight.shape[0]
        tick = state.tick[0]
        awake = asynchrony.wake(model, key, block)
        z = debias(state.numerator, state.weight)
        grads = grad_fn(z, batch.data)
        updates, opt_state = jax.vmap(opt.update)(grads, state.opt_state, z)
        stepped = optax.apply_updates(state.numerator, updates)
        y = select(awake, stepped, state.numerator)
        opt_state = select(awake, opt_state, state.opt_state)
        # A woken agent keeps c_ii of (y, v) and sends c_ji to each out-neighbour j.
        keep = jnp.where(awake, async_links.self_weight(edges, block, state.weight), 1.0)
        sent = (select(awake, y, _zeros(y)), jnp.where(awake, state.weight, 0.0))
        received = edges.receive(sent)
        in_weights = async_links.edge_weights(edges, block, state.weight)
        delay = asynchrony.delays(model, key, block, edges.slots)
        buffer = async_links.send(edges, state.in_flight, received, in_weights, delay, tick)
        (arrived_x, arrived_v), buffer = async_links.deliver(buffer, tick)
        numerator = jax.tree.map(lambda a, b: per_agent(keep, a) * a + b, y, arrived_x)
        weight = keep * state.weight + arrived_v
        new = AsyncPushSumState(numerator, weight, opt_state, buffer, state.tick + 1)
        message = push.bytes_per_mix((numerator, weight))
        metrics = {
            "bytes_sent": awake.astype(state.weight.dtype) * message,
            "sim_time": asynchrony.tick_clock(model, state.tick),
        }
        return new, metrics

    return Algorithm(
        init=init, step=step, params=lambda s: debias(s.numerator, s.weight), name=name
    )


def _zeros(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, tree)
