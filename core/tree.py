"""Pytree helpers for agent-stacked trees (arithmetic lives in ``optax.tree``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def select(cond: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """``where(cond, on_true, on_false)`` leaf by leaf.

    Args:
      cond: a boolean scalar, or a per-agent vector ``(b,)`` broadcast against
        leaves ``(b, ...)``.
      on_true: pytree of arrays.
      on_false: pytree with the same structure, shapes and dtypes.
    """

    def leaf(a: jax.Array, b: jax.Array) -> jax.Array:
        c = jnp.reshape(cond, jnp.shape(cond) + (1,) * (a.ndim - jnp.ndim(cond)))
        return jnp.where(c, a, b)

    return jax.tree.map(leaf, on_true, on_false)
