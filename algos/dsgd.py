r"""Decentralized SGD (DSGD) and Distributed Random Reshuffling (D-RR).

DSGD [Lian et al. 2017; Nedić & Ozdaglar 2009] alternates a local gradient step and
a gossip step. D-RR [Huang, Li, Milzarek, Pu, Qiu 2023] is DSGD in adapt-then-
combine form driven by per-agent random reshuffling: each epoch every agent visits
its samples in a fresh random order, one component gradient and one gossip per
inner step, with the step size constant inside an epoch.

References:
  * X. Lian, C. Zhang, H. Zhang, C.-J. Hsieh, W. Zhang, J. Liu. "Can Decentralized
    Algorithms Outperform Centralized Algorithms?" NeurIPS 2017.
    https://arxiv.org/abs/1705.09056
  * K. Huang, X. Li, A. Milzarek, S. Pu, J. Qiu. "Distributed Random Reshuffling
    over Networks." IEEE Trans. Signal Processing 71 (2023).
    https://arxiv.org/abs/2112.15287
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import optax

from decentjax.core import requirements
from decentjax.core.algorithm import Algorithm, Batch, agent_grad, local_optimizer
from decentjax.core.comm import Gossip

PyTree = Any


class DsgdState(NamedTuple):
    """State of DSGD / D-RR.

    Attributes:
      params: per-agent iterates :math:`x_i`, leaves ``(b, ...)``.
      opt_state: per-agent state of the local optax optimizer (its step count
        drives step-size schedules), leaves ``(b, ...)``.
    """

    params: PyTree
    opt_state: optax.OptState


def dsgd(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    variant: Literal["atc", "cta"] = "atc",
    name: str | None = None,
) -> Algorithm:
    r"""Decentralized (stochastic) gradient descent.

    With stacked iterates :math:`X^k` (row :math:`i` is agent :math:`i`),
    stochastic gradients :math:`G^k` (row :math:`i` is
    :math:`\nabla f_{i,\xi_i^k}(x_i^k)`) and mixing matrix :math:`W`:

    .. math::

      \text{ATC:}\quad X^{k+1} = W\,(X^k - \alpha_k G^k), \qquad
      \text{CTA:}\quad X^{k+1} = W X^k - \alpha_k G^k.

    With ``optimizer`` given, :math:`-\alpha_k G^k` is replaced by that optax
    transformation's per-agent update. One gossip of the parameters per step:
    each agent sends one vector.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      comm: gossip operator; ``W`` doubly stochastic (symmetry is not needed: the
        one-peer exponential sequence qualifies), checked on the host.
      learning_rate: step size :math:`\alpha_k`, a float or an optax schedule of
        the step count (see :mod:`core.schedules` for per-epoch schedules).
      optimizer: a local optax optimizer instead of plain SGD steps.
      variant: ``"atc"`` (adapt-then-combine, the RR papers' form) or ``"cta"``.
      name: name for logs and error messages; default ``"dsgd"`` (``"dsgd-cta"``).

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`DsgdState`.

    Raises:
      ValueError: for an unknown ``variant``, or a ``comm`` whose ``W`` is not doubly
        stochastic (a row- or column-stochastic directed operator is rejected).

    Examples:
      >>> import numpy as np
      >>> from core import comm, topology, weights
      >>> from models import least_squares
      >>> w = weights.metropolis_hastings(topology.ring(8))
      >>> alg = dsgd(least_squares().loss, comm.gossip(w), learning_rate=0.1)
      >>> alg.name
      'dsgd'

    References:
          Lian et al., NeurIPS 2017, https://arxiv.org/abs/1705.09056 (D-PSGD, CTA);
          Nedić & Ozdaglar, IEEE TAC 2009 (DGD).
    """
    if variant not in ("atc", "cta"):
        raise ValueError(f"variant must be 'atc' or 'cta', got {variant!r}.")
    name = name or ("dsgd-cta" if variant == "cta" else "dsgd")
    requirements.check_operator(comm, name, "doubly_stochastic")
    opt = local_optimizer(learning_rate, optimizer)
    grad_fn = agent_grad(loss_fn)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> DsgdState:
        del data, key  # DSGD needs neither.
        return DsgdState(params=params, opt_state=jax.vmap(opt.init)(params))

    def step(state: DsgdState, batch: Batch, key: jax.Array):
        del key  # Deterministic given the batch.
        grads = grad_fn(state.params, batch.data)
        updates, opt_state = jax.vmap(opt.update)(grads, state.opt_state, state.params)
        if variant == "atc":
            params = comm.mix(optax.apply_updates(state.params, updates))
        else:
            params = optax.apply_updates(comm.mix(state.params), updates)
        return DsgdState(params, opt_state), {"bytes_sent": comm.bytes_per_mix(params)}

    return Algorithm(init=init, step=step, name=name)


def d_rr(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
) -> Algorithm:
    r"""Distributed Random Reshuffling (D-RR), Huang et al. 2023, Algorithm 1.

    At epoch :math:`t` each agent :math:`i` draws a permutation :math:`\pi_t^i` of
    its :math:`m` samples; for :math:`\ell = 0, \dots, m-1`

    .. math::

      X_t^{\ell+1} = W\big(X_t^\ell - \alpha_t \nabla F_{\pi_t(\ell)}(X_t^\ell)\big),
      \qquad X_{t+1}^0 = X_t^m,

    with :math:`\alpha_t` constant inside the epoch. The update is DSGD-ATC; what
    makes it D-RR is the sample order, so run it with
    :func:`core.sampling.reshuffle` (``batch_size=1`` in the paper) and an
    epoch-indexed step (:func:`core.schedules.inverse_epoch` gives the paper's
    :math:`\alpha_t = 1/(50t+400)`). Initialise all agents at the same point.
    One gossip (one vector per agent) per inner step.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      comm: gossip operator, ``W`` doubly stochastic (as for :func:`dsgd`); the
        authors' code uses the lazy Metropolis matrix.
      learning_rate: :math:`\alpha_t`, float or optax schedule.
      optimizer: optional local optax optimizer replacing plain steps.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`DsgdState`.

    References:
          Huang, Li, Milzarek, Pu, Qiu, IEEE TSP 2023, https://arxiv.org/abs/2112.15287
    """
    return dsgd(loss_fn, comm, learning_rate, optimizer=optimizer, variant="atc", name="d-rr")


def dsgd_momentum(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    learning_rate: float | optax.Schedule,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> Algorithm:
    r"""DSGD with local heavy-ball momentum (DSGDm), the deep-learning baseline.

    Each agent keeps its own momentum buffer :math:`m_i` and gossips only its
    iterate (adapt-then-combine):

    .. math::

      m_i^{k+1} = \beta\, m_i^k + \nabla f_{i,\xi_i^k}(x_i^k), \qquad
      x_i^{k+1} = \sum_j w_{ij}\,\big(x_j^k - \alpha_k\, m_j^{k+1}\big),

    with :math:`m_i^0 = 0` (``nesterov=True`` steps along
    :math:`\nabla f_{i,\xi_i^k}(x_i^k) + \beta m_i^{k+1}` instead). This is the "DSGD
    with local momentum" baseline of Lin, Karimireddy, Stich, Jaggi (ICML 2021)
    Algorithm 1 without its quasi-global modification, i.e. :func:`dsgd` whose local
    optimizer is ``optax.sgd(learning_rate, momentum=β)``. One vector sent per step,
    as DSGD; the buffer stays local.

    Args:
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      comm: gossip operator, ``W`` doubly stochastic (as for :func:`dsgd`).
      learning_rate: :math:`\alpha_k`, a float or an optax schedule of the step count.
      momentum: :math:`\beta \in [0, 1)`.
      nesterov: Nesterov's form of the momentum step.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`DsgdState` (the
      buffers are ``opt_state``), named ``"dsgd-momentum"``.

    Raises:
      ValueError: if ``momentum`` is outside ``[0, 1)``, or as :func:`dsgd`.

    References:
          Lin, Karimireddy, Stich, Jaggi, "Quasi-Global Momentum: Accelerating
          Decentralized Deep Learning on Heterogeneous Data", ICML 2021,
          https://arxiv.org/abs/2102.04761 (the DSGDm baseline).
    """
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
    if not callable(learning_rate) and not float(learning_rate) > 0.0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
    optimizer = optax.sgd(learning_rate, momentum=float(momentum), nesterov=nesterov)
    return dsgd(loss_fn, comm, optimizer=optimizer, variant="atc", name="dsgd-momentum")
