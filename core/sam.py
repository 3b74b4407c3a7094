r"""Sharpness-aware minimisation (SAM) as a loss wrapper usable by every method.

:func:`sam` turns a per-agent loss into one whose gradient is the SAM gradient of
Foret et al. (2021): the gradient at the point reached by a normalised ascent step of
radius :math:`\rho` on the *same* minibatch (and, for a keyed loss or a model with
state, the same key and state),

.. math::

  \varepsilon_i = \rho\,\frac{\nabla f_i(x_i; \xi_i)}{\|\nabla f_i(x_i; \xi_i)\|_2},
  \qquad
  g_i^{\mathrm{SAM}} = \nabla f_i(x_i + \varepsilon_i; \xi_i),

with the norm taken over agent :math:`i`'s whole parameter pytree (per agent: the
methods differentiate the loss of one agent at a time, under ``jax.vmap`` or
``jax.lax.map``). :math:`\varepsilon_i = 0` where the gradient is zero. Every method
of :mod:`algos` computes its gradients with ``jax.grad`` of the loss it is given, so
``algos.dsgd(sam(loss, 0.05), ...)``, ``algos.gradient_tracking(sam(loss, 0.05), ...)``,
``algos.fedavg(sam(loss, 0.05), ...)`` (FedSAM) or ``algos.with_model(algos.dsgd,
sam(task, 0.05), ...)`` take SAM local steps without any change to the method.

The wrapped loss is :math:`(1-\alpha) f_i(x) + \alpha f_i(x + \mathrm{sg}(\varepsilon_i))`,
``sg`` a stop-gradient, so its gradient is :math:`(1-\alpha)\nabla f_i(x) + \alpha
g_i^{\mathrm{SAM}}`: the usual first-order SAM gradient (the Jacobian of
:math:`\varepsilon` is dropped, as in the paper's Eq. 3) at ``alpha=1``, and FedSpeed's
merged gradient for :math:`\alpha < 1`. Its *value* is that combination of losses (at
``alpha=1`` the loss at the perturbed point); metrics use the objective's own loss.

Cost: two gradient evaluations per step instead of one (three forward passes when
:math:`\alpha < 1`, where XLA usually shares the first two).

References:
  P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur. "Sharpness-Aware Minimization for
  Efficiently Improving Generalization." ICLR 2021. https://arxiv.org/abs/2010.01412
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from decentjax.core.algorithm import AgentMapped
from decentjax.core.loss_inputs import LossInputs, Task, loss_arity

PyTree = Any
Loss = Callable[..., jax.Array]


def _check(rho: Any, alpha: Any) -> tuple[float, float]:
    for name, value, low in (("rho", rho, "0 <= rho"), ("alpha", alpha, "0 <= alpha <= 1")):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value < 0
            or (name == "alpha" and value > 1)
        ):
            raise ValueError(f"{name} must be a finite float with {low}, got {value!r}.")
    return float(rho), float(alpha)


def ascent(grads: PyTree, rho: float) -> PyTree:
    r""":math:`\rho\, g / \|g\|_2` over one agent's pytree ``grads`` (zero where ``g = 0``).

    Args:
      grads: one agent's gradient pytree.
      rho: the radius :math:`\rho \ge 0`.

    Returns:
      The perturbation :math:`\varepsilon`, with the leaves of ``grads``.
    """
    norm = optax.tree.norm(grads)
    positive = norm > 0
    factor = jnp.where(positive, rho / jnp.where(positive, norm, 1), 0)
    return jax.tree.map(lambda g: factor.astype(g.dtype) * g, grads)


def _perturbed(value_and_aux: Callable, rho: float, alpha: float) -> Callable:
    """``(params, *rest) -> (value, aux)`` with the SAM / merged gradient, aux at ``params``."""

    def wrapped(params: PyTree, *rest: Any) -> tuple[jax.Array, Any]:
        fixed = jax.lax.stop_gradient(params)
        (_, aux), grads = jax.value_and_grad(value_and_aux, has_aux=True)(fixed, *rest)
        shifted = optax.tree.add(params, ascent(grads, rho))
        sam_value = value_and_aux(shifted, *rest)[0]
        if alpha == 1.0:
            return sam_value, aux
        # The unperturbed term is differentiated at params itself (the stop-gradient
        # copy above gives it no gradient).
        plain = value_and_aux(params, *rest)[0]
        return (1.0 - alpha) * plain + alpha * sam_value, aux

    return wrapped


def sam(loss: Loss | Task | AgentMapped, rho: float, *, alpha: float = 1.0) -> Any:
    r"""The loss whose gradient is the SAM gradient (merged with the plain one by ``alpha``).

    .. math::

      \nabla_x\,\mathrm{sam}(f)(x) = (1-\alpha)\,\nabla f(x; \xi)
        + \alpha\,\nabla f\big(x + \rho\,\tfrac{\nabla f(x;\xi)}{\|\nabla f(x;\xi)\|};\ \xi\big),

    per agent, on the same minibatch :math:`\xi` (the same key and model state).

    Args:
      loss: a per-agent ``loss(params, batch)``, a keyed ``loss(params, batch, key)``,
        a :class:`~core.loss_inputs.Task` (model with state: the returned state is the
        one the *unperturbed* forward pass leaves, as SAM implementations keep the
        BatchNorm statistics of the first pass), or a loss marked by
        :func:`core.algorithm.map_over_agents` (the mark is kept).
      rho: perturbation radius :math:`\rho \ge 0`; ``0`` gives the plain gradient
        (at twice the cost).
      alpha: weight :math:`\alpha \in [0, 1]` of the perturbed gradient; ``1`` is SAM,
        ``0`` the plain gradient.

    Returns:
      A loss of the same kind as ``loss`` (same signature, ``Task`` or mark), to pass
      to any method of :mod:`algos` in place of ``loss``.

    Raises:
      ValueError: for ``rho < 0``, ``alpha`` outside ``[0, 1]``, a non-finite value,
        or a loss whose signature fits none of the forms above.

    Examples:
      >>> from decentjax.core import comm, topology, weights
      >>> from decentjax.models import least_squares
      >>> from decentjax import algos
      >>> op = comm.gossip(weights.metropolis_hastings(topology.ring(8)))
      >>> algos.dsgd(sam(least_squares().loss, 0.05), op, 0.1).name
      'dsgd'

    References:
      Foret, Kleiner, Mobahi, Neyshabur, ICLR 2021, https://arxiv.org/abs/2010.01412;
      FedSpeed's merged gradient: Sun et al., ICLR 2023, https://arxiv.org/abs/2302.10429.
    """
    rho, alpha = _check(rho, alpha)
    if isinstance(loss, AgentMapped):
        return AgentMapped(sam(loss.loss_fn, rho, alpha=alpha), loss.batch_size)
    if isinstance(loss, Task):
        value_and_state = _perturbed(loss.value_and_state, rho, alpha)

        def task_value_and_state(params: PyTree, inputs: LossInputs):
            return value_and_state(params, inputs)

        return loss._replace(value_and_state=task_value_and_state, name=f"sam({loss.name})")
    arity = loss_arity(loss)
    with_aux = _perturbed(lambda *args: (loss(*args), ()), rho, alpha)
    if arity == 2:

        def sam_loss(params: PyTree, batch: PyTree) -> jax.Array:
            return with_aux(params, batch)[0]

    else:

        def sam_loss(params: PyTree, batch: PyTree, key: jax.Array) -> jax.Array:
            return with_aux(params, batch, key)[0]

    sam_loss.__name__ = f"sam_{getattr(loss, '__name__', 'loss')}"
    return sam_loss
