r"""DSMT: distributed stochastic momentum tracking with loopless Chebyshev acceleration.

Huang, Pu and Nedić's DSMT tracks a *momentum* of the local stochastic gradients
(instead of the gradients themselves, as DSGT does) and mixes both the iterates and the
tracker with loopless Chebyshev acceleration (LCA) of the lazy matrix
:math:`\bar W = (I + W)/2`: one extra lagged copy per variable turns a gossip step into
a two-term recursion whose contraction is about :math:`1 - \sqrt{1 - \lambda}` instead
of :math:`\lambda`, at the cost of one mix per variable per step, as DSGT.

The update was read from the authors' code (``Kun73/DSMT``,
``LogisticRegression/Optimizers/Dopt2.py``, function ``DSMT``) and checked against it
on their logistic-regression problem, ring of 50 agents and their own sample draws
(``launch/analysis/dsmt_authors.py``): [AUTHORS: code]. The paper's abstract states
the method (momentum tracking + LCA, single loop); its text was not readable here.

Reference:
  K. Huang, S. Pu, A. Nedić. "An Accelerated Distributed Stochastic Gradient Method
  with Momentum." Mathematical Programming (2025). https://arxiv.org/abs/2402.09714
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.algos import _checks
from decentjax.core import requirements, spectral, weights
from decentjax.core.algorithm import Algorithm, Batch, agent_grad
from decentjax.core.comm import Gossip
from decentjax.core.tree import block_size, scale, select

PyTree = Any


class DsmtState(NamedTuple):
    """State of DSMT (leaves ``(b, ...)`` unless noted).

    Attributes:
      params: iterates :math:`x_i^k`.
      params_lag: the LCA lagged copy :math:`\\hat x_i^k`.
      tracker: :math:`y_i^{k-1}`, the direction used by the previous step.
      tracker_lag: its lagged copy :math:`\\hat y_i^{k-1}`.
      momentum: :math:`z_i^{k-1}`, the local gradient momentum.
      count: int32 ``(b,)``: steps taken (0 until the first step).
    """

    params: PyTree
    params_lag: PyTree
    tracker: PyTree
    tracker_lag: PyTree
    momentum: PyTree
    count: jax.Array


def lca_weight(lam: float) -> float:
    r"""The LCA weight :math:`\eta` of the authors' code for a PSD mixing rate :math:`\lambda`.

    .. math::

      \tilde\eta = \frac{1 - \sqrt{1 - \lambda^2}}{1 + \sqrt{1 - \lambda^2}}, \qquad
      \eta = \frac{1 + \tilde\eta}{2}.

    Args:
      lam: :math:`\lambda \in [0, 1)`, the second largest eigenvalue of :math:`\bar W`.

    Returns:
      :math:`\eta \in [1/2, 1)`.

    Raises:
      ValueError: if ``lam`` is not in ``[0, 1)`` (1 means a disconnected graph).
    """
    if not 0.0 <= lam < 1.0:
        raise ValueError(f"the mixing rate lambda must be in [0, 1), got {lam!r}.")
    root = math.sqrt(1.0 - lam * lam)
    return 0.5 * (1.0 + (1.0 - root) / (1.0 + root))


def dsmt(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule,
    *,
    momentum: float | None = None,
    lca: float | None = None,
    lazy: bool = True,
    name: str = "dsmt",
) -> Algorithm:
    r"""DSMT (Huang, Pu, Nedić 2025): momentum tracking with Chebyshev-accelerated gossip.

    With :math:`\bar W = (I+W)/2`, stacked iterates :math:`X^k`, stochastic gradients
    :math:`G^k` at :math:`X^k`, and the LCA mix of a variable :math:`U` with lagged copy
    :math:`\hat U`,
    :math:`\mathrm{LCA}(U, \hat U) = \bigl((1+\eta)\bar W U - \eta \hat U,\ U\bigr)`:

    .. math::

      Z^0 = Y^0 = \hat Y^0 &= (1-\beta) G^0, \qquad \hat X^0 = X^0, \\
      (X^{k+1}, \hat X^{k+1}) &= \mathrm{LCA}(X^k - \alpha_k Y^k,\
        \hat X^k - \alpha_k Y^k), \\
      Z^{k+1} &= \beta Z^k + (1-\beta) G^{k+1}, \\
      (Y^{k+1}, \hat Y^{k+1}) &= \mathrm{LCA}(Y^k + Z^{k+1} - Z^k,\
        \hat Y^k + Z^{k+1} - Z^k).

    Defaults as in the authors' code: :math:`\lambda` the second largest eigenvalue of
    :math:`\bar W`, :math:`\eta` = :func:`lca_weight` (:math:`\lambda`) and
    :math:`\beta = \sqrt\eta`. Invariants (from :math:`\hat X^0 = X^0`,
    :math:`\hat Y^0 = Y^0`): :math:`\bar x^k = \bar{\hat x}^k`,
    :math:`\bar y^k = \bar z^k`, so :math:`\bar x^{k+1} = \bar x^k - \alpha_k \bar z^k`,
    SGD with heavy-ball-style momentum on the average. With exact gradients the fixed
    point is consensus at :math:`x^*`.

    One step evaluates :math:`G^k`, then updates the tracker from the cached
    :math:`(Y^{k-1}, Z^{k-1})` and takes the :math:`x` step (the half-step shift of
    :mod:`algos.tracking`), so the sample of step :math:`k` is the authors' sample
    :math:`k`. Communication: two vectors per agent per step (:math:`x` and :math:`y`;
    one on the first step, whose :math:`Y^0` is local).

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      comm: gossip operator holding the (non-lazy) ``W``, symmetric doubly stochastic
        (checked on the host); DSMT mixes with :math:`\bar W = (I + W)/2`, built in,
        as the authors' code does. Pass e.g.
        ``comm.gossip(weights.metropolis_drr(A, self_loop_in_degree=True))`` for their
        matrix.
      learning_rate: :math:`\alpha_k`, a positive float or an optax schedule of the step.
      momentum: :math:`\beta \in [0, 1)`; ``None``: :math:`\sqrt\eta`. :math:`\beta = 0`
        is ATC gradient tracking with LCA mixing.
      lca: :math:`\eta \in [0, 1)`; ``None``: from :math:`\bar W`'s spectrum.
        :math:`\eta = 0` is plain :math:`\bar W` mixing (the code's ``DSMT_noLCA`` on
        :math:`\bar W`).
      lazy: ``True``: ``comm`` holds :math:`W` and :math:`\bar W = (I+W)/2` is built
        in; ``False``: ``comm`` already holds the :math:`\bar W` to mix with, which
        must be positive semidefinite (checked), e.g. ``weights.lazy(W)``, so DSMT
        shares one operator with DSGD / DSGT run on :math:`\bar W`, as in the
        authors' experiments.
      name: name for logs.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`DsmtState`.

    Raises:
      ValueError: for a ``comm`` whose ``W`` is not symmetric doubly stochastic (or,
        with ``lazy=False``, not positive semidefinite), a
        non-positive step, or ``momentum`` / ``lca`` outside ``[0, 1)``.

    Examples:
      >>> from decentjax.core import comm, topology, weights
      >>> from decentjax.models import objectives
      >>> op = comm.gossip(weights.metropolis_hastings(topology.ring(8)))
      >>> dsmt(objectives.least_squares().loss, op, 0.05).name
      'dsmt'

    References:
      Huang, Pu, Nedić, Math. Program. 2025, https://arxiv.org/abs/2402.09714;
      authors' code ``Kun73/DSMT``.
    """
    w = requirements.check_operator(comm, name, "symmetric" if lazy else "psd")
    wbar = weights.lazy(w) if lazy else w
    if lca is None:
        lca = lca_weight(spectral.mixing_rate(wbar))
    eta = _checks.real("lca", lca, low=0, high=1, high_open=True)
    beta = (
        math.sqrt(eta)
        if momentum is None
        else _checks.real("momentum", momentum, low=0, high=1, high_open=True)
    )
    if not callable(learning_rate):
        _checks.real("learning_rate", learning_rate, low=0, low_open=True, note="or a schedule")
    schedule = learning_rate if callable(learning_rate) else (lambda count: learning_rate)
    grad_fn = agent_grad(loss_fn)

    def lca_mix(mixed: PyTree, u: PyTree, u_lag: PyTree) -> tuple[PyTree, PyTree]:
        """``((1 + eta) Wbar u - eta u_lag, u)`` from ``mixed``, the operator's ``W u``."""
        if lazy:  # Wbar u = (u + W u) / 2.
            mixed = jax.tree.map(lambda a, m: 0.5 * (a + m), u, mixed)
        out = jax.tree.map(lambda m, lag: (1.0 + eta) * m - eta * lag, mixed, u_lag)
        return out, u

    def init(params: PyTree, data: PyTree, key: jax.Array) -> DsmtState:
        del data, key
        zeros = jax.tree.map(jnp.zeros_like, params)
        count = jnp.zeros((block_size(params),), jnp.int32)
        return DsmtState(params, params, zeros, zeros, zeros, count)

    def step(state: DsmtState, batch: Batch, key: jax.Array):
        del key
        first = state.count == 0
        send = jnp.logical_not(first[0])  # The same on every agent and device.
        grads = grad_fn(state.params, batch.data)
        fresh = optax.tree.scale(1.0 - beta, grads)
        z = select(first, fresh, optax.tree.add(optax.tree.scale(beta, state.momentum), fresh))
        delta = optax.tree.sub(z, state.momentum)
        y_tmp = optax.tree.add(state.tracker, delta)
        y, y_lag = lca_mix(
            comm.mix_if(send, y_tmp), y_tmp, optax.tree.add(state.tracker_lag, delta)
        )
        y, y_lag = select(first, (z, z), (y, y_lag))
        alpha = jax.vmap(lambda c: jnp.asarray(schedule(c), jnp.result_type(float)))(state.count)
        step_dir = scale(alpha, y)
        x_tmp = optax.tree.sub(state.params, step_dir)
        x, x_lag = lca_mix(comm.mix(x_tmp), x_tmp, optax.tree.sub(state.params_lag, step_dir))
        new = DsmtState(x, x_lag, y, y_lag, z, state.count + 1)
        tracker_bytes = jnp.where(send, comm.bytes_per_mix(y), 0)
        return new, {"bytes_sent": comm.bytes_per_mix(x) + tracker_bytes}

    return Algorithm(init=init, step=step, name=name)
