r"""Communication compression operators: pure ``(key, x) -> x_hat`` functions.

A compressor acts on **one agent's** message: a pytree ``x`` without the agent
axis. It flattens the whole pytree into one vector of dimension :math:`d` (with
:func:`jax.flatten_util.ravel_pytree`), so ``k`` and ``d`` always refer to the total
dimension, and hands back a pytree of the same structure, shapes and dtypes.
Inside ``jax.shard_map`` over the agent axis, :func:`compress_block` applies it to
every agent of the local block with independent keys.

Two classes of operators appear in the algorithms (see ``ALGORITHMS.md`` §0 and §4):

* **unbiased** (CEDAS, LEAD, CPP): :math:`\mathbb E\,\mathcal C(x) = x` and
  :math:`\mathbb E\|\mathcal C(x)-x\|^2 \le \omega\|x\|^2`;
* **contractive** (CHOCO-SGD, Koloskova et al. 2019, arXiv 1902.00340; EF21):
  :math:`\mathbb E\|\mathcal C(x)-x\|^2 \le (1-\delta)\|x\|^2` with
  :math:`0 < \delta \le 1`.

An unbiased :math:`\mathcal C` gives a contractive :math:`\mathcal C/(1+\omega)`
with :math:`\delta = 1/(1+\omega)`; :func:`contractive` builds it, and the
``delta`` of every unbiased operator reports the :math:`\delta` of that scaled
version. Biased operators report :math:`\omega = \infty`.

Every operator also states ``bits(d, dtype_bits)``: the exact size of one message
under a stated fixed-width coding (no entropy coding), so that runs can be plotted
against transmitted bits. :func:`message_bits` evaluates it for a pytree.

Example::

  c = make_compressor("top_k", fraction=0.1)
  x_hat = c.compress(key, params)            # one agent
  x_hat = compress_block(c, key, block)      # local view, inside shard_map

This module holds :func:`identity`, :func:`contractive` and the table of factories by
name (:func:`make_compressor`) and is the public face of three more, whose names are
all importable from here: :mod:`core.compressor` (the :class:`Compressor` type,
:func:`compress_block`, :func:`message_bits`), :mod:`core.sparsifiers` (top-k, rand-k)
and :mod:`core.quantizers` (QSGD, scaled sign, natural).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from decentjax.core.compressor import (
    Compressor,
    PyTree,
    _check_d,
    _check_dtype_bits,
    compress_block,
    message_bits,
)
from decentjax.core.quantizers import natural, qsgd, scaled_sign
from decentjax.core.sparsifiers import rand_k, top_k

__all__ = [
    "COMPRESSORS",
    "Compressor",
    "PyTree",
    "compress_block",
    "contractive",
    "identity",
    "make_compressor",
    "message_bits",
    "natural",
    "qsgd",
    "rand_k",
    "scaled_sign",
    "top_k",
]


def identity() -> Compressor:
    r"""The identity: no compression.

    .. math::

      \mathcal C(x) = x.

    Unbiased with :math:`\omega = 0`, contractive with :math:`\delta = 1`. Bit
    cost: the raw vector, :math:`d \cdot b` for ``dtype_bits`` :math:`= b`.
    Compressed algorithms with this operator reduce to their uncompressed
    counterparts (CHOCO-SGD to DSGD, LEAD to NIDS, CEDAS to EDAS; Koloskova et al.
    2019, arXiv 1902.00340).

    Returns:
      The identity :class:`Compressor`.
    """

    def bits(d: int, dtype_bits: int = 32) -> int:
        return _check_d(d) * _check_dtype_bits(dtype_bits)

    return Compressor(
        compress=lambda key, x: x,
        unbiased=True,
        omega=lambda d: 0.0,
        delta=lambda d: 1.0,
        bits=bits,
        name="identity",
    )


def contractive(compressor: Compressor) -> Compressor:
    r"""The contractive operator :math:`\mathcal C/(1+\omega)` of an unbiased one.

    .. math::

      \mathcal C'(x) = \frac{\mathcal C(x)}{1+\omega}, \qquad
      \mathbb E\|\mathcal C'(x)-x\|^2 \le \frac{\omega}{1+\omega}\|x\|^2,

    i.e. :math:`\delta = 1/(1+\omega)` (Koloskova et al. 2019, arXiv 1902.00340,
    the "qsgd-biased" operator of their code), so unbiased operators can serve
    methods that assume the contractive class (CHOCO-SGD). Same bit cost as
    ``compressor`` (the scaling is known to the receiver). A biased operator is
    already contractive and is returned unchanged, so algorithms may call this on
    whatever they are given.

    Args:
      compressor: any :class:`Compressor`.

    Returns:
      A biased :class:`Compressor` with ``delta(d) = 1/(1+omega(d))``.
    """
    if not compressor.unbiased:
        return compressor

    def compress(key: jax.Array, x: PyTree) -> PyTree:
        d = sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(x))
        factor = 1.0 / (1.0 + compressor.omega(d))
        return jax.tree.map(lambda leaf: leaf * factor, compressor.compress(key, x))

    return Compressor(
        compress=compress,
        unbiased=False,
        omega=lambda d: math.inf,
        delta=lambda d: 1.0 / (1.0 + compressor.omega(d)),
        bits=compressor.bits,
        name=f"contractive({compressor.name})",
    )


# -------------------------------------------------------------------------- table


COMPRESSORS: dict[str, Callable[..., Compressor]] = {
    "identity": identity,
    "top_k": top_k,
    "rand_k": rand_k,
    "qsgd": qsgd,
    "scaled_sign": scaled_sign,
    "natural": natural,
}
"""Factories by name, for configs: ``make_compressor(name, **kwargs)``."""


def make_compressor(name: str, **kwargs: Any) -> Compressor:
    """Builds a compressor by name (``"top-k"`` and ``"top_k"`` both work).

    Args:
      name: a key of :data:`COMPRESSORS`.
      **kwargs: the factory's arguments, e.g. ``k=10`` or ``levels=4``.

    Returns:
      The :class:`Compressor`.

    Raises:
      ValueError: for an unknown name (listing the valid ones) or invalid arguments.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; valid names: {', '.join(COMPRESSORS)}.")
    return COMPRESSORS[key](**kwargs)
