r"""Exact diffusion (ED / D²), ED-RR, NIDS and EXTRA: bias-corrected gossip.

These methods correct DSGD's heterogeneity bias with the previous iterate instead
of a gradient tracker, so they send one vector per step and, with exact gradients
and a constant step, converge to :math:`x^*`.

References:
  * K. Yuan, B. Ying, X. Zhao, A. H. Sayed. "Exact Diffusion for Distributed
    Optimization and Learning — Part I." IEEE TSP 2019.
    https://arxiv.org/abs/1702.05122
  * H. Tang, X. Lian, M. Yan, C. Zhang, J. Liu. "D²: Decentralized Training over
    Decentralized Data." ICML 2018. https://arxiv.org/abs/1803.07068
  * Z. Li, W. Shi, M. Yan. "A Decentralized Proximal-Gradient Method with
    Network Independent Step-sizes and Separated Convergence Rates" (NIDS). IEEE
    TSP 2019. https://arxiv.org/abs/1704.07807
  * W. Shi, Q. Ling, G. Wu, W. Yin. "EXTRA: An Exact First-Order Algorithm for
    Decentralized Consensus Optimization." SIAM J. Optim. 2015.
    https://arxiv.org/abs/1404.6264
  * K. Huang, L. Zhou, S. Pu. "Distributed Random Reshuffling Methods with Improved
    Convergence" (ED-RR). IEEE TAC 2025. https://arxiv.org/abs/2306.12037
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.core import requirements
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.comm import Gossip
from decentjax.core.tree import block_size, select

PyTree = Any


class DiffusionState(NamedTuple):
    """State of exact diffusion / ED-RR / NIDS.

    Attributes:
      params: iterates :math:`x_i^k`, leaves ``(b, ...)``.
      memory: :math:`\\psi_i^k = x_i^{k-1} - \\alpha_{k-1} g_i^{k-1}` (the cached
        adapt step), or :math:`x_i^{k-1}` for ED-RR's literal same-sample form.
      opt_state: per-agent optax state.
      count: int32 ``(b,)``: steps taken.
    """

    params: PyTree
    memory: PyTree
    opt_state: optax.OptState
    count: jax.Array


def _constant_step(learning_rate: Any, method: str) -> float:
    if callable(learning_rate) or learning_rate is None or not float(learning_rate) > 0:
        raise ValueError(
            f"{method} takes a constant positive learning_rate (its step enters the mixing "
            f"matrix); got {learning_rate!r}. Use exact_diffusion for schedules."
        )
    return float(learning_rate)


def _diffusion(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    opt: optax.GradientTransformation,
    combine: Callable[[PyTree, jax.Array], PyTree],
    bytes_sent: Callable[[PyTree, jax.Array], Any],
    restart_every_epoch: bool,
    same_sample_difference: bool,
    name: str,
) -> Algorithm:
    """The adapt-correct-combine skeleton shared by ED, ED-RR and NIDS."""
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> DiffusionState:
        del data, key
        block = block_size(params)
        return DiffusionState(
            params, params, jax.vmap(opt.init)(params), jnp.zeros((block,), jnp.int32)
        )

    def step(state: DiffusionState, batch: Batch, key: jax.Array):
        del key
        first = (batch.position == 0) if restart_every_epoch else (state.count == 0)
        x = state.params
        grads = grad_fn(x, batch.data)
        if same_sample_difference:
            # phi = 2x^k - x^{k-1} - alpha (grad_{pi_l}(x^k) - grad_{pi_l}(x^{k-1})); SGD is
            # linear, so one optimizer update of the gradient difference gives it.
            prev_grads = grad_fn(state.memory, batch.data)
            diff = select(first, grads, optax.tree.sub(grads, prev_grads))
            updates, opt_state = jax.vmap(opt.update)(diff, state.opt_state, x)
            base = select(first, x, optax.tree.sub(optax.tree.scale(2.0, x), state.memory))
            phi, memory = optax.apply_updates(base, updates), x
        else:
            updates, opt_state = jax.vmap(opt.update)(grads, state.opt_state, x)
            psi = optax.apply_updates(x, updates)  # psi^{k+1} = x^k - alpha_k g^k.
            psi_prev = select(first, x, state.memory)  # psi^k := x^k at a (re)start.
            phi, memory = optax.tree.add(psi, optax.tree.sub(x, psi_prev)), psi
        params = combine(phi, first)
        new = DiffusionState(params, memory, opt_state, state.count + 1)
        return new, {"bytes_sent": bytes_sent(params, first)}

    return Algorithm(init=init, step=step, name=name)


def exact_diffusion(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    restart_every_epoch: bool = False,
    name: str = "ed",
) -> Algorithm:
    r"""Exact diffusion (ED / D²) on a positive semidefinite ``W``.

    .. math::

      X^1 = W(X^0 - \alpha_0 G^0), \qquad
      X^{k+1} = W\big(2X^k - X^{k-1} - (\alpha_k G^k - \alpha_{k-1} G^{k-1})\big),

    computed in the adapt–correct–combine form
    :math:`\psi^{k+1} = x^k - \alpha_k g^k`,
    :math:`\phi^{k+1} = \psi^{k+1} + x^k - \psi^k`, :math:`x^{k+1} = W\phi^{k+1}`
    with :math:`\psi^0 = x^0`. With a time-varying step this is the
    "adaptive-stepsize" form EDAS of CEDAS's authors; with ``optimizer`` the
    adapt step is any optax update. Initial step: mixed, as in Kun Huang's code
    (NDA's D² does not mix it; both converge). Communication: one vector per step.

    Matrix: ``W`` symmetric doubly stochastic with :math:`\lambda_{\min}(W) \ge 0`,
    checked on the host (ALGORITHMS.md §1.1(3)); the documented transform is
    :func:`core.weights.lazy`, :math:`(I+W)/2`, whose eigenvalues
    :math:`(1+\lambda)/2` are nonnegative for any mixing matrix. D²'s weaker
    condition :math:`\lambda_{\min} > -1/3` is not accepted: pass the lazy matrix.

    Precision: :math:`\sum_i (x_i^k - \psi_i^k) = 0` holds only up to rounding, and
    the fixed point moves by that drift divided by :math:`\alpha_k`; in float32 with
    a decaying step it can dominate (measured: 3e-2 against 2.8e-5 in float64 after
    11 200 steps on a 16-agent ring, ``launch/configs/rr_logistic.py:decreasing``).
    Use float64 for long non-restarting runs; ED-RR restarts every epoch.

    Args:
      loss_fn: per-agent objective.
      comm: gossip operator, ``W`` symmetric doubly stochastic and PSD.
      learning_rate: :math:`\alpha_k`, float or optax schedule.
      optimizer: optional optax transformation for the adapt step.
      restart_every_epoch: restart the recursion (:math:`\psi := x`) at every
        epoch's first step, as ED-RR does.
      name: name for logs and error messages.

    Raises:
      ValueError: if ``W`` is not symmetric doubly stochastic or has a negative
        eigenvalue (the message names the method and :math:`\lambda_{\min}`).

    References:
          Yuan, Ying, Zhao, Sayed, IEEE TSP 2019, https://arxiv.org/abs/1702.05122;
          Tang et al. (D²), ICML 2018, https://arxiv.org/abs/1803.07068
    """
    requirements.check_operator(comm, name, "psd")
    opt = local_optimizer(learning_rate, optimizer)
    return _diffusion(
        loss_fn,
        opt,
        lambda phi, first: comm.mix(phi),
        lambda params, first: comm.bytes_per_mix(params),
        restart_every_epoch,
        False,
        name,
    )


def ed_rr(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    same_sample_difference: bool = False,
) -> Algorithm:
    r"""ED-RR: exact diffusion with random reshuffling (Huang, Zhou, Pu 2025).

    At epoch :math:`t`, with :math:`G_t^\ell = \nabla F_{\pi_t(\ell)}(X_t^\ell)`:

    .. math::

      X_t^1 = W(X_t^0 - \alpha_t G_t^0), \qquad
      X_t^{\ell+1} = W\big(2X_t^\ell - X_t^{\ell-1} - \alpha_t(G_t^\ell - G_t^{\ell-1})\big)
      \quad (\ell = 1..m-1),

    :math:`X_{t+1}^0 = X_t^m`; the recursion restarts every epoch.

    Which form (ALGORITHMS.md §2.3, [AUTHORS], from the WOLIT'23 poster; the paper
    text was not readable): the poster prints the correction as
    :math:`\nabla f_{i,\pi_\ell}(x^\ell) - \nabla f_{i,\pi_\ell}(x^{\ell-1})` (the
    same sample at both points). We implement the cached previous gradient
    :math:`G^{\ell-1}` by default because it is the only form consistent with the
    poster's own averaged recursion
    :math:`\bar x^{\ell+1} = \bar x^\ell - \alpha_t \bar g^\ell` (by telescoping),
    it is the EDAS/D² form of the authors' code, and it costs one gradient per
    step; the literal form (two gradients per step, plain SGD steps only) is
    ``same_sample_difference=True``. Run with :func:`core.sampling.reshuffle`.
    ``W`` must be symmetric doubly stochastic and positive semidefinite, as for
    :func:`exact_diffusion` (pass :func:`core.weights.lazy` of a mixing matrix);
    checked on the host.

    References:
          Huang, Zhou, Pu, IEEE TAC 2025, https://arxiv.org/abs/2306.12037
    """
    if same_sample_difference:
        requirements.check_operator(comm, "ed-rr-literal", "psd")
        if optimizer is not None:
            raise ValueError(
                "same_sample_difference=True needs plain SGD steps (learning_rate), "
                f"got optimizer={optimizer!r}."
            )
        return _diffusion(
            loss_fn,
            local_optimizer(learning_rate, None),
            lambda phi, first: comm.mix(phi),
            lambda params, first: comm.bytes_per_mix(params),
            True,
            True,
            "ed-rr-literal",
        )
    return exact_diffusion(
        loss_fn,
        comm,
        learning_rate,
        optimizer=optimizer,
        restart_every_epoch=True,
        name="ed-rr",
    )


def nids(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float,
    *,
    c: float | None = None,
) -> Algorithm:
    r"""NIDS (Li, Shi, Yan 2019) with a uniform step, no regulariser.

    .. math::

      X^1 = X^0 - \alpha G^0, \qquad
      X^{k+1} = \tilde W\big(2X^k - X^{k-1} - \alpha(G^k - G^{k-1})\big), \qquad
      \tilde W = I - c\alpha(I - W).

    The default :math:`c = 1/(2\alpha)` gives :math:`\tilde W = (I+W)/2`, so NIDS is
    exact diffusion on the lazy matrix with an unmixed first step; its step may be
    as large as :math:`2/L` whatever the network. Per-agent steps
    :math:`\Lambda` and the proximal term are not implemented. Communication: one
    vector per step (none on the first).

    Matrix: ``W`` symmetric doubly stochastic (it need not be PSD), and
    :math:`0 < c\alpha \le 1/(1-\lambda_{\min}(W))`, which makes
    :math:`\tilde W \succeq 0` (eigenvalues :math:`1 - c\alpha(1-\lambda)`); the
    default :math:`c\alpha = 1/2` meets it for every mixing matrix
    (:math:`\lambda_{\min} \ge -1`). Both are checked on the host;
    :math:`\lambda_{\min}` as in :func:`core.requirements.smallest_eigenvalue`.

    Args:
      loss_fn: per-agent objective.
      comm: gossip operator with symmetric doubly stochastic ``W``.
      learning_rate: constant :math:`\alpha > 0`.
      c: mixing constant, :math:`0 < c\alpha \le 1/(1-\lambda_{\min}(W))`;
        defaults to :math:`1/(2\alpha)`.

    Raises:
      ValueError: for a non-constant or non-positive step, a ``W`` that is not
        symmetric doubly stochastic, or :math:`c\alpha` outside the range above (the
        message gives :math:`\lambda_{\min}(W)` and the largest valid ``c``).

    References:
          Li, Shi, Yan, IEEE TSP 2019, https://arxiv.org/abs/1704.07807
    """
    alpha = _constant_step(learning_rate, "nids")
    w = requirements.check_operator(comm, "nids", "symmetric")
    c_alpha = 0.5 if c is None else c * alpha
    if not c_alpha > 0.0:
        raise ValueError(f"nids: need c * learning_rate > 0, got c * alpha = {c_alpha}.")
    # c alpha <= 1 / (1 - lambda_min)  <=>  lambda_min >= 1 - 1 / (c alpha).
    lam = requirements.min_eigenvalue(comm, enough=1.0 - 1.0 / c_alpha)
    bound = 1.0 / (1.0 - lam)
    if c_alpha > bound * (1.0 + requirements.eigenvalue_tolerance(w.shape[0])):
        raise ValueError(
            f"nids: need 0 < c * learning_rate <= 1 / (1 - lambda_min(W)) = {bound:.6g} "
            f"(lambda_min(W) = {lam:.6g}), got c * alpha = {c_alpha:.6g}, i.e. c <= "
            f"{bound / alpha:.6g} for learning_rate = {alpha}."
        )

    def combine(phi: PyTree, first: jax.Array) -> PyTree:
        # The first step is unmixed: skip its exchange (nothing sent, none counted, a
        # compressed operator's memory untouched). first is the same on every agent.
        exchanged = comm.mix_if(jnp.logical_not(first[0]), phi)
        mixed = optax.tree.add(
            optax.tree.scale(1.0 - c_alpha, phi), optax.tree.scale(c_alpha, exchanged)
        )
        return select(first, phi, mixed)

    return _diffusion(
        loss_fn,
        optax.sgd(alpha),
        combine,
        lambda params, first: jnp.where(first, 0, comm.bytes_per_mix(params)),
        False,
        False,
        "nids",
    )


class ExtraState(NamedTuple):
    """State of EXTRA.

    Attributes:
      params: :math:`x_i^k`.
      prev_params: :math:`x_i^{k-1}`.
      prev_mixed: :math:`(W X^{k-1})_i`, kept so each step mixes once.
      prev_grad: :math:`g_i^{k-1}`.
      count: int32 ``(b,)``: steps taken.
    """

    params: PyTree
    prev_params: PyTree
    prev_mixed: PyTree
    prev_grad: PyTree
    count: jax.Array


def extra(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float,
) -> Algorithm:
    r"""EXTRA (Shi, Ling, Wu, Yin 2015).

    .. math::

      X^1 = W X^0 - \alpha G^0, \qquad
      X^{k+1} = (I + W) X^k - \tilde W X^{k-1} - \alpha (G^k - G^{k-1}),
      \qquad \tilde W = (I + W)/2.

    :math:`W X^{k-1}` is cached from the previous step, so each step mixes once
    (one vector per agent). ``W`` must be symmetric doubly stochastic (checked on
    the host); then :math:`\tilde W \succ 0` and :math:`\tilde W \succeq W`, as
    EXTRA needs, for any mixing matrix.

    Args:
      loss_fn: per-agent objective.
      comm: gossip operator with symmetric doubly stochastic ``W``.
      learning_rate: constant :math:`\alpha > 0`.

    References:
          Shi, Ling, Wu, Yin, SIAM J. Optim. 2015, https://arxiv.org/abs/1404.6264
    """
    alpha = _constant_step(learning_rate, "extra")
    requirements.check_operator(comm, "extra", "symmetric")
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> ExtraState:
        del data, key
        zeros = jax.tree.map(jnp.zeros_like, params)
        block = block_size(params)
        return ExtraState(params, params, zeros, zeros, jnp.zeros((block,), jnp.int32))

    def step(state: ExtraState, batch: Batch, key: jax.Array):
        del key
        first = state.count == 0
        x = state.params
        grads = grad_fn(x, batch.data)
        mixed = comm.mix(x)
        later = jax.tree.map(
            lambda x, wx, xp, wxp, g, gp: x + wx - 0.5 * (xp + wxp) - alpha * (g - gp),
            x,
            mixed,
            state.prev_params,
            state.prev_mixed,
            grads,
            state.prev_grad,
        )
        start = jax.tree.map(lambda wx, g: wx - alpha * g, mixed, grads)
        params = select(first, start, later)
        new = ExtraState(params, x, mixed, grads, state.count + 1)
        return new, {"bytes_sent": comm.bytes_per_mix(x)}

    return Algorithm(init=init, step=step, name="extra")
