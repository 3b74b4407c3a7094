"""Step-size schedules of the papers, as optax schedules of the step count.

Optax schedules are functions of the iteration counter. The random-reshuffling
papers index step sizes by epoch (``alpha_t`` is constant inside epoch ``t``), so
:func:`epochwise` turns a function of the epoch into a schedule of the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax


def epochwise(fn: Callable[[jax.Array], jax.Array], steps_per_epoch: int) -> optax.Schedule:
    """``k -> fn(k // steps_per_epoch)``: a per-epoch step size as a per-step schedule.

    Args:
      fn: step size as a function of the epoch index ``t`` (int array).
      steps_per_epoch: inner steps per epoch ``m / batch_size``.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    return lambda count: fn(count // steps_per_epoch)


def inverse_epoch(a: float, b: float, c: float, steps_per_epoch: int) -> optax.Schedule:
    r"""The D-RR papers' decreasing step :math:`\alpha_t = a / (b t + c)` per epoch ``t``.

    D-RR's code uses ``a=1, b=50, c=400`` (ALGORITHMS.md §2.1); GT-RR/ED-RR's
    poster ``a=1, b=30, c=300``.
    """
    if a <= 0 or b < 0 or c <= 0:
        raise ValueError(f"need a > 0, b >= 0, c > 0; got a={a}, b={b}, c={c}.")
    # Strict dtype promotion forbids float * int32: cast the epoch index first.
    return epochwise(lambda t: a / (b * t.astype(jnp.result_type(float)) + c), steps_per_epoch)


def piecewise_epoch(
    values: Sequence[float], boundaries: Sequence[int], steps_per_epoch: int
) -> optax.Schedule:
    """Piecewise-constant step: ``values[j]`` from epoch ``boundaries[j-1]`` on.

    Example: ``piecewise_epoch([1/50, 1/250, 1/1000], [20, 75], m)`` is GT-RR's
    nonconvex schedule.
    """
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"need len(values) == len(boundaries) + 1, got {len(values)} values and "
            f"{len(boundaries)} boundaries."
        )
    if list(boundaries) != sorted(boundaries):
        raise ValueError(f"boundaries must be increasing, got {list(boundaries)}.")
    vals = jnp.asarray(values)
    bnds = jnp.asarray(boundaries, dtype=jnp.int32)
    return epochwise(lambda t: vals[jnp.sum(t.astype(jnp.int32) >= bnds)], steps_per_epoch)


def scaled(learning_rate: float | optax.Schedule, factor: jax.Array) -> optax.Schedule:
    r"""``k -> factor * alpha_k``: a step size times a (possibly traced) factor.

    How a step-size sweep enters one compiled program (:mod:`core.runs`): each run
    scales the configured step by its own traced scalar ``factor``, so the sweep is
    data, not a Python constant, and all its values share one compilation.

    Args:
      learning_rate: a constant step or an optax schedule of the step count.
      factor: the multiplier, a Python or array scalar (traced inside a program).
    """
    if callable(learning_rate):
        return lambda count: factor * learning_rate(count)
    return lambda count: factor * learning_rate
