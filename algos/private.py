r"""Any method with differentially private (DP-SGD) local steps.

:func:`private` is :func:`algos.with_model` on :func:`core.privacy.dp_sgd`'s keyed
loss: every gradient the method takes becomes

.. math::

  \tilde g_i = \frac{1}{B}\Big(\sum_{e \in \mathcal B_i} g_{i,e}
  \min\big(1, C/\|g_{i,e}\|\big) + \sigma C\,\xi_i\Big),
  \qquad \xi_i \sim \mathcal N(0, I),

(Abadi et al., CCS 2016, https://arxiv.org/abs/1607.00133), with agent :math:`i`'s
noise drawn from its per-step key. Run it with
:func:`core.sampling.without_replacement` and report the budget with
:func:`core.privacy.epsilon`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from decentjax.algos.with_model import with_model
from decentjax.core import privacy
from decentjax.core.algorithm import Algorithm

PyTree = Any
_NO_GRADIENT = ("fedkseed",)  # factories that only evaluate the loss


def private(
    factory: Callable[..., Algorithm],
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Any,
    /,
    *args: Any,
    clip_norm: float,
    noise_multiplier: float,
    **kwargs: Any,
) -> Algorithm:
    r"""``factory(loss_fn, comm, *args, **kwargs)`` with DP-SGD gradients.

    Args:
      factory: a method factory taking ``(loss, comm, ...)``: :func:`algos.dsgd`,
        :func:`algos.fedavg`, :func:`algos.gradient_tracking`, ... (every method of
        :func:`algos.with_model`).
      loss_fn: per-agent ``(params, batch) -> scalar``, a mean over the batch.
      comm: the method's communication operator.
      *args: further positional arguments of ``factory``.
      clip_norm: per-example clipping norm :math:`C`.
      noise_multiplier: :math:`\sigma` (noise std :math:`\sigma C` on the sum).
      **kwargs: keyword arguments of ``factory`` (``learning_rate=``, ...).

    Returns:
      The method, named ``"dp-<name>"``, whose every gradient is the DP-SGD one.

    The privacy argument assumes each agent takes **one** gradient of its loss per step
    (one noise draw per step key). Methods that do not take gradients (zeroth-order
    :func:`algos.fedkseed`) or take two on the same key (:func:`algos.ed_rr` with
    ``same_sample_difference=True``, whose difference cancels the noise) are refused.

    Raises:
      ValueError: as :func:`core.privacy.dp_sgd` or ``factory``, before compiling; a
        factory listed above.

    References:
          Abadi et al., "Deep learning with differential privacy", CCS 2016,
          https://arxiv.org/abs/1607.00133.
    """
    name = getattr(factory, "__name__", repr(factory))
    if kwargs.get("same_sample_difference"):
        raise ValueError(
            f"{name} with same_sample_difference=True takes two gradients on one step key, "
            "whose difference cancels the DP noise; use same_sample_difference=False."
        )
    dp_loss = privacy.dp_sgd(loss_fn, clip_norm=clip_norm, noise_multiplier=noise_multiplier)
    algorithm = with_model(factory, dp_loss, comm, *args, **kwargs)
    if algorithm.name.startswith(_NO_GRADIENT):
        raise ValueError(
            f"{algorithm.name} takes no gradients (zeroth-order steps from loss values), so "
            "DP-SGD noise on gradients would not make it private; give a gradient method "
            "(dsgd, fedavg, gradient_tracking, ...)."
        )
    return algorithm._replace(name=f"dp-{algorithm.name}")
