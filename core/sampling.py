r"""Per-agent sample orders: random reshuffling, i.i.d. sampling, full batches.

A :class:`Sampler` turns one agent's key for one epoch into the indices of the
minibatches that agent visits in that epoch, an int32 array of shape
``(steps_per_epoch, batch_size)`` into its ``m`` local samples. The run loop
(:mod:`core.loop`) calls it on device, once per epoch and agent (vmapped), with
the key ``fold_in(fold_in(key, epoch), agent)``, so every agent draws
independently and the draws do not depend on the device count.

* :func:`reshuffle`: random reshuffling (RR) as in D-RR / GT-RR / ED-RR: agent
  :math:`i` draws a fresh permutation :math:`\pi_t^i` of its samples at every epoch
  :math:`t` and visits them in that order, each sample exactly once per epoch.
* :func:`iid`: uniform sampling with replacement, the stochastic-gradient baseline
  (DSGD, DSGT and SGD in the RR papers), with the same number of steps per epoch.
* :func:`full_batch`: one step per epoch on all local samples (exact gradients).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Sampler(NamedTuple):
    """How one agent walks through its ``num_samples`` local samples in one epoch.

    Attributes:
      indices: ``key -> int32[steps_per_epoch, batch_size]`` sample indices.
      num_samples: ``m``, the number of samples each agent holds.
      batch_size: samples per step.
      steps_per_epoch: steps that make one epoch.
      name: short name for logs.
    """

    indices: Callable[[jax.Array], jax.Array]
    num_samples: int
    batch_size: int
    steps_per_epoch: int
    name: str


def _check(num_samples: int, batch_size: int) -> None:
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    if not 1 <= batch_size <= num_samples:
        raise ValueError(f"batch_size must be in [1, num_samples={num_samples}], got {batch_size}.")


def reshuffle(num_samples: int, batch_size: int = 1) -> Sampler:
    """Random reshuffling: a fresh permutation per epoch, consumed in minibatches.

    With ``batch_size`` not dividing ``num_samples`` the last ``m mod batch_size``
    entries of each permutation are skipped (a different set every epoch), so
    every step has the same shape.

    Args:
      num_samples: samples per agent ``m``.
      batch_size: samples per step (1 in the D-RR papers).

    Returns:
      A :class:`Sampler` with ``m // batch_size`` steps per epoch.
    """
    _check(num_samples, batch_size)
    steps = num_samples // batch_size

    def indices(key: jax.Array) -> jax.Array:
        perm = jax.random.permutation(key, num_samples).astype(jnp.int32)
        return perm[: steps * batch_size].reshape(steps, batch_size)

    return Sampler(indices, num_samples, batch_size, steps, "reshuffle")


def iid(num_samples: int, batch_size: int = 1, steps_per_epoch: int | None = None) -> Sampler:
    """Uniform sampling with replacement.

    Args:
      num_samples: samples per agent ``m``.
      batch_size: samples per step.
      steps_per_epoch: defaults to ``m // batch_size``, so one "epoch" costs the
        same number of gradient evaluations as an RR epoch.

    Returns:
      A :class:`Sampler`.
    """
    _check(num_samples, batch_size)
    steps = num_samples // batch_size if steps_per_epoch is None else steps_per_epoch
    if steps < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps}.")

    def indices(key: jax.Array) -> jax.Array:
        return jax.random.randint(key, (steps, batch_size), 0, num_samples, dtype=jnp.int32)

    return Sampler(indices, num_samples, batch_size, steps, "iid")


def full_batch(num_samples: int) -> Sampler:
    """Exact local gradients: one step per epoch on all ``m`` samples."""
    _check(num_samples, num_samples)

    def indices(key: jax.Array) -> jax.Array:
        del key  # Deterministic.
        return jnp.arange(num_samples, dtype=jnp.int32)[None, :]

    return Sampler(indices, num_samples, num_samples, 1, "full")


SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "reshuffle": reshuffle,
    "iid": iid,
    "full": lambda num_samples, batch_size=None: full_batch(num_samples),
}


def make_sampler(name: str, num_samples: int, batch_size: int = 1) -> Sampler:
    """Builds a sampler by name: ``"reshuffle"``, ``"iid"`` or ``"full"``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {sorted(SAMPLERS)}.")
    return SAMPLERS[name](num_samples, batch_size)


def without_replacement(
    num_samples: int, batch_size: int = 1, steps_per_epoch: int | None = None
) -> Sampler:
    """Each step a fresh uniform subset of ``batch_size`` distinct samples.

    The sampling DP-SGD's accountant models as ``SampledWithoutReplacementDpEvent``
    (:func:`core.privacy.epsilon`): the batches of different steps are independent.

    Args:
      num_samples: samples per agent ``m``.
      batch_size: distinct samples per step.
      steps_per_epoch: defaults to ``m // batch_size``, as :func:`iid`.

    Returns:
      A :class:`Sampler` named ``"without_replacement"``.
    """
    _check(num_samples, batch_size)
    steps = num_samples // batch_size if steps_per_epoch is None else steps_per_epoch
    if steps < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps}.")

    def indices(key: jax.Array) -> jax.Array:
        def one(k):
            return jax.random.permutation(k, num_samples)[:batch_size].astype(jnp.int32)

        return jax.vmap(one)(jax.random.split(key, steps))

    return Sampler(indices, num_samples, batch_size, steps, "without_replacement")


SAMPLERS["without_replacement"] = without_replacement
