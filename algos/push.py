r"""Methods for directed, possibly unbalanced graphs: push-sum, Push-Pull, APD, CPP.

Over a directed graph no doubly stochastic matrix need exist, so these methods use a
row-stochastic pull matrix :math:`R` (:math:`R\mathbf 1 = \mathbf 1`), a
column-stochastic push matrix :math:`C` (:math:`\mathbf 1^\top C = \mathbf 1^\top`),
or both (ALGORITHMS.md §0). Pulling with :math:`R` alone converges to the
:math:`u`-weighted average (:math:`u` the left Perron vector of :math:`R`), not the
mean; pushing with :math:`C` preserves sums, so trackers stay exact, and push-sum
divides by the pushed mass :math:`v^k = C^k\mathbf 1` to de-bias. Each factory takes
the :class:`~core.comm.Gossip` operators it needs (built with
``comm.gossip(M, doubly_stochastic=False)`` from :func:`core.directed.row_stochastic`
/ :func:`core.directed.column_stochastic`) and validates them on the host with
:mod:`core.directed`'s checks before anything is compiled.

* :func:`push_sum_sgp`: subgradient-push / stochastic gradient push (one vector and
  one scalar pushed per step).
* :func:`push_pull`: Push-Pull and AB (pull :math:`x` over :math:`R`, push the
  tracker over :math:`C`; two vectors).
* :func:`push_diging`: Push-DIGing / ADD-OPT (push-sum gradient tracking with
  :math:`C` only; two vectors and a scalar).
* :func:`apd`, :func:`apd_sc`: Accelerated Push-DIGing (linear coupling on
  Push-DIGing; three vectors and a scalar).
* :func:`cpp`, :func:`b_cpp`: Compressed Push-Pull and its broadcast version with
  random activation.

Implementation note (one gradient per step). As in :mod:`algos.tracking`, step
:math:`k` evaluates :math:`\nabla F` at the current iterate, *then* forms the tracker
from the cached previous tracker and gradient, so :math:`Y^0 = G^0` is the first
step's local gradient and the tracker's first step sends nothing.

Which forms the APD and CPP families implement, and how sure we are of them, is
stated in each factory's docstring: the APD update is the co-author's slide form
with reconstructed constants; CPP and B-CPP are reconstructions (ALGORITHMS.md
§2.6–2.7, tags [AUTHORS] and [RECON]); none of them is confirmed against the paper
text.

References:
  * A. Nedić, A. Olshevsky. "Stochastic Gradient-Push for Strongly Convex Functions
    on Time-Varying Directed Graphs." IEEE TAC 2016. https://arxiv.org/abs/1406.2075
  * M. Assran, N. Loizou, N. Ballas, M. Rabbat. "Stochastic Gradient Push for
    Distributed Deep Learning." ICML 2019. https://arxiv.org/abs/1811.10792
  * S. Pu, W. Shi, J. Xu, A. Nedić. "Push-Pull Gradient Methods for Distributed
    Optimization in Networks." IEEE TAC 2021. https://arxiv.org/abs/1810.06653
  * R. Xin, U. A. Khan. "A Linear Algorithm for Optimization over Directed Graphs
    with Geometric Convergence" (AB). IEEE L-CSS 2018. https://arxiv.org/abs/1803.02503
  * A. Nedić, A. Olshevsky, W. Shi. "Achieving Geometric Convergence for Distributed
    Optimization over Time-Varying Graphs" (Push-DIGing). SIAM J. Optim. 2017.
    https://arxiv.org/abs/1607.03218
  * Z. Song, L. Shi, S. Pu, M. Yan. "Provably Accelerated Decentralized Gradient
    Method over Unbalanced Directed Graphs" (APD, APD-SC). SIAM J. Optim. 2024.
    https://arxiv.org/abs/2107.12065
  * Z. Song, L. Shi, S. Pu, M. Yan. "Compressed Gradient Tracking for Decentralized
    Optimization over General Directed Networks" (CPP, B-CPP). IEEE TSP 2022.
    https://arxiv.org/abs/2106.07243
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from core import compression, directed
from core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from core.comm import Gossip
from core.mesh import agent_keys
from core.tree import select

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
Variant = Literal["push_pull", "ab"]

# Folds of the step key: the two compressed channels and the activation draw get
# independent streams, and CPP and B-CPP use the same folds for the same messages, so
# B-CPP with p = 1 is CPP draw for draw.
_X_CHANNEL, _Y_CHANNEL, _ACTIVATION = 0, 1, 2


# --------------------------------------------------------------------------------------
# Host-side validation.
# --------------------------------------------------------------------------------------


def _check_pull(pull: Gossip, method: str) -> None:
    try:
        directed.check_row_stochastic(pull.matrix)
    except ValueError as err:
        raise ValueError(
            f"{method}: the pull operator must hold a row-stochastic R (R 1 = 1, nonnegative, "
            f"strongly connected support, aperiodic), e.g. "
            f"comm.gossip(directed.row_stochastic(A), doubly_stochastic=False); {err}"
        ) from None


def _check_push(push: Gossip, method: str) -> None:
    try:
        directed.check_column_stochastic(push.matrix)
    except ValueError as err:
        raise ValueError(
            f"{method}: the push operator must hold a column-stochastic C (1^T C = 1^T, "
            f"nonnegative, strongly connected support, aperiodic), e.g. "
            f"comm.gossip(directed.column_stochastic(A), doubly_stochastic=False); {err}"
        ) from None


def _check_pair(pull: Gossip, push: Gossip, method: str) -> None:
    if pull.n_agents != push.n_agents:
        raise ValueError(
            f"{method}: pull and push operators must be for the same agents, got R for "
            f"{pull.n_agents} agents and C for {push.n_agents}."
        )
    _check_pull(pull, method)
    _check_push(push, method)
    try:  # u^T v > 0; always true for two validated matrices, kept as a numerical guard.
        directed.check_push_pull_pair(pull.matrix, push.matrix)
    except ValueError as err:
        raise ValueError(f"{method}: {err}") from None


def _check_variant(variant: str) -> None:
    if variant not in ("push_pull", "ab"):
        raise ValueError(f"variant must be 'push_pull' or 'ab', got {variant!r}.")


def _check_unit_interval(name: str, value: Any, method: str) -> float | None:
    """``None`` (use the default) or a float in ``(0, 1]``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{method}: {name} must be a number in (0, 1], got {name}={value!r}.")
    return float(value)


