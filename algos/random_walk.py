r"""Random-walk (token) SGD and SGD driven by a self-repellent random walk (SRRW).

One model, the token, walks the graph. At step :math:`k` it sits at agent
:math:`X_k`, which takes a stochastic-gradient step on it with its own data and passes
it to a neighbour drawn from a transition kernel:

.. math::

  \theta_{k+1} = \theta_k - \alpha_k \nabla f_{X_k, \xi_k}(\theta_k), \qquad
  X_{k+1} \sim K_k(X_k, \cdot).

* **Random-walk SGD** (Sun, Sun, Yin, "On
  Markov chain gradient descent", NeurIPS 2018, https://arxiv.org/abs/1809.04216):
  :math:`K_k = P`, a fixed Markov chain on the graph, e.g. the Metropolis–Hastings
  walk, whose stationary distribution :math:`\mu` is uniform, so the token minimises
  :math:`f = (1/n)\sum_i f_i`.
* **SRRW** (Doshi, Hu, Eun, "Self-repellent random walks on general graphs —
  achieving minimal sampling variance via nonlinear Markov chains", ICML 2023,
  https://arxiv.org/abs/2305.05097; as the driver of token SGD: Hu, Doshi, Eun,
  "Accelerating distributed stochastic optimization via self-repellent random
  walks", ICLR 2024, https://arxiv.org/abs/2401.09665): the kernel depends on the
  walk's empirical visit measure :math:`x_k`,

  .. math::

    K[x](i, j) = \frac{P(i,j)\,(x_j/\mu_j)^{-\alpha}}{\sum_l P(i,l)\,(x_l/\mu_l)^{-\alpha}},
    \qquad x_k = \frac{n\mu + \sum_{s \le k} \delta_{X_s}}{n + k + 1},

  so rarely visited agents are preferred; :math:`\alpha = 0` is the base walk, and the
  visit measure's asymptotic covariance falls as :math:`O(1/\alpha)` (SA-SRRW's
  iterate covariance as :math:`O(1/\alpha^2)`). The empirical measure starts from the
  pseudo-counts :math:`n\mu` (:math:`x_0 = \mu`, an interior point as the paper asks)
  and uses the step :math:`\gamma_k = 1/(n+k+1)` (plain visit frequencies; the ICLR
  paper's generalised steps :math:`\gamma_k = (k+1)^{-a}` are not implemented).

**Layout.** The token is the model plus the holder's index: ``params`` keeps the agent
axis with every row equal to the token (so metrics at :math:`\bar x` evaluate the token
and the consensus error is zero) and ``holder`` / ``visits`` are per-agent rows too.
A step inside ``jit(shard_map(scan))`` costs one gradient per device (on the
holder's minibatch if the holder is in the device's block; the others are masked),
one all-reduce of the gradient (:func:`core.token_walk.from_holder`) and a ``pmax`` /
``pmin`` of one scalar for the next holder (:func:`core.token_walk.draw_next`); all
collectives are a simulation's, exact and device-count independent.

**Communication** (``bytes_sent``): the holder sends the model (``d`` floats) on one
edge when the token moves (nothing on a self-loop); SRRW's holder also reads its
neighbours' visit counts, counted as one float sent by each neighbour. The run loop
averages over agents, so an epoch's ``bytes_sent`` is the network total divided by
``n``, the same convention as DSGD's (each agent sends one vector per step): at equal
bytes the token takes about ``n`` steps per DSGD step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from decentjax.core import token_walk
from decentjax.core.algorithm import AgentMapped, Algorithm, Batch, local_optimizer
from decentjax.core.comm import tree_bytes
from decentjax.core.mesh import AGENT_AXIS, as_varying, local_agent_ids
from decentjax.core.operator_tables import AgentTable

PyTree = Any


class RandomWalkState(NamedTuple):
    """State of random-walk / SRRW SGD (every leaf has the leading agent axis).

    Attributes:
      params: the token model :math:`\\theta_k`, repeated in every agent's row, ``(b, ...)``.
      opt_state: the token's optax state, repeated likewise.
      holder: ``(b,)`` int32, every entry :math:`X_k`, the agent holding the token.
      visits: ``(b,)`` float, agent :math:`j`'s visits so far plus its pseudo-count
        :math:`n\\mu_j` (so :math:`x_k \\propto` ``visits``).
    """

    params: PyTree
    opt_state: optax.OptState
    holder: jax.Array
    visits: jax.Array


class _Walk(NamedTuple):
    """The host-side pieces of a walk: ``P``'s columns, :math:`\\log\\mu`, ``n``, ``alpha``."""

    columns: AgentTable
    log_mu: AgentTable
    n_agents: int
    alpha: float | None
    start: int


def _transition(comm: Any) -> np.ndarray:
    """The base walk ``P``: a NumPy matrix, or a gossip operator's ``W``."""
    if isinstance(comm, np.ndarray):
        return comm
    if getattr(comm, "order", None) is not None:
        raise ValueError(
            "random-walk methods need a gossip operator in the user's labels; got one "
            "relabelled (order=...): build it without order= / config.relabel."
        )
    matrix = getattr(comm, "matrix", None)
    if matrix is None:
        raise ValueError(
            "the base walk must be a row-stochastic (n, n) NumPy array or a gossip "
            f"operator (core.comm.gossip) whose matrix is one, got {type(comm).__name__}."
        )
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix)


