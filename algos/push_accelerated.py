r"""Accelerated Push-DIGing: APD (smooth convex) and APD-SC (strongly convex).

Linear coupling (a gradient step, a mirror step and a convex combination) on
Push-DIGing's push-sum mass variables over a column-stochastic :math:`C` (see
:mod:`algos._directed`). Which form is implemented, and how sure we are of it, is
stated in each factory's docstring: the update is the co-author's slide form with
reconstructed constants (ALGORITHMS.md §2.6, tags [AUTHORS] and [RECON]), not
confirmed against the paper text.

References:
  * Z. Song, L. Shi, S. Pu, M. Yan. "Provably Accelerated Decentralized Gradient
    Method over Unbalanced Directed Graphs" (APD, APD-SC). SIAM J. Optim. 2024.
    https://arxiv.org/abs/2107.12065
  * Z. Allen-Zhu, L. Orecchia. "Linear Coupling." https://arxiv.org/abs/1407.1537
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos._directed import (
    LossFn,
    PyTree,
    check_positive,
    check_push,
    check_unit_interval,
)
from decentjax.algos.tracking import next_tracker
from decentjax.core.algorithm import Algorithm, Batch, agent_grad
from decentjax.core.comm import Gossip
from decentjax.core.tree import block_size, combine, debias, leaf_dtype, scale


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
        block = block_size(params)
        zeros = jax.tree.map(jnp.zeros_like, params)
        weight = jnp.ones((block,), leaf_dtype(params))
        # X^0 = Y^0 = Z^0 = the given params, v^0 = 1 ([RECON]: not on the slides).
        return ApdState(params, params, weight, zeros, zeros, jnp.zeros((block,), jnp.int32))

    def step(state: ApdState, batch: Batch, key: jax.Array):
        del key
        first = state.count == 0
        alpha = alpha_fn(state.count.astype(state.weight.dtype))  # alpha_k, (b,)
        tau = 0.25 / alpha  # tau_k = 1 / (4 alpha_k)
        # Coupling (slides' step 4, computed at the start of the next step; at k = 0
        # it gives X^0 since Y^0 = Z^0).
        x = combine(1.0 - tau, state.y, tau, state.z)
        grads = grad_fn(debias(x, state.weight), batch.data)
        # S^k; S^0 = grad F(X^0).
        tracker = next_tracker(first, grads, state.prev_grad, state.tracker, push.mix_if)
        y_msg = combine(1.0, x, -gamma, tracker)  # X^k - gamma S^k
        step_z = scale(-gamma * alpha, tracker)  # -alpha_k gamma S^k
        if beta is None:
            z_msg = optax.tree.add(state.z, step_z)
        else:
            z_msg = optax.tree.add(combine(1.0 - beta, state.z, beta, x), step_z)
        y, z, weight = push.mix((y_msg, z_msg, state.weight))
        new = ApdState(y, z, weight, tracker, grads, state.count + 1)
        s_bytes = jnp.where(first, 0, push.bytes_per_mix(tracker))
        return new, {"bytes_sent": push.bytes_per_mix((y, z, weight)) + s_bytes}

    return Algorithm(init=init, step=step, params=lambda s: debias(s.y, s.weight), name=name)


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
    check_push(push, "apd")
    gamma = check_positive("gamma", gamma, "apd")
    w1 = check_positive("w1", w1, "apd")
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
    check_push(push, "apd_sc")
    gamma = check_positive("gamma", gamma, "apd_sc")
    alpha = check_positive("alpha", alpha, "apd_sc")
    if alpha < 0.25:
        raise ValueError(
            f"apd_sc: alpha must be >= 1/4 so that tau = 1/(4 alpha) <= 1, got alpha={alpha}."
        )
    beta = check_unit_interval("beta", beta, "apd_sc")
    if beta is None:
        raise ValueError("apd_sc: beta must be a number in (0, 1], got None.")
    return _apd(loss_fn, push, gamma, lambda k: jnp.full_like(k, alpha), beta, "apd-sc")
