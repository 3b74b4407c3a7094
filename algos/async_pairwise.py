r"""Asynchronous decentralized parallel SGD (AD-PSGD), in the tick model of :mod:`core.asynchrony`.

Each agent loops: read its local copy, compute a stochastic gradient there (slow),
average its copy pairwise with one random neighbour (both copies become the mean,
atomically), then apply the gradient, which is stale by the averagings that happened
meanwhile.

References:
  * X. Lian, W. Zhang, C. Zhang, J. Liu. "Asynchronous Decentralized Parallel
    Stochastic Gradient Descent." ICML 2018. https://arxiv.org/abs/1710.06952
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import optax

from decentjax.core import adjacency, asynchrony, comm
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.asynchrony import AsyncModel
from decentjax.core.mesh import as_varying
from decentjax.core.operator_tables import AgentTable
from decentjax.core.tree import block_size, select

PyTree = Any
COLOUR_STREAM = 0x434F


class AdPsgdState(NamedTuple):
    """State of AD-PSGD.

    Attributes:
      params: per-agent copies :math:`x_i`, leaves ``(b, ...)``.
      snapshot: :math:`\\hat x_i`, the copy each agent read when it started its current
        gradient, leaves ``(b, ...)``.
      opt_state: per-agent optax state (advanced only when the agent wakes).
      tick: ``(b,)`` int32 ticks done (equal for all agents).
    """

    params: PyTree
    snapshot: PyTree
    opt_state: optax.OptState
    tick: jax.Array


def edge_colouring(graph: Any) -> list[np.ndarray]:
    """The edges of an undirected graph split into matchings (a proper edge colouring).

    Greedy colouring of the line graph (networkx ``greedy_color``, ``largest_first``):
    at most ``2 * max_degree - 1`` matchings, deterministic.

    Args:
      graph: symmetric adjacency (dense, sparse or networkx), connected.

    Returns:
      One ``(n,)`` int64 partner array per matching (``partner[i] = i`` when unmatched).

    Raises:
      ValueError: if the graph is not a valid connected undirected adjacency.
    """
    a = adjacency.check_connected(graph)
    n = a.shape[0]
    g = nx.from_scipy_sparse_array(a) if hasattr(a, "tocoo") else nx.from_numpy_array(a)
    colours = nx.coloring.greedy_color(nx.line_graph(g), strategy="largest_first")
    matchings = [np.arange(n) for _ in range(max(colours.values()) + 1)]
    for (i, j), c in sorted(colours.items()):
        matchings[c][i], matchings[c][j] = j, i
    return matchings


def draw_matching(key: jax.Array, n_matchings: int) -> jax.Array:
    """Which matching is active in the tick of ``key``: an int32 scalar, the same everywhere."""
    return jax.random.randint(jax.random.fold_in(key, COLOUR_STREAM), (), 0, n_matchings)


def matching_matrix(partner: np.ndarray) -> np.ndarray:
    """The pairwise averaging matrix of a matching, :math:`(I + P)/2` (host, float64)."""
    n = partner.shape[0]
    p = np.zeros((n, n))
    p[np.arange(n), partner] = 1.0
    return (np.eye(n) + p) / 2


def ad_psgd(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    graph: Any,
    model: AsyncModel,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""AD-PSGD (Lian et al. 2018, Alg. 1) with random matchings per tick.

    The graph's edges are split into matchings :math:`M_1, \dots, M_C`
    (:func:`edge_colouring`). At tick :math:`t` one matching :math:`M_{c_t}` is drawn
    uniformly (the same for all agents) and each agent :math:`i` wakes with
    probability :math:`p_i` (:func:`core.asynchrony.wake`), :math:`A^t` the woken set.
    A pair :math:`(i, j) \in M_{c_t}` averages when either end is awake (the woken agent
    initiates; its partner's copy is read and written atomically, as in the paper);
    then woken agents apply the gradient computed at the copy they read when they
    started it:

    .. math::

      x_i^{t+1/2} &= \tfrac12 (x_i^t + x_j^t) \quad \text{if } (i, j) \in M_{c_t},\
        \{i, j\} \cap A^t \neq \emptyset, \qquad x_i^{t+1/2} = x_i^t \text{ otherwise},\\
      x_i^{t+1} &= x_i^{t+1/2} - \alpha\, \nabla f_{i,\xi}(\hat x_i^t), \quad
        \hat x_i^{t+1} = x_i^{t+1} \qquad (i \in A^t),

    and :math:`x_i^{t+1} = x_i^{t+1/2}`, :math:`\hat x_i^{t+1} = \hat x_i^t` for
    sleeping agents. :math:`\hat x_i` is the (possibly stale) copy read at the agent's
    last wake-up; an agent's gradient takes Geometric(:math:`p_i`) ticks.

    [RECON] The paper's agents run on continuous clocks and pick a neighbour at
    random; conflicts (two wake-ups choosing overlapping pairs) are resolved here by
    drawing one matching per tick, so the pairs of a tick are disjoint and each
    agent's partner is uniform over its neighbours (it has none in a matching that
    misses it: probability :math:`1 - \deg(i)/C` of no averaging in that tick).
    With every agent awake every tick this is DSGD in combine-then-adapt form with the
    random matching matrices :math:`W_t = (I + P_{c_t})/2`:
    :math:`X^{t+1} = W_t X^t - \alpha \nabla F(X^t)`.

    Metrics: ``bytes_sent`` per agent (one vector when its pair averages, else 0) and
    ``sim_time`` (ticks × ``model.tick``). ``model.max_delay`` is not used: the pairwise
    average is atomic in AD-PSGD.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      graph: undirected adjacency (dense, sparse or networkx) of a connected graph.
      model: wake probabilities and tick length (:func:`core.asynchrony.async_model`).
      learning_rate: :math:`\alpha`, a float or an optax schedule (of the agent's own
        number of updates).
      optimizer: optax transformation instead of plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`AdPsgdState`, named
      ``"ad-psgd"``.

    Raises:
      ValueError: before compiling, if the graph is not symmetric or not connected,
        or ``model`` is for another number of agents.

    References:
      Lian, Zhang, Zhang, Liu, ICML 2018, https://arxiv.org/abs/1710.06952.
    """
    name = "ad-psgd"
    try:
        matchings = edge_colouring(graph)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    n = matchings[0].shape[0]
    if model.n_agents != n:
        raise ValueError(
            f"{name}: the asynchrony model is for {model.n_agents} agents but the graph has {n}."
        )
    # Partner exchange through the library's gossip: P_c is a permutation (an involution).
    ops = [
        comm.gossip(2 * matching_matrix(p) - np.eye(n), doubly_stochastic=False) for p in matchings
    ]
    matched = AgentTable(
        np.stack([p != np.arange(n) for p in matchings], axis=1).astype(np.float64), "matched"
    )
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> AdPsgdState:
        del data, key
        tick = as_varying(jnp.zeros((block_size(params),), jnp.int32))
        return AdPsgdState(params, params, jax.vmap(opt.init)(params), tick)

    def step(state: AdPsgdState, batch: Batch, key: jax.Array):
        block = state.tick.shape[0]
        awake = asynchrony.wake(model, key, block)
        grads = grad_fn(state.snapshot, batch.data)
        updates, opt_state = jax.vmap(opt.update)(grads, state.opt_state, state.snapshot)
        colour = draw_matching(key, len(ops))
        flag = awake.astype(jax.tree.leaves(state.params)[0].dtype)
        branches = [lambda t, op=op: op.mix(t) for op in ops]
        partner, partner_awake = jax.lax.switch(colour, branches, (state.params, flag))
        has_partner = matched.local(block)[:, colour] > 0
        pair = has_partner & (awake | (partner_awake > 0.5))
        mean = jax.tree.map(lambda x, y: (x + y) / 2, state.params, partner)
        averaged = select(pair, mean, state.params)
        params = select(awake, optax.apply_updates(averaged, updates), averaged)
        snapshot = select(awake, params, state.snapshot)
        opt_state = select(awake, opt_state, state.opt_state)
        sent = pair.astype(flag.dtype) * ops[0].bytes_per_mean(state.params)
        metrics = {"bytes_sent": sent, "sim_time": asynchrony.tick_clock(model, state.tick)}
        return AdPsgdState(params, snapshot, opt_state, state.tick + 1), metrics

    return Algorithm(init=init, step=step, name=name)