def _make_walk(comm: Any, alpha: float | None, start: int) -> _Walk:
    p = _transition(comm)
    mu = token_walk.stationary_distribution(p)
    n = p.shape[0]
    if isinstance(start, bool) or not (isinstance(start, (int, np.integer)) and 0 <= start < n):
        raise ValueError(f"start must be an agent index in [0, {n}), got {start!r}.")
    if alpha is not None and not (0.0 <= float(alpha) < math.inf):
        raise ValueError(f"alpha must be finite and >= 0 (0 is the base walk), got {alpha!r}.")
    log_mu = AgentTable(np.log(mu), "log stationary distribution")
    return _Walk(token_walk.transition_table(p), log_mu, n, alpha, int(start))


def _log_weights(
    walk: _Walk, columns: jax.Array, holder: jax.Array, visits: jax.Array, log_mu: jax.Array
):
    r"""``(b,)`` log-weights of moving from ``holder`` to this block's agents.

    :math:`\log P(X_k, j)` for the base walk, minus :math:`\alpha\log(x_j/\mu_j)` for
    SRRW (the normalisation of :math:`x` cancels in the softmax).
    """
    log_p = jnp.log(columns[:, holder])  # log 0 = -inf: agents the walk cannot reach.
    if walk.alpha is None:
        return log_p
    return log_p - walk.alpha * (jnp.log(visits) - log_mu.astype(visits.dtype))


def _rows(tree: PyTree, block: int) -> PyTree:
    """``tree`` (one agent's value) repeated over the block, typed per-agent."""
    return jax.tree.map(lambda a: as_varying(jnp.broadcast_to(a, (block, *jnp.shape(a)))), tree)


def _first(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda a: a[0], tree)