def _check_positive(name: str, value: Any, method: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ValueError(f"{method}: {name} must be a positive number, got {name}={value!r}.")
    return float(value)


# --------------------------------------------------------------------------------------
# Local-view helpers.
# --------------------------------------------------------------------------------------


def _block_size(tree: PyTree) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def _float_dtype(tree: PyTree) -> Any:
    return jax.tree.leaves(tree)[0].dtype


def _per_agent(c: jax.Array, x: jax.Array) -> jax.Array:
    """A per-agent vector ``(b,)`` cast and reshaped to broadcast against ``x (b, ...)``."""
    return c.astype(x.dtype).reshape(c.shape + (1,) * (x.ndim - 1))


def _scale(c: jax.Array, tree: PyTree) -> PyTree:
    """``c_i * tree_i`` for a per-agent vector ``c``."""
    return jax.tree.map(lambda x: _per_agent(c, x) * x, tree)


def _debias(numerator: PyTree, weight: jax.Array) -> PyTree:
    """Push-sum ratio ``x_i / v_i``."""
    return jax.tree.map(lambda x: x / _per_agent(weight, x), numerator)


def _combine(a: float | jax.Array, x: PyTree, b: float | jax.Array, y: PyTree) -> PyTree:
    """``a x + b y`` (``a``, ``b`` Python floats or per-agent vectors ``(b,)``)."""

    def coef(c: float | jax.Array, leaf: jax.Array) -> float | jax.Array:
        # Python floats stay weakly typed, so they keep the leaf's dtype.
        return c if isinstance(c, float) else _per_agent(c, leaf)

    return jax.tree.map(lambda u, w: coef(a, u) * u + coef(b, w) * w, x, y)


# --------------------------------------------------------------------------------------
# Push-sum / SGP.
# --------------------------------------------------------------------------------------


class PushSumState(NamedTuple):
    """State of subgradient-push / SGP.

    Attributes:
      numerator: push-sum numerators :math:`x_i^k` (mass variables), leaves ``(b, ...)``.
      weight: push-sum weights :math:`v_i^k` ``(b,)``, :math:`v^0 = \\mathbf 1`.
      opt_state: per-agent optax state (its count drives schedules).
    """

    numerator: PyTree
    weight: jax.Array
    opt_state: optax.OptState


def push_sum_sgp(
    loss_fn: LossFn,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""Subgradient-push / Stochastic Gradient Push (SGP) over a column-stochastic C.

    With numerators :math:`X^k`, weights :math:`v^k` and de-biased iterates
    :math:`Z^k = \operatorname{diag}(v^k)^{-1} X^k`:

    .. math::

      X^{k+1} = C\big(X^k - \alpha_k \nabla F(Z^k)\big), \qquad
      v^{k+1} = C v^k, \qquad Z^{k+1} = \operatorname{diag}(v^{k+1})^{-1} X^{k+1}.

    This is SGP's order (local step, then push; Assran et al. 2019, Alg. 1 without
    momentum). Nedić & Olshevsky's subgradient-push writes the same recursion for
    :math:`\Omega^{k+1} = C X^k` (push, then step at the pushed ratio); the two
    sequences coincide up to where the first gradient step falls. Initialisation:
    :math:`X^0 =` the given params, :math:`v^0 = \mathbf 1`. ``params(state)`` is
    :math:`Z^k`. With a zero gradient this is push-sum averaging: :math:`Z^k \to`
    the exact mean of :math:`X^0` at every agent, on any strongly connected digraph.
    With a constant step and exact gradients it converges only to a neighbourhood of
    :math:`x^*` (like DSGD); use a decaying step or a tracking method for exactness.

    Communication: one vector and one scalar pushed per step.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      push: gossip operator holding a column-stochastic ``C``.
      learning_rate: :math:`\alpha_k`, a float or optax schedule.
      optimizer: optax transformation instead of plain steps (e.g. SGP's local
        Nesterov momentum, ``optax.sgd(lr, momentum=0.9, nesterov=True)``).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`PushSumState`.

    Raises:
      ValueError: if ``C`` is not column-stochastic (the message says which check
        fails), or the step size is invalid.

    References:
      Nedić & Olshevsky 2016, https://arxiv.org/abs/1406.2075; Assran et al. 2019,
      https://arxiv.org/abs/1811.10792.
    """
    _check_push(push, "push_sum_sgp")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> PushSumState:
        del data, key
        weight = jnp.ones((_block_size(params),), _float_dtype(params))
        return PushSumState(params, weight, jax.vmap(opt.init)(params))

    def step(state: PushSumState, batch: Batch, key: jax.Array):
        del key
        z = _debias(state.numerator, state.weight)
        grads = grad_fn(z, batch.data)
        updates, opt_state = jax.vmap(opt.update)(grads, state.opt_state, z)
        # One mix of (numerator, weight): one message of d + 1 numbers per agent.
        numerator, weight = push.mix((optax.apply_updates(state.numerator, updates), state.weight))
        new = PushSumState(numerator, weight, opt_state)
        return new, {"bytes_sent": push.bytes_per_mix((numerator, weight))}

    return Algorithm(
        init=init, step=step, params=lambda s: _debias(s.numerator, s.weight), name="sgp"
    )


# --------------------------------------------------------------------------------------
# Push-Pull / AB.
# --------------------------------------------------------------------------------------


class PushPullState(NamedTuple):
    """State of Push-Pull / AB.

    Attributes:
      params: iterates :math:`x_i^k`, leaves ``(b, ...)``.
      tracker: :math:`y_i^{k-1}`, the tracker used by the previous step.
      prev_grad: :math:`g_i^{k-1}`, the gradient evaluated by the previous step.
      opt_state: per-agent optax state.
      count: int32 ``(b,)``: steps taken.
    """

    params: PyTree
    tracker: PyTree
    prev_grad: PyTree
    opt_state: optax.OptState
    count: jax.Array


def push_pull(
    loss_fn: LossFn,
    pull: Gossip,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    variant: Variant = "push_pull",
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""Push-Pull (Pu, Shi, Xu, Nedić 2021) and AB (Xin & Khan 2018).

    With :math:`G^k = \nabla F(X^k)` (or a stochastic version) and :math:`Y^0 = G^0`:

    .. math::

      \text{push\_pull:}\quad & X^{k+1} = R\,(X^k - \alpha_k Y^k), \\
      \text{ab:}\quad & X^{k+1} = R X^k - \alpha_k Y^k, \\
      \text{both:}\quad & Y^{k+1} = C Y^k + G^{k+1} - G^k.

    :math:`x` is pulled over the graph of :math:`R`, the tracker pushed over the
    graph of :math:`C` (the two graphs may differ). Invariant:
    :math:`\mathbf 1^\top Y^k = \mathbf 1^\top G^k`, because :math:`C` is column
    stochastic. With exact gradients and a small constant step both converge
    linearly to :math:`\mathbf 1 x^{*\top}`. Initialisation: the given params (need
    not be consensual), :math:`Y^0 = G^0`. Communication: two vectors per agent per
    step (one on the first step, whose tracker is local).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      pull: gossip operator holding a row-stochastic ``R``.
      push: gossip operator holding a column-stochastic ``C``.
      learning_rate: :math:`\alpha_k`, a float or optax schedule.
      variant: ``"push_pull"`` (adapt then pull) or ``"ab"`` (pull, then adapt).
      optimizer: optax transformation of the tracker direction instead of plain
        steps (``x + update(y)`` replaces ``x - alpha y``).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`PushPullState`.

    Raises:
      ValueError: if ``R`` is not row-stochastic or ``C`` not column-stochastic (the
        message names the failing check), their sizes differ, or an argument is
        invalid.

    Examples:
      >>> from core import comm, directed
      >>> from models import least_squares
      >>> a = directed.unbalanced_example(8)
      >>> pull = comm.gossip(directed.row_stochastic(a), doubly_stochastic=False)
      >>> push = comm.gossip(directed.column_stochastic(a), doubly_stochastic=False)
      >>> push_pull(least_squares().loss, pull, push, learning_rate=0.05).name
      'push-pull'

    References:
      Pu et al., https://arxiv.org/abs/1810.06653; Xin & Khan,
      https://arxiv.org/abs/1803.02503.
    """
    _check_variant(variant)
    _check_pair(pull, push, "push_pull")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> PushPullState:
        del data, key
        zeros = jax.tree.map(jnp.zeros_like, params)
        count = jnp.zeros((_block_size(params),), jnp.int32)
        return PushPullState(params, zeros, zeros, jax.vmap(opt.init)(params), count)

    def step(state: PushPullState, batch: Batch, key: jax.Array):
        del key
        first = state.count == 0
        grads = grad_fn(state.params, batch.data)
        tracked = optax.tree.add(push.mix(state.tracker), optax.tree.sub(grads, state.prev_grad))
        tracker = select(first, grads, tracked)
        updates, opt_state = jax.vmap(opt.update)(tracker, state.opt_state, state.params)
        if variant == "push_pull":
            params = pull.mix(optax.apply_updates(state.params, updates))
        else:
            params = optax.apply_updates(pull.mix(state.params), updates)
        new = PushPullState(params, tracker, grads, opt_state, state.count + 1)
        y_bytes = jnp.where(first, 0, push.bytes_per_mix(tracker))
        return new, {"bytes_sent": pull.bytes_per_mix(params) + y_bytes}

    return Algorithm(init=init, step=step, name="push-pull" if variant == "push_pull" else "ab")


# --------------------------------------------------------------------------------------
# Push-DIGing.
# --------------------------------------------------------------------------------------


class PushDigingState(NamedTuple):
    """State of Push-DIGing / ADD-OPT.

    Attributes:
      numerator: push-sum numerators :math:`u_i^k`, leaves ``(b, ...)``.
      weight: push-sum weights :math:`v_i^k` ``(b,)``.
      tracker: :math:`y_i^{k-1}`, the tracker used by the previous step.
      prev_grad: :math:`g_i^{k-1}`, the gradient evaluated by the previous step.
      opt_state: per-agent optax state.
      count: int32 ``(b,)``: steps taken.
    """

    numerator: PyTree
    weight: jax.Array
    tracker: PyTree
    prev_grad: PyTree
    opt_state: optax.OptState
    count: jax.Array


def push_diging(
    loss_fn: LossFn,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""Push-DIGing (Nedić, Olshevsky, Shi 2017) / ADD-OPT: push-sum gradient tracking.

    Only a column-stochastic :math:`C` is needed (ALGORITHMS.md §3.5):

    .. math::

      U^{k+1} &= C\,(U^k - \alpha_k Y^k), \qquad v^{k+1} = C v^k, \qquad
      X^{k+1} = \operatorname{diag}(v^{k+1})^{-1} U^{k+1}, \\
      Y^{k+1} &= C Y^k + \nabla F(X^{k+1}) - \nabla F(X^k),

    initialised with :math:`U^0 = X^0` (the given params), :math:`v^0 = \mathbf 1`,
    :math:`Y^0 = \nabla F(X^0)`. ``params(state)`` is :math:`X^k`. Invariant:
    :math:`\mathbf 1^\top Y^k = \mathbf 1^\top G^k`. Linear convergence to
    :math:`x^*` with exact gradients and a small constant step. Communication: two
    vectors and one scalar per agent per step (the tracker is not sent on the first).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      push: gossip operator holding a column-stochastic ``C``.
      learning_rate: :math:`\alpha_k`, a float or optax schedule.
      optimizer: optax transformation of the tracker direction instead of plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`PushDigingState`.

    Raises:
      ValueError: if ``C`` is not column-stochastic, or the step size is invalid.

    References:
      Nedić, Olshevsky, Shi, https://arxiv.org/abs/1607.03218; ADD-OPT (Xi et al.),
      https://arxiv.org/abs/1607.04757.
    """
    _check_push(push, "push_diging")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> PushDigingState:
        del data, key
        block = _block_size(params)
        zeros = jax.tree.map(jnp.zeros_like, params)
        weight = jnp.ones((block,), _float_dtype(params))
        count = jnp.zeros((block,), jnp.int32)
        return PushDigingState(params, weight, zeros, zeros, jax.vmap(opt.init)(params), count)

    def step(state: PushDigingState, batch: Batch, key: jax.Array):
        del key
        first = state.count == 0
        x = _debias(state.numerator, state.weight)
        grads = grad_fn(x, batch.data)
        tracked = optax.tree.add(push.mix(state.tracker), optax.tree.sub(grads, state.prev_grad))
        tracker = select(first, grads, tracked)
        updates, opt_state = jax.vmap(opt.update)(tracker, state.opt_state, x)
        numerator, weight = push.mix((optax.apply_updates(state.numerator, updates), state.weight))
        new = PushDigingState(numerator, weight, tracker, grads, opt_state, state.count + 1)
        y_bytes = jnp.where(first, 0, push.bytes_per_mix(tracker))
        return new, {"bytes_sent": push.bytes_per_mix((numerator, weight)) + y_bytes}

    return Algorithm(
        init=init, step=step, params=lambda s: _debias(s.numerator, s.weight), name="push-diging"
    )


# --------------------------------------------------------------------------------------
# APD / APD-SC.
# --------------------------------------------------------------------------------------


class ApdState(NamedTuple):
    """State of APD / APD-SC (all mass variables, to be divided by ``weight``).

    Attributes:
      y: gradient-step sequence :math:`y_i^k` (the output), leaves ``(b, ...)``.
      z: mirror-step sequence :math:`z_i^k`, leaves ``(b, ...)``. The coupled point
        :math:`x^k = (1-\\tau_k) y^k + \\tau_k z^k` is recomputed from these two
        rather than stored.
      weight: push-sum weights :math:`v_i^k` ``(b,)``.
      tracker: :math:`s_i^{k-1}`, the gradient tracker used by the previous step
        (the slides' :math:`g`).
      prev_grad: :math:`\\nabla f_i(x_i^{k-1}/v_i^{k-1})` from the previous step.
      count: int32 ``(b,)``: steps taken :math:`k`.
    """

    y: PyTree
    z: PyTree
    weight: jax.Array
    tracker: PyTree
    prev_grad: PyTree
    count: jax.Array


def _apd(
    loss_fn: LossFn,
    push: Gossip,
    gamma: float,
    alpha_fn: Callable[[jax.Array], jax.Array],
    beta: float | None,
    name: str,
) -> Algorithm:
    """The APD skeleton; ``beta=None`` is APD, a float is APD-SC's Z-update."""
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> ApdState:
        del data, key
        block = _block_size(params)
        zeros = jax.tree.map(jnp.zeros_like, params)
        weight = jnp.ones((block,), _float_dtype(params))
        # X^0 = Y^0 = Z^0 = the given params, v^0 = 1 ([RECON]: not on the slides).
        return ApdState(params, params, weight, zeros, zeros, jnp.zeros((block,), jnp.int32))

    def step(state: ApdState, batch: Batch, key: jax.Array):
        del key
        first = state.count == 0
        alpha = alpha_fn(state.count.astype(state.weight.dtype))  # alpha_k, (b,)
        tau = 0.25 / alpha  # tau_k = 1 / (4 alpha_k)
        # Coupling (slides' step 4, computed at the start of the next step; at k = 0
        # it gives X^0 since Y^0 = Z^0).
        x = _combine(1.0 - tau, state.y, tau, state.z)
        grads = grad_fn(_debias(x, state.weight), batch.data)
        tracked = optax.tree.add(push.mix(state.tracker), optax.tree.sub(grads, state.prev_grad))
        tracker = select(first, grads, tracked)  # S^k; S^0 = grad F(X^0).
        y_msg = _combine(1.0, x, -gamma, tracker)  # X^k - gamma S^k
        step_z = _scale(-gamma * alpha, tracker)  # -alpha_k gamma S^k
        if beta is None:
            z_msg = optax.tree.add(state.z, step_z)
        else:
            z_msg = optax.tree.add(_combine(1.0 - beta, state.z, beta, x), step_z)
        y, z, weight = push.mix((y_msg, z_msg, state.weight))
        new = ApdState(y, z, weight, tracker, grads, state.count + 1)
        s_bytes = jnp.where(first, 0, push.bytes_per_mix(tracker))
        return new, {"bytes_sent": push.bytes_per_mix((y, z, weight)) + s_bytes}

    return Algorithm(init=init, step=step, params=lambda s: _debias(s.y, s.weight), name=name)


def apd(loss_fn: LossFn, push: Gossip, *, gamma: float, w1: float = 1 / 20) -> Algorithm:
    r"""APD: Accelerated Push-DIGing for smooth convex objectives, :math:`O(1/k^2)`.

    Song, Shi, Pu, Yan (SIAM J. Optim. 2024). **Which form:** the linear-coupling
    form of ALGORITHMS.md §2.6, read from co-author Ming Yan's lecture slides
    ("Accelerated Push-DIGing (APD)"; tag [AUTHORS]): Allen-Zhu–Orecchia linear
    coupling (a gradient step, a mirror step and a convex combination) run on
    Push-DIGing's push-sum mass variables, with gradient tracking at the de-biased
    coupled point. All of :math:`X, Y, Z, S` are mass variables (rows per agent),
    :math:`V^k = \operatorname{diag}(v^k)`:

    .. math::

      v^{k+1} &= C v^k, \\
      Y^{k+1} &= C\,(X^k - \gamma S^k), \\
      Z^{k+1} &= C\,(Z^k - \alpha_k \gamma S^k), \\
      X^{k+1} &= (1 - \tau_{k+1})\, Y^{k+1} + \tau_{k+1} Z^{k+1}, \\
      S^{k+1} &= C S^k + \nabla F\big((V^{k+1})^{-1} X^{k+1}\big)
                - \nabla F\big((V^k)^{-1} X^k\big),

    with :math:`\alpha_k = 1 + w_1 k` and :math:`\tau_k = 1/(4\alpha_k)` (the orders
    the slides give: :math:`\alpha_k = O(k)`, :math:`\tau_k = O(1/k)`,
    :math:`w_1 \in (0, 1/20]`, :math:`\gamma = O(1/L)`).

    **Initialisation and parameter choices [RECON], not confirmed against the
    paper:** :math:`v^0 = \mathbf 1`; :math:`X^0 = Y^0 = Z^0 =` the given params (a
    common point is the natural choice; any works); :math:`S^0 =
    \nabla F(X^0)`, so :math:`\mathbf 1^\top S^k = \mathbf 1^\top
    \nabla F((V^k)^{-1}X^k)` for all :math:`k`; :math:`\alpha_k` is indexed from
    :math:`k = 0` (:math:`\alpha_0 = 1`); default :math:`w_1 = 1/20`, the largest the
    slides allow (faster growth of the mirror step). The slides bound
    :math:`\gamma` only by order; the exact constant (which depends on the mixing
    matrix) is in the paper and unchecked: in our tests :math:`\gamma = 0.2/L`
    (:math:`L` the largest local smoothness constant) is stable on 8-agent
    exponential, unbalanced and random digraphs, :math:`0.5/L` is not on all of
    them. **Output** (``params(state)``): :math:`(V^k)^{-1} Y^k`, the de-biased
    gradient-step sequence, which is where linear coupling's guarantee is stated
    (Allen-Zhu & Orecchia bound :math:`f(y_k)`); the paper's choice is unconfirmed,
    and the coupled point converges at the same measured rate.

    Reductions: :math:`n = 1` (:math:`C = 1`) is linear-coupling AGM with gradient
    step :math:`\gamma` and mirror step :math:`\alpha_k\gamma`; :math:`\tau \equiv 0`
    would make :math:`Y` the Push-DIGing numerator. Communication: three vectors
    (:math:`Y`-, :math:`Z`- and :math:`S`-messages) and one scalar per agent per
    step (the tracker is not sent on the first step). The coupled point is
    recomputed from :math:`(Y^k, Z^k)` at the start of each step instead of being
    stored (same numbers, one vector less of state).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar`` (convex, smooth).
      push: gossip operator holding a column-stochastic ``C``.
      gamma: gradient step :math:`\gamma > 0`, of order :math:`1/L`.
      w1: growth rate :math:`w_1 > 0` of :math:`\alpha_k` (theory: :math:`\le 1/20`).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`ApdState`.

    Raises:
      ValueError: if ``C`` is not column-stochastic or a parameter is not positive.

    References:
      Song, Shi, Pu, Yan, https://arxiv.org/abs/2107.12065; Allen-Zhu & Orecchia,
      "Linear Coupling", https://arxiv.org/abs/1407.1537.
    """
    _check_push(push, "apd")
    gamma = _check_positive("gamma", gamma, "apd")
    w1 = _check_positive("w1", w1, "apd")
    return _apd(loss_fn, push, gamma, lambda k: 1.0 + w1 * k, None, "apd")


def apd_sc(loss_fn: LossFn, push: Gossip, *, gamma: float, alpha: float, beta: float) -> Algorithm:
    r"""APD-SC: Accelerated Push-DIGing for strongly convex objectives (accelerated linear rate).

    Song, Shi, Pu, Yan (SIAM J. Optim. 2024). **Which form:** ALGORITHMS.md §2.6
    ([AUTHORS], co-author Ming Yan's slide "APD-SC: Strongly Convex Case"): APD
    (see :func:`apd`) with a constant :math:`\alpha`, coupling
    :math:`\tau = 1/(4\alpha)`, and the mirror step pulled toward the coupled point:

    .. math::

      v^{k+1} &= C v^k, \qquad Y^{k+1} = C\,(X^k - \gamma S^k), \\
      Z^{k+1} &= C\,\big((1 - \beta) Z^k + \beta X^k - \alpha \gamma S^k\big), \\
      X^{k+1} &= (1 - \tau)\, Y^{k+1} + \tau Z^{k+1}, \\
      S^{k+1} &= C S^k + \nabla F\big((V^{k+1})^{-1} X^{k+1}\big)
                - \nabla F\big((V^k)^{-1} X^k\big).

    **Parameters and initialisation [RECON], not confirmed against the paper:** the
    slides give only orders, :math:`\gamma = O(1/L)`,
    :math:`\beta = O(\sqrt{\mu/L})`, :math:`\alpha = O(\sqrt{L/\mu})`,
    :math:`\tau = 1/(4\alpha)`, so all three are arguments. Working values (tested
    here and in ALGORITHMS.md §8): :math:`\alpha = \sqrt{L/\mu}/2`,
    :math:`\beta = 1/(2\alpha)`, :math:`\gamma = 0.5/L` on well-connected digraphs
    (smaller, e.g. :math:`0.05/L`, on a directed ring). Initialisation as in
    :func:`apd`: :math:`v^0 = \mathbf 1`, :math:`X^0 = Y^0 = Z^0 =` the given params,
    :math:`S^0 = \nabla F(X^0)`; output :math:`(V^k)^{-1} Y^k`. Communication: three
    vectors and one scalar per agent per step.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar`` (strongly convex,
        smooth).
      push: gossip operator holding a column-stochastic ``C``.
      gamma: gradient step :math:`\gamma > 0`.
      alpha: mirror-step factor :math:`\alpha \ge 1/4` (so that
        :math:`\tau = 1/(4\alpha) \le 1`).
      beta: mirror pull toward :math:`X`, :math:`\beta \in (0, 1]`.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`ApdState`.

    Raises:
      ValueError: if ``C`` is not column-stochastic or a parameter is out of range.

    References:
      Song, Shi, Pu, Yan, https://arxiv.org/abs/2107.12065.
    """
    _check_push(push, "apd_sc")
    gamma = _check_positive("gamma", gamma, "apd_sc")
    alpha = _check_positive("alpha", alpha, "apd_sc")
    if alpha < 0.25:
        raise ValueError(
            f"apd_sc: alpha must be >= 1/4 so that tau = 1/(4 alpha) <= 1, got alpha={alpha}."
        )
    beta = _check_unit_interval("beta", beta, "apd_sc")
    if beta is None:
        raise ValueError("apd_sc: beta must be a number in (0, 1], got None.")
    return _apd(loss_fn, push, gamma, lambda k: jnp.full_like(k, alpha), beta, "apd-sc")


# --------------------------------------------------------------------------------------
# CPP / B-CPP.
# --------------------------------------------------------------------------------------


class CppState(NamedTuple):
    """State of CPP / B-CPP.

    Attributes:
      params: iterates :math:`x_i^k`, leaves ``(b, ...)``.
      tracker: :math:`y_i^{k-1}`, the tracker of the previous step.
      prev_grad: :math:`g_i^{k-1}`, the gradient evaluated by the previous step.
      h_x: x-channel reference point :math:`h_{x,i}` (known to ``i``'s out-neighbours).
      h_x_pulled: :math:`(R H_x)_i`, what agent ``i`` holds of its in-neighbours'
        references, kept equal to ``R @ h_x`` by updating both with the same messages.
      h_y: y-channel reference point :math:`h_{y,i}`.
      h_y_pushed: :math:`(C H_y)_i`, kept equal to ``C @ h_y``.
      opt_state: per-agent optax state.
      count: int32 ``(b,)``: steps taken.
    """

    params: PyTree
    tracker: PyTree
    prev_grad: PyTree
    h_x: PyTree
    h_x_pulled: PyTree
    h_y: PyTree
    h_y_pushed: PyTree
    opt_state: optax.OptState
    count: jax.Array


def _compressed_channel(
    op: Gossip,
    compressor: compression.Compressor,
    key: jax.Array,
    value: PyTree,
    h: PyTree,
    h_mixed: PyTree,
    beta: float,
    active: jax.Array | None,
) -> tuple[PyTree, PyTree, PyTree]:
    r"""One LEAD-style compressed exchange of ``value`` over ``op``.

    :math:`Q = \mathcal C(V - H)` (zero for agents not ``active``),
    :math:`\hat V = H + Q`, :math:`\hat V^W = H^W + W Q`, and the references move
    :math:`H \leftarrow (1-\beta) H + \beta \hat V`, :math:`H^W \leftarrow
    (1-\beta) H^W + \beta \hat V^W`, which keeps :math:`H^W = W H` exactly in
    exact arithmetic. Returns :math:`(\hat V - \hat V^W, H, H^W)`.
    """
    q = compression.compress_block(compressor, key, optax.tree.sub(value, h))
    if active is not None:
        q = select(active, q, jax.tree.map(jnp.zeros_like, q))
    v_hat = optax.tree.add(h, q)
    v_hat_mixed = optax.tree.add(h_mixed, op.mix(q))
    h = _combine(1.0 - beta, h, beta, v_hat)
    h_mixed = _combine(1.0 - beta, h_mixed, beta, v_hat_mixed)
    return optax.tree.sub(v_hat, v_hat_mixed), h, h_mixed


def _message_bytes(op: Gossip, compressor: compression.Compressor, tree: PyTree) -> float:
    """Bytes of one compressed broadcast (the compressor's exact bits / 8)."""
    return compression.message_bits(compressor, tree) / 8 if op.max_out_degree else 0.0


def _cpp(
    loss_fn: LossFn,
    pull: Gossip,
    push: Gossip,
    opt: optax.GradientTransformation,
    compressor: compression.Compressor,
    gamma: float | None,
    beta: float | None,
    p: float | None,
    variant: Variant,
    name: str,
) -> Algorithm:
    """The CPP skeleton; ``p=None`` is CPP, a float is B-CPP's activation probability."""
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> CppState:
        del data, key
        zeros = jax.tree.map(jnp.zeros_like, params)
        count = jnp.zeros((_block_size(params),), jnp.int32)
        # H^0 = 0, so R H^0 = C H^0 = 0 with no communication.
        return CppState(
            params, zeros, zeros, zeros, zeros, zeros, zeros, jax.vmap(opt.init)(params), count
        )

    def step(state: CppState, batch: Batch, key: jax.Array):
        first = state.count == 0
        # Defaults from the dimension (known at trace time): delta = 1/(1 + omega) for
        # unbiased compressors, k/d for top-k; 1 for the identity.
        d = sum(math.prod(leaf.shape[1:]) for leaf in jax.tree.leaves(state.params))
        delta = compressor.delta(d)
        b = delta if beta is None else beta
        g = (delta if p is None else p * delta) if gamma is None else gamma
        active = None
        if p is not None:
            keys = agent_keys(jax.random.fold_in(key, _ACTIVATION), _block_size(state.params))
            active = jax.vmap(lambda k: jax.random.bernoulli(k, p))(keys)

        grads = grad_fn(state.params, batch.data)
        # y-channel: the message of Y^{k-1}, then
        # Y^k = Y^{k-1} - gamma (Yhat - Yhat^C) + G^k - G^{k-1}; Y^0 = G^0 is local.
        y_diff, h_y, h_y_pushed = _compressed_channel(
            push,
            compressor,
            jax.random.fold_in(key, _Y_CHANNEL),
            state.tracker,
            state.h_y,
            state.h_y_pushed,
            b,
            active,
        )
        tracked = optax.tree.add(
            _combine(1.0, state.tracker, -g, y_diff), optax.tree.sub(grads, state.prev_grad)
        )
        tracker = select(first, grads, tracked)
        h_y = select(first, state.h_y, h_y)
        h_y_pushed = select(first, state.h_y_pushed, h_y_pushed)

        # x-channel: compress X^k ("ab") or the adapted point X^k - alpha Y^k
        # ("push_pull"), then take the consensus step gamma (Xhat - Xhat^R).
        updates, opt_state = jax.vmap(opt.update)(tracker, state.opt_state, state.params)
        adapted = optax.apply_updates(state.params, updates)
        value = adapted if variant == "push_pull" else state.params
        x_diff, h_x, h_x_pulled = _compressed_channel(
            pull,
            compressor,
            jax.random.fold_in(key, _X_CHANNEL),
            value,
            state.h_x,
            state.h_x_pulled,
            b,
            active,
        )
        params = _combine(1.0, adapted, -g, x_diff)
        new = CppState(
            params, tracker, grads, h_x, h_x_pulled, h_y, h_y_pushed, opt_state, state.count + 1
        )
        x_bytes = _message_bytes(pull, compressor, params)
        y_bytes = jnp.where(first, 0.0, _message_bytes(push, compressor, tracker))
        sent = x_bytes + y_bytes
        if active is not None:
            sent = jnp.where(active, sent, 0.0)  # Only activated agents send.
        return new, {"bytes_sent": sent}

    return Algorithm(init=init, step=step, name=name)


def cpp(
    loss_fn: LossFn,
    pull: Gossip,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    compressor: compression.Compressor,
    gamma: float | None = None,
    beta: float | None = None,
    variant: Variant = "ab",
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""CPP: Compressed Push-Pull (Song, Shi, Pu, Yan, IEEE TSP 2022).

    **Which form:** the reconstruction of ALGORITHMS.md §2.7 (tag [RECON]: neither
    the paper body nor code was readable; the structure is Push-Pull with
    LEAD-style compressed differences against reference points, and it reduces
    exactly to Push-Pull). Each channel compresses the difference to a reference
    point :math:`H` that sender and receivers both know, and receivers keep the
    mixed references :math:`H^R = R H_x`, :math:`H^C = C H_y` up to date from the
    same messages:

    .. math::

      Q_x &= \mathcal C(X^k - H_x^k), \quad \hat X = H_x^k + Q_x, \quad
        \hat X^R = H_x^{R,k} + R Q_x, \\
      H_x^{k+1} &= (1-\beta) H_x^k + \beta \hat X, \quad
        H_x^{R,k+1} = (1-\beta) H_x^{R,k} + \beta \hat X^R, \\
      X^{k+1} &= X^k - \gamma (\hat X - \hat X^R) - \alpha_k Y^k, \\
      Q_y &= \mathcal C(Y^k - H_y^k), \quad \hat Y = H_y^k + Q_y, \quad
        \hat Y^C = H_y^{C,k} + C Q_y \quad (H_y, H_y^C \text{ likewise}), \\
      Y^{k+1} &= Y^k - \gamma (\hat Y - \hat Y^C) + G^{k+1} - G^k.

    ``variant="ab"`` (the default, the form of §2.7) is the above; with
    :math:`\mathcal C = \mathrm{id}`, :math:`\gamma = 1` it is exactly AB,
    :math:`X^{k+1} = R X^k - \alpha Y^k`, :math:`Y^{k+1} = C Y^k + G^{k+1} - G^k`
    (:func:`push_pull` with ``variant="ab"``). ``variant="push_pull"`` compresses
    the adapted point :math:`\tilde X = X^k - \alpha_k Y^k` instead and sets
    :math:`X^{k+1} = \tilde X - \gamma(\hat{\tilde X} - \hat{\tilde X}^R)`, which
    reduces to Push-Pull's :math:`R(X^k - \alpha Y^k)`; which of the two the paper
    uses is an open item (§9). Invariant for any compressor:
    :math:`\mathbf 1^\top Y^k = \mathbf 1^\top G^k`, since :math:`\mathbf 1^\top
    (\hat Y - \hat Y^C) = \mathbf 1^\top (H_y - H_y^C) = 0`.

    Initialisation: :math:`X^0 =` the given params, :math:`Y^0 = G^0`,
    :math:`H_x^0 = H_y^0 = 0` (so :math:`H^{R,0} = H^{C,0} = 0` with no
    communication). Compression is per agent with independent keys
    (:func:`core.compression.compress_block` on folds of the step key). The
    y-message of iteration :math:`k` is sent in step :math:`k+1` (one gradient per
    step, see the module note), so the first step sends only the x-message.
    Communication: two compressed vectors per agent per step, counted as the
    compressor's exact bits / 8 (:func:`core.compression.message_bits`); the receiver
    applies :math:`c_{ij}`, which is fixed by the graph (:math:`1/(\text{outdeg}+1)`).

    **Constants [RECON]:** the paper's conditions on :math:`\gamma, \beta, \alpha`
    were not readable. Defaults: :math:`\gamma = \beta = \delta`, the compressor's
    contraction constant (:math:`1/(1+\omega)` for unbiased operators, as LEAD and
    CEDAS scale them; 1 for the identity, so the default reduces to Push-Pull).
    Measured on 8-agent digraphs with :math:`\alpha = 0.05`: rand-:math:`k` diverges
    with :math:`\gamma = 1` and converges with :math:`\gamma = \beta = k/d`.
    The paper's theory covers unbiased compressors; biased ones (top-:math:`k`) run
    with their :math:`\delta` but are outside it.

    Precision: :math:`H^R = R H_x` and :math:`H^C = C H_y` are maintained by separate
    updates, so they agree only up to rounding, and that drift accumulates (as in
    LEAD). It moves the tracker invariant and the fixed point slightly: measured in
    float64, :math:`|\mathbf 1^\top Y - \mathbf 1^\top G|` about 2e-13 after 200
    steps (Push-Pull: 7e-15) and a final error of 1e-11 after 4000 steps on a
    directed ring (Push-Pull: 2e-14). Expect a higher floor in float32.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      pull: gossip operator holding a row-stochastic ``R``.
      push: gossip operator holding a column-stochastic ``C``.
      learning_rate: :math:`\alpha_k`, a float or optax schedule.
      compressor: any :class:`core.compression.Compressor`.
      gamma: consensus step :math:`\gamma \in (0, 1]`; default :math:`\delta`.
      beta: reference-point step :math:`\beta \in (0, 1]`; default :math:`\delta`.
      variant: ``"ab"`` or ``"push_pull"`` (see above).
      optimizer: optax transformation of the tracker direction instead of plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`CppState`.

    Raises:
      ValueError: if ``R``/``C`` fail their checks (the message says which), or an
        argument is out of range.

    References:
      Song, Shi, Pu, Yan, https://arxiv.org/abs/2106.07243.
    """
    _check_variant(variant)
    _check_pair(pull, push, "cpp")
    gamma = _check_unit_interval("gamma", gamma, "cpp")
    beta = _check_unit_interval("beta", beta, "cpp")
    opt = local_optimizer(learning_rate, optimizer)
    return _cpp(loss_fn, pull, push, opt, compressor, gamma, beta, None, variant, "cpp")


def b_cpp(
    loss_fn: LossFn,
    pull: Gossip,
    push: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    compressor: compression.Compressor,
    p: float,
    gamma: float | None = None,
    beta: float | None = None,
    variant: Variant = "ab",
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""B-CPP: CPP in a broadcast setting with random activation (Song et al. 2022).

    **Which form ([RECON]; the paper's B-CPP was not readable).** Synchronous rounds
    in which each agent is *activated* independently with probability :math:`p`
    (:math:`a_i^k \sim \mathrm{Bernoulli}(p)`, drawn from the step key folded with
    the agent's global index, so the draw does not depend on the device count).
    Activated agents broadcast their two compressed messages exactly as in
    :func:`cpp`; the others send nothing, which is the same as a zero message:

    .. math::

      Q_x = \operatorname{diag}(a^k)\, \mathcal C(X^k - H_x^k), \qquad
      Q_y = \operatorname{diag}(a^k)\, \mathcal C(Y^k - H_y^k),

    and every other line of :func:`cpp` is unchanged. So an inactive agent's
    reference point stays put (:math:`H \leftarrow (1-\beta)H + \beta(H + 0)`), its
    out-neighbours' copies :math:`H^R`, :math:`H^C` stay consistent without any
    message, and the tracker invariant :math:`\mathbf 1^\top Y^k = \mathbf 1^\top
    G^k` still holds exactly. Every agent computes its gradient and updates in every
    round; only sending is random. This is *not* §2.7's one-agent-per-tick
    template with gossip-type :math:`R_k, C_k` (also [RECON]); we chose Bernoulli
    activation of senders on the fixed :math:`(R, C)` because it keeps CPP's
    reference-point bookkeeping exact and equals CPP draw for draw at :math:`p = 1`.

    **Constants [RECON].** Defaults :math:`\beta = \delta` (a received message moves
    the reference as in CPP) and :math:`\gamma = p\,\delta`: the consensus
    correction uses the last broadcast references, which refresh only every
    :math:`1/p` rounds on average, so the step is scaled by :math:`p`. Measured on
    8-agent digraphs: with :math:`\gamma = \delta` and :math:`p \le 1/2`
    (identity, rand-:math:`k`, QSGD) B-CPP diverges at :math:`\alpha = 0.05`; with
    :math:`\gamma = p\delta` it converges for :math:`\alpha \le 0.02`. Step sizes
    :math:`\alpha` somewhat smaller than CPP's are needed. Measured (8-agent random
    digraph, least squares, QSGD with 2 levels, :math:`\alpha = 0.02`, 3000 rounds):
    error 7e-13 with :math:`p = 1/2` and 3e-13 with :math:`p = 0.2`, at 0.506 and
    0.203 times CPP's bytes.

    Communication: an activated agent sends the two compressed vectors of CPP (the
    compressor's exact bits / 8); ``metrics["bytes_sent"]`` is the per-agent vector
    ``(b,)``, zero for inactive agents, so the expected bytes per round are
    :math:`p` times CPP's.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      pull: gossip operator holding a row-stochastic ``R``.
      push: gossip operator holding a column-stochastic ``C``.
      learning_rate: :math:`\alpha_k`, a float or optax schedule.
      compressor: any :class:`core.compression.Compressor`.
      p: activation probability :math:`p \in (0, 1]`.
      gamma: consensus step :math:`\gamma \in (0, 1]`; default :math:`p\,\delta`.
      beta: reference-point step :math:`\beta \in (0, 1]`; default :math:`\delta`.
      variant: ``"ab"`` or ``"push_pull"``, as in :func:`cpp`.
      optimizer: optax transformation of the tracker direction instead of plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`CppState`.

    Raises:
      ValueError: if ``R``/``C`` fail their checks, or an argument is out of range.

    References:
      Song, Shi, Pu, Yan, https://arxiv.org/abs/2106.07243.
    """
    _check_variant(variant)
    _check_pair(pull, push, "b_cpp")
    p_checked = _check_unit_interval("p", p, "b_cpp")
    if p_checked is None:
        raise ValueError("b_cpp: p must be a number in (0, 1], got None.")
    gamma = _check_unit_interval("gamma", gamma, "b_cpp")
    beta = _check_unit_interval("beta", beta, "b_cpp")
    opt = local_optimizer(learning_rate, optimizer)
    return _cpp(loss_fn, pull, push, opt, compressor, gamma, beta, p_checked, variant, "b-cpp")
