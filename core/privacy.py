r"""Differentially private local steps (DP-SGD) for any method, and their privacy budget.

DP-SGD (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep learning with
differential privacy", CCS 2016, https://arxiv.org/abs/1607.00133) replaces an agent's
minibatch gradient by

.. math::

  \tilde g = \frac{1}{B}\Big(\sum_{e=1}^{B} g_e \min\big(1, C/\|g_e\|_2\big)
  + \sigma C\,\xi\Big), \qquad \xi \sim \mathcal N(0, I_d),

with :math:`g_e = \nabla \ell(\theta; z_e)` the per-example gradients (``jax.vmap``),
:math:`C` the clipping norm and :math:`\sigma` the noise multiplier.

:func:`dp_sgd` wraps a per-agent loss ``loss(params, batch)`` into a keyed loss
``loss(params, batch, key)`` whose **value** is the plain minibatch mean and whose
**gradient** (a ``jax.custom_vjp``) is :math:`\tilde g` with :math:`\xi` drawn from
the agent's step key. Every method that differentiates its loss with ``jax.grad``
therefore takes DP-SGD steps unchanged through :func:`algos.with_model`, which feeds
the per-agent key (``fold_in(fold_in(step_key, LOSS_STREAM), agent)``, the same on
any number of devices)::

    private = privacy.dp_sgd(obj.loss, clip_norm=1.0, noise_multiplier=1.1)
    algorithm = algos.with_model(algos.fedavg, private, op, 0.1, local_steps=5)

Run it with :func:`core.sampling.without_replacement` (each step a fresh uniform
subset of ``B`` of the agent's ``m`` samples) and :func:`epsilon` gives the budget of
each agent's data after ``T`` local steps: Google's ``dp-accounting`` RDP accountant on
``T`` self-composed ``SampledWithoutReplacementDpEvent(m, B, GaussianDpEvent(σ/2))``
under the replace-one relation (the only relation it supports for this sampling;
replacing one example moves the clipped sum by up to :math:`2C`, so the noise is
:math:`\sigma/2` times that sensitivity). ``full_batch`` sampling composes
``GaussianDpEvent(σ/2)`` ``T`` times. The guarantee is record-level DP of each agent's
local data against an observer of everything the agent sends; it does not use the
amplification of FedAvg's client sampling (conservative), and every local step counts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from decentjax.core.sampling import Sampler

PyTree = Any
ACCOUNTED_SAMPLERS = ("without_replacement", "full")


def _check(clip_norm: float, noise_multiplier: float) -> tuple[float, float]:
    for name, value in (("clip_norm", clip_norm), ("noise_multiplier", noise_multiplier)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a real number, got {value!r}.")
    clip_norm, noise_multiplier = float(clip_norm), float(noise_multiplier)
    if not clip_norm > 0.0:
        raise ValueError(f"clip_norm must be positive (inf: no clipping), got {clip_norm!r}.")
    if not (noise_multiplier >= 0.0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier!r}.")
    if noise_multiplier > 0.0 and math.isinf(clip_norm):
        raise ValueError(
            f"noise_multiplier={noise_multiplier} needs a finite clip_norm: the noise is "
            "sigma * C and without clipping the sensitivity is unbounded."
        )
    return clip_norm, noise_multiplier


def _examples(batch: PyTree) -> PyTree:
    """The batch with a size-1 batch axis per example, for ``vmap`` over its rows."""
    return jax.tree.map(lambda a: a[:, None], batch)


def clipped_gradients(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    clip_norm: float,
) -> tuple[PyTree, jax.Array]:
    r"""Per-example gradients clipped to norm ``clip_norm``, and their norms before.

    Args:
      loss_fn: ``(params, batch) -> scalar`` of one agent (a mean over the batch).
      params: one agent's parameters.
      batch: one agent's minibatch, leaves ``(B, ...)``.
      clip_norm: :math:`C` (``inf``: no clipping).

    Returns:
      ``(clipped, norms)``: ``clipped`` has ``params``' leaves with a leading ``B``
      axis, :math:`g_e \min(1, C/\|g_e\|)`; ``norms`` is ``(B,)``, :math:`\|g_e\|_2`
      over all leaves.
    """
    grads = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, _examples(batch))
    squares = [
        jnp.sum(jnp.reshape(g * g, (g.shape[0], -1)), axis=1) for g in jax.tree.leaves(grads)
    ]
    norms = jnp.sqrt(sum(squares))
    scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, jnp.finfo(norms.dtype).tiny))
    clipped = jax.tree.map(lambda g: g * jnp.reshape(scale, (-1,) + (1,) * (g.ndim - 1)), grads)
    return clipped, norms


def private_gradient(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    key: jax.Array,
    *,
    clip_norm: float,
    noise_multiplier: float,
) -> PyTree:
    r"""The DP-SGD gradient :math:`\tilde g` of one agent's minibatch (module docstring).

    Args:
      loss_fn: ``(params, batch) -> scalar`` of one agent.
      params: one agent's parameters.
      batch: its minibatch, leaves ``(B, ...)``.
      key: the noise key.
      clip_norm: :math:`C`.
      noise_multiplier: :math:`\sigma` (0: no noise).

    Returns:
      :math:`\tilde g`, with ``params``' structure.
    """
    clipped, _ = clipped_gradients(loss_fn, params, batch, clip_norm)
    size = jax.tree.leaves(batch)[0].shape[0]
    total = jax.tree.map(lambda g: jnp.sum(g, axis=0), clipped)
    if noise_multiplier > 0.0:
        leaves, treedef = jax.tree.flatten(total)
        keys = jax.random.split(key, len(leaves))
        std = noise_multiplier * clip_norm
        leaves = [
            a + std * jax.random.normal(k, a.shape, a.dtype)
            for a, k in zip(leaves, keys, strict=True)
        ]
        total = jax.tree.unflatten(treedef, leaves)
    return jax.tree.map(lambda a: a / size, total)


def dp_sgd(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    *,
    clip_norm: float,
    noise_multiplier: float,
) -> Callable[[PyTree, PyTree, jax.Array], jax.Array]:
    r"""``loss_fn`` as a keyed loss whose gradient is the DP-SGD gradient.

    Run any method on it through :func:`algos.with_model` (module docstring). The
    value is the mean of the per-example losses (``loss_fn`` on each example; equal
    to ``loss_fn(params, batch)`` for a mean loss); ``jax.grad`` gives
    :func:`private_gradient` with the loss's key. With ``noise_multiplier=0`` and
    ``clip_norm=inf`` the gradient is the mean of the per-example gradients, the
    plain gradient up to rounding.

    Args:
      loss_fn: ``(params, batch) -> scalar`` of one agent, a mean over the batch.
      clip_norm: :math:`C > 0` (``inf`` only with ``noise_multiplier=0``).
      noise_multiplier: :math:`\sigma \ge 0`.

    Returns:
      ``loss(params, batch, key) -> scalar`` with the DP-SGD gradient in ``params``
      (none in ``batch`` and ``key``).

    Raises:
      ValueError: for ``clip_norm <= 0``, ``noise_multiplier < 0`` or non-finite, or
        noise without clipping.

    References:
          Abadi et al., CCS 2016, https://arxiv.org/abs/1607.00133.
    """
    clip_norm, noise_multiplier = _check(clip_norm, noise_multiplier)

    @jax.custom_vjp
    def private_loss(params: PyTree, batch: PyTree, key: jax.Array) -> jax.Array:
        del key  # Only the gradient is noisy.
        values = jax.vmap(loss_fn, in_axes=(None, 0))(params, _examples(batch))
        return jnp.mean(values)

    def forward(params, batch, key):
        return private_loss(params, batch, key), (params, batch, key)

    def backward(residuals, cotangent):
        params, batch, key = residuals
        grads = private_gradient(
            loss_fn,
            params,
            batch,
            key,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
        )
        return jax.tree.map(lambda g: cotangent * g, grads), None, None

    private_loss.defvjp(forward, backward)
    return private_loss


def dp_events(noise_multiplier: float, sampler: Sampler, steps: int) -> Any:
    """The ``dp_accounting`` event of ``steps`` DP-SGD steps with ``sampler``'s sampling.

    Raises:
      ValueError: for a sampler whose sampling the accountant does not model
        (``reshuffle``, ``iid`` with replacement), naming the valid ones.
      ImportError: without ``dp-accounting`` (``pip install decentjax[dp]``).
    """
    import dp_accounting  # Optional dependency: the extra "dp".

    if sampler.name not in ACCOUNTED_SAMPLERS:
        raise ValueError(
            f"the privacy accountant models the samplers {list(ACCOUNTED_SAMPLERS)}, got "
            f"{sampler.name!r}; run DP-SGD with sampling.without_replacement(m, B) (a fresh "
            "uniform batch of distinct samples each step) or sampling.full_batch(m)."
        )
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    # Replace-one neighbours: the clipped sum moves by up to 2C, the noise is sigma C.
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / 2.0)
    if sampler.name == "full":
        event = gaussian
    else:
        event = dp_accounting.SampledWithoutReplacementDpEvent(
            sampler.num_samples, sampler.batch_size, gaussian
        )
    return dp_accounting.SelfComposedDpEvent(event, int(steps))


def epsilon(
    noise_multiplier: float,
    sampler: Sampler,
    steps: int,
    delta: float,
    *,
    orders: tuple[float, ...] | None = None,
) -> float:
    r"""The :math:`(\varepsilon, \delta)` budget of one agent's data after ``steps`` steps.

    ``dp_accounting.rdp.RdpAccountant`` (replace-one relation) on :func:`dp_events`.

    Args:
      noise_multiplier: :math:`\sigma` (0 gives ``inf``).
      sampler: the sampler the run used (``without_replacement`` or ``full``).
      steps: DP-SGD steps each agent took (every local step counts).
      delta: :math:`\delta \in (0, 1)`.
      orders: RDP orders (``None``: the accountant's default set; a short list is
        faster, about 0.05 s instead of 1 s, and can only give a larger epsilon).

    Returns:
      :math:`\varepsilon` (``inf`` without noise; 0 after no step).

    Raises:
      ValueError: for ``delta`` outside ``(0, 1)`` or as :func:`dp_events`.
    """
    import dp_accounting  # Optional dependency: the extra "dp".

    if not 0.0 < float(delta) < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}.")
    event = dp_events(noise_multiplier, sampler, steps)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    accountant = dp_accounting.rdp.RdpAccountant(
        orders=None if orders is None else list(orders),
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE,
    )
    return float(accountant.compose(event).get_epsilon(float(delta)))