def _token_algorithm(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    walk: _Walk,
    opt: optax.GradientTransformation,
    name: str,
) -> Algorithm:
    grad_fn = jax.grad(loss_fn.loss_fn if isinstance(loss_fn, AgentMapped) else loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> RandomWalkState:
        del data, key  # The walk starts at `start`; the token at that agent's params.
        block = jax.tree.leaves(params)[0].shape[0]
        here = token_walk.holder_mask(jnp.int32(walk.start), block)
        token = token_walk.from_holder(token_walk.holder_rows(params, here), here)
        float_dtype = jax.tree.leaves(params)[0].dtype
        visits = walk.n_agents * jnp.exp(walk.log_mu.local(block).astype(float_dtype))
        return RandomWalkState(
            params=_rows(token, block),
            opt_state=_rows(opt.init(token), block),
            holder=_rows(jnp.int32(walk.start), block),
            visits=as_varying(visits),
        )

    def step(state: RandomWalkState, batch: Batch, key: jax.Array):
        block = state.holder.shape[0]
        holder = state.holder[0]
        here = token_walk.holder_mask(holder, block)
        token = _first(state.params)
        # One gradient per device, at the holder's minibatch where the holder is local.
        local_grad = grad_fn(token, token_walk.holder_rows(batch.data, here))
        grads = token_walk.from_holder(local_grad, here)
        updates, opt_state = opt.update(grads, _first(state.opt_state), token)
        token = optax.apply_updates(token, updates)
        visits = state.visits + here.astype(state.visits.dtype)
        columns = walk.columns.local(block)
        log_w = _log_weights(walk, columns, holder, visits, walk.log_mu.local(block))
        following = token_walk.draw_next(key, log_w)
        moved = here & (following != holder)
        sent = jnp.where(moved, tree_bytes(token), 0)
        if walk.alpha is not None:  # Each neighbour reports its visit count to the holder.
            ids = local_agent_ids(block)
            neighbour = (columns[:, holder] > 0) & (ids != holder)
            sent = sent + jnp.where(neighbour, visits.dtype.itemsize, 0)
        new_state = RandomWalkState(
            params=_rows(token, block),
            opt_state=_rows(opt_state, block),
            holder=_rows(following, block),
            visits=visits,
        )
        return new_state, {"bytes_sent": sent}

    return Algorithm(init=init, step=step, name=name)


def random_walk_sgd(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Any,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    start: int = 0,
) -> Algorithm:
    r"""Random-walk (token) SGD on the base walk :math:`P` (see the module docstring).

    .. math::

      \theta_{k+1} = \theta_k - \alpha_k \nabla f_{X_k,\xi_k}(\theta_k), \qquad
      X_{k+1} \sim P(X_k, \cdot).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``; the holder uses its
        minibatch of the step (run it with ``sampling.iid``).
      comm: the base walk: a gossip operator (:func:`core.comm.gossip`) whose ``W``
        is ``P`` (Metropolis–Hastings weights: uniform :math:`\mu`), or an ``(n, n)``
        row-stochastic NumPy matrix. The token minimises :math:`\sum_i \mu_i f_i`.
      learning_rate: :math:`\alpha_k`, a float or an optax schedule of the token's
        step count.
      optimizer: an optax optimizer for the token instead of plain SGD steps.
      start: the agent holding the token at step 0 (its params are the token's start).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`RandomWalkState`, named
      ``"rw-sgd"``.

    Raises:
      ValueError: if ``P`` is not row-stochastic or its walk is reducible, ``start``
        is not an agent, the operator is relabelled, or as
        :func:`core.algorithm.local_optimizer`. Before compiling.

    References:
          Sun, Sun, Yin, "On Markov chain gradient descent", NeurIPS 2018,
          https://arxiv.org/abs/1809.04216.
    """
    opt = local_optimizer(learning_rate, optimizer)
    return _token_algorithm(loss_fn, _make_walk(comm, None, start), opt, "rw-sgd")


def srrw_sgd(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Any,
    learning_rate: float | optax.Schedule | None = None,
    *,
    alpha: float = 10.0,
    optimizer: optax.GradientTransformation | None = None,
    start: int = 0,
) -> Algorithm:
    r"""SGD driven by a self-repellent random walk (SRRW) over the base walk :math:`P`.

    .. math::

      \theta_{k+1} = \theta_k - \alpha_k \nabla f_{X_k,\xi_k}(\theta_k), \qquad
      X_{k+1} \sim K[x_k](X_k, \cdot), \quad
      K[x](i,j) \propto P(i,j)\,(x_j/\mu_j)^{-\alpha},

    with :math:`x_k` the empirical visit measure (module docstring). With
    ``alpha=0`` it draws exactly the walk of :func:`random_walk_sgd` (same keys, same
    draws). The SA-SRRW paper (Hu, Doshi, Eun, ICLR 2024) shows the iterate's
    asymptotic covariance falling as :math:`O(1/\alpha^2)`.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      comm: the base walk, as for :func:`random_walk_sgd` (``P`` must be reversible
        for the paper's theory; Metropolis–Hastings is).
      learning_rate: :math:`\alpha_k`, float or optax schedule.
      alpha: the repellence :math:`\alpha \ge 0`.
      optimizer: optional optax optimizer for the token.
      start: the agent holding the token at step 0.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`RandomWalkState`, named
      ``"srrw-sgd"``.

    Raises:
      ValueError: for ``alpha < 0`` or as :func:`random_walk_sgd`.

    References:
          Doshi, Hu, Eun, ICML 2023, https://arxiv.org/abs/2305.05097;
          Hu, Doshi, Eun, ICLR 2024, https://arxiv.org/abs/2401.09665.
    """
    opt = local_optimizer(learning_rate, optimizer)
    return _token_algorithm(loss_fn, _make_walk(comm, float(alpha), start), opt, "srrw-sgd")


def simulate_visits(
    comm: Any,
    mesh: jax.sharding.Mesh,
    key: jax.Array,
    *,
    num_walks: int,
    num_steps: int,
    alpha: float | None = None,
    start: int = 0,
) -> np.ndarray:
    r"""Visit counts of independent walks (the token's walk alone, no model).

    The same kernel and draws as :func:`random_walk_sgd` (``alpha=None``) and
    :func:`srrw_sgd` (``alpha``) at step keys ``fold_in(fold_in(key, walk), step)``;
    ``num_walks`` walks vmapped in one ``jit(shard_map(scan))``. For statistics of the
    walk: visit frequencies against :math:`\mu`, SRRW's variance reduction.

    Args:
      comm: the base walk (gossip operator or row-stochastic matrix).
      mesh: an agent mesh (:func:`core.mesh.make_agent_mesh`) for ``n`` agents.
      key: PRNG key.
      num_walks: independent walks.
      num_steps: steps of each walk; visits are counted at steps ``0 .. num_steps - 1``.
      alpha: ``None`` for the base walk, else SRRW's :math:`\alpha`.
      start: the starting agent of every walk.

    Returns:
      ``(num_walks, n)`` float64 NumPy array of visit counts, each row summing to
      ``num_steps``.
    """
    walk = _make_walk(comm, alpha, start)
    dtype = jnp.result_type(float)

    def local(key):
        block = walk.n_agents // mesh.shape[AGENT_AXIS]
        columns, log_mu = walk.columns.local(block), walk.log_mu.local(block)
        pseudo = walk.n_agents * jnp.exp(log_mu.astype(dtype))

        def one_walk(walk_key):
            def one_step(carry, k):
                holder, visits = carry
                visits = visits + token_walk.holder_mask(holder, block).astype(dtype)
                log_w = _log_weights(walk, columns, holder, visits, log_mu)
                following = token_walk.draw_next(jax.random.fold_in(walk_key, k), log_w)
                return (following, visits), None

            carry = (jnp.int32(walk.start), as_varying(pseudo))
            steps = jnp.arange(num_steps, dtype=jnp.int32)
            (_, visits), _ = jax.lax.scan(one_step, carry, steps)
            return visits - pseudo

        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(num_walks))
        return jax.vmap(one_walk)(keys)

    run = jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=jax.P(), out_specs=jax.P(None, AGENT_AXIS))
    )
    return np.asarray(jax.device_get(run(key)), np.float64)
