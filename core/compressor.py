r"""The :class:`Compressor` type, the per-agent flattening, block application and bit accounting.

A :class:`Compressor` bundles one agent's ``(key, x) -> x_hat`` with its constants
(:math:`\omega`, :math:`\delta`) and the exact size of one message. This module holds
the type, the argument checks and the lifting of a flat-vector operator to a pytree
shared by every factory (:mod:`core.sparsifiers`, :mod:`core.quantizers`), and the two
functions that use a compressor on a sharded array: :func:`compress_block` (every
agent of the local block, inside ``shard_map``) and :func:`message_bits` (the bits of
one message, from the shapes). Everything is re-exported by :mod:`core.compression`,
the public face, whose docstring states the operator classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from decentjax.core import mesh as mesh_lib

PyTree = Any


class Compressor(NamedTuple):
    r"""A compression operator and its constants.

    Attributes:
      compress: ``(key, x) -> x_hat`` for one agent's pytree ``x`` (no agent axis);
        same structure, shapes and dtypes. Deterministic given ``key``.
      unbiased: whether :math:`\mathbb E\,\mathcal C(x) = x`.
      omega: ``omega(d)``, the variance constant :math:`\omega` with
        :math:`\mathbb E\|\mathcal C(x)-x\|^2 \le \omega\|x\|^2`; ``math.inf``
        for biased operators.
      delta: ``delta(d)``, the contraction constant :math:`\delta` with
        :math:`\mathbb E\|\mathcal C(x)-x\|^2 \le (1-\delta)\|x\|^2`. For an
        unbiased operator this is the :math:`\delta = 1/(1+\omega)` of the scaled
        operator :math:`\mathcal C/(1+\omega)` (see :func:`contractive`).
      bits: ``bits(d, dtype_bits=32)``, the number of bits of one message of a
        ``d``-dimensional vector whose floats are ``dtype_bits`` wide.
      name: a label that reads like the factory call, e.g. ``"top_k(k=3)"``.
    """

    compress: Callable[[jax.Array, PyTree], PyTree]
    unbiased: bool
    omega: Callable[[int], float]
    delta: Callable[[int], float]
    bits: Callable[..., int]
    name: str


# --------------------------------------------------------------------------- helpers


def _check_d(d: Any) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
        raise ValueError(f"d must be a non-negative integer dimension, got {d!r}.")
    return int(d)


def _check_dtype_bits(dtype_bits: Any) -> int:
    if isinstance(dtype_bits, bool) or not isinstance(dtype_bits, (int, np.integer)):
        raise ValueError(f"dtype_bits must be a positive integer, got {dtype_bits!r}.")
    if dtype_bits < 1:
        raise ValueError(f"dtype_bits must be a positive integer, got {dtype_bits!r}.")
    return int(dtype_bits)


def _index_bits(d: int) -> int:
    """Bits of one coordinate index in ``0..d-1`` (zero when ``d == 1``)."""
    return math.ceil(math.log2(d)) if d > 1 else 0


def _flat_compressor(fn: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable:
    """Lifts ``fn(key, flat) -> flat_hat`` on one vector to a pytree compressor."""

    def compress(key: jax.Array, x: PyTree) -> PyTree:
        x = jax.tree.map(jnp.asarray, x)
        dtypes = {leaf.dtype for leaf in jax.tree.leaves(x)}
        if not all(jnp.issubdtype(dt, jnp.floating) for dt in dtypes):
            raise ValueError(
                f"compressors act on floating-point pytrees, got dtypes {sorted(map(str, dtypes))}."
            )
        mixed = len(dtypes) > 1
        if mixed:
            # ravel_pytree cannot promote under strict promotion: flatten in the
            # widest dtype explicitly (the width message_bits counts), cast back after.
            wide = max(dtypes, key=lambda dt: jnp.dtype(dt).itemsize)
            x_wide = jax.tree.map(lambda leaf: leaf.astype(wide), x)
        else:
            x_wide = x
        flat, unravel = ravel_pytree(x_wide)
        # unravel warns on a dtype change; every operator must keep the dtype.
        out = unravel(fn(key, flat).astype(flat.dtype))
        if mixed:
            out = jax.tree.map(lambda o, leaf: o.astype(leaf.dtype), out, x)
        return out

    return compress


# ------------------------------------------------------------------------ local view


def compress_block(compressor: Compressor, key: jax.Array, tree: PyTree) -> PyTree:
    """Compresses every agent of this device's block with its own key (local view).

    Agent ``i`` (global index) uses ``fold_in(key, i)`` from
    :func:`core.mesh.agent_keys`, so the draws are independent across agents and
    the same whatever the number of devices. Must be called inside
    ``jax.shard_map`` over :data:`core.mesh.AGENT_AXIS`.

    Args:
      compressor: the operator.
      key: one PRNG key, the same on every device (e.g. the step's key).
      tree: pytree of this device's block, every leaf of shape ``(b, ...)``.

    Returns:
      The compressed pytree, same structure, shapes and dtypes.
    """
    keys = mesh_lib.agent_keys(key, mesh_lib.num_agents(tree))
    return jax.vmap(compressor.compress)(keys, tree)


def message_bits(compressor: Compressor, tree: PyTree, *, agent_axis: bool = True) -> int:
    """Bits of one compressed message of ``tree`` (per agent), from its shapes.

    Args:
      compressor: the operator.
      tree: a pytree of arrays (or ``jax.ShapeDtypeStruct``).
      agent_axis: whether the leaves carry a leading agent axis to drop (local or
        global view); ``False`` for one agent's pytree.

    Returns:
      ``compressor.bits(d, dtype_bits)`` with ``d`` the per-agent dimension and
      ``dtype_bits`` the width of the widest leaf dtype (the flattened vector's).
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return 0
    skip = 1 if agent_axis else 0
    d = sum(math.prod(jnp.shape(leaf)[skip:]) for leaf in leaves)
    dtype_bits = 8 * max(jnp.dtype(leaf.dtype).itemsize for leaf in leaves)
    return compressor.bits(d, dtype_bits)
