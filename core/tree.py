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


def block_size(tree: PyTree) -> int:
    """Number of agents ``b`` in this device's block: the leading axis of the first leaf."""
    return jax.tree.leaves(tree)[0].shape[0]


def leaf_dtype(tree: PyTree) -> Any:
    """The dtype of the first leaf (the float dtype of a parameter tree)."""
    return jax.tree.leaves(tree)[0].dtype


def per_agent(c: jax.Array, x: jax.Array) -> jax.Array:
    """A per-agent vector ``(b,)`` cast and reshaped to broadcast against ``x (b, ...)``."""
    return c.astype(x.dtype).reshape(c.shape + (1,) * (x.ndim - 1))


def scale(c: jax.Array, tree: PyTree) -> PyTree:
    """``c_i * tree_i`` for a per-agent vector ``c`` ``(b,)``."""
    return jax.tree.map(lambda x: per_agent(c, x) * x, tree)


def debias(numerator: PyTree, weight: jax.Array) -> PyTree:
    """Push-sum ratio ``x_i / v_i`` for per-agent weights ``v`` ``(b,)``."""
    return jax.tree.map(lambda x: x / per_agent(weight, x), numerator)


def combine(a: float | jax.Array, x: PyTree, b: float | jax.Array, y: PyTree) -> PyTree:
    """``a x + b y`` leaf by leaf.

    Args:
      a: a Python number (applied as it is, weakly typed, so it keeps the leaf's
        dtype) or a per-agent vector ``(b,)``.
      x: pytree of arrays, leaves ``(b, ...)``.
      b: as ``a``.
      y: pytree with the structure, shapes and dtypes of ``x``.
    """

    def coef(c: float | jax.Array, leaf: jax.Array) -> float | jax.Array:
        return c if isinstance(c, (int, float)) else per_agent(c, leaf)

    return jax.tree.map(lambda u, w: coef(a, u) * u + coef(b, w) * w, x, y)
