r"""Sparsifiers: keep ``k`` of the ``d`` coordinates (top-k, rand-k) and their ``k`` checks.

:func:`top_k` keeps the largest magnitudes (biased, contractive with
:math:`\delta = k/d`); :func:`rand_k` keeps a uniform random subset, unbiased when
rescaled by :math:`d/k`. Both take ``k`` or ``fraction`` of the total dimension and
pay per kept value plus its index (rand-k with a shared seed sends no indices).
Re-exported by :mod:`core.compression`, the public face.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core.compressor import (
    Compressor,
    _check_d,
    _check_dtype_bits,
    _flat_compressor,
    _index_bits,
)


def _resolve_k(k: int | None, fraction: float | None, d: int) -> int:
    """The number of kept coordinates for dimension ``d``, validated against ``d``."""
    if fraction is not None:
        # The smallest k with k/d >= fraction, so delta = k/d >= fraction; the
        # tolerance stops 0.1 * 30 = 3.0000000000000004 from rounding up to 4.
        k = max(1, math.ceil(fraction * d - 1e-9))
    assert k is not None
    if k > d:
        raise ValueError(f"k={k} exceeds the dimension d={d} of the message; choose k in [1, {d}].")
    return k


def _check_k_args(k: Any, fraction: Any) -> None:
    if (k is None) == (fraction is None):
        raise ValueError(f"give exactly one of k and fraction, got k={k!r}, fraction={fraction!r}.")
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be an integer >= 1, got k={k!r}.")
    if fraction is not None and not (
        isinstance(fraction, (int, float, np.floating)) and 0.0 < fraction <= 1.0
    ):
        raise ValueError(f"fraction must lie in (0, 1], got fraction={fraction!r}.")


def _k_label(k: int | None, fraction: float | None) -> str:
    return f"k={k}" if k is not None else f"fraction={fraction}"


def top_k(k: int | None = None, *, fraction: float | None = None) -> Compressor:
    r"""Top-:math:`k` sparsification: keep the :math:`k` largest magnitudes.

    .. math::

      \mathcal C(x) = x \odot \mathbb 1_{S(x)}, \qquad
      S(x) = \text{indices of the } k \text{ largest } |x_j|.

    Biased (:math:`\omega = \infty`), contractive with :math:`\delta = k/d`
    (deterministically :math:`\|\mathcal C(x)-x\|^2 \le (1-k/d)\|x\|^2`). Ties
    keep the lower index. Stich, Cordonnier, Jaggi 2018, "Sparsified SGD with
    memory", arXiv 1809.07599; used by CHOCO-SGD (Koloskova et al. 2019, arXiv
    1902.00340).

    Bit cost: :math:`k\,(b + \lceil\log_2 d\rceil)`, the :math:`k` values
    (``dtype_bits`` :math:`= b` each) and their :math:`k` indices; the kept set
    depends on :math:`x`, so the indices must be sent.

    Args:
      k: number of kept coordinates, :math:`1 \le k \le d` (checked against
        :math:`d` when the message is traced).
      fraction: instead of ``k``, the fraction of :math:`d` to keep, in
        :math:`(0, 1]`; :math:`k = \max(1, \lceil \text{fraction}\cdot d\rceil)`.

    Returns:
      The top-:math:`k` :class:`Compressor`.

    Raises:
      ValueError: unless exactly one of ``k`` and ``fraction`` is given and valid;
        at trace time, if :math:`k > d`.
    """
    _check_k_args(k, fraction)

    def fn(key: jax.Array, flat: jax.Array) -> jax.Array:
        del key  # deterministic
        kk = _resolve_k(k, fraction, flat.size)
        _, idx = jax.lax.top_k(jnp.abs(flat), kk)
        return jnp.zeros_like(flat).at[idx].set(flat[idx])

    def bits(d: int, dtype_bits: int = 32) -> int:
        d, dtype_bits = _check_d(d), _check_dtype_bits(dtype_bits)
        return _resolve_k(k, fraction, d) * (dtype_bits + _index_bits(d))

    return Compressor(
        compress=_flat_compressor(fn),
        unbiased=False,
        omega=lambda d: math.inf,
        delta=lambda d: _resolve_k(k, fraction, _check_d(d)) / d,
        bits=bits,
        name=f"top_k({_k_label(k, fraction)})",
    )


_TIE_SLACK = 32
"""Extra top-k candidates whose ties :func:`_uniform_subset` breaks at random."""


def _uniform_subset(key: jax.Array, d: int, k: int) -> jax.Array:
    """``k`` distinct indices of ``range(d)``, uniform over k-subsets, without sorting d.

    The top-``k`` of ``d`` i.i.d. random keys is a uniform k-subset (every order of
    i.i.d. keys is equally likely). The keys are 30 random bits placed in a float32's
    bit pattern above the subnormals (positive, finite, normal, order-preserving),
    because ``lax.top_k`` on float32 is a native O(d log k) kernel on CPU, GPU and
    TPU while on integers XLA's CPU backend falls back to a full sort. Equal keys
    are broken at random, not by index: the ``k + 32`` largest are re-sorted by
    (key, fresh random bits), which is exact unless more than 32 keys tie with the
    k-th largest (probability below :math:`(d/2^{30})^{32}`).
    """
    k_keys, k_ties = jax.random.split(key)
    bits = jax.random.bits(k_keys, (d,), jnp.uint32) >> 2
    keys = jax.lax.bitcast_convert_type(bits + np.uint32(0x00800000), jnp.float32)
    values, idx = jax.lax.top_k(keys, min(d, k + _TIE_SLACK))
    ties = jax.random.bits(k_ties, values.shape, jnp.uint32)
    _, _, idx = jax.lax.sort((-values, ties, idx), num_keys=2)
    return idx[:k]


def rand_k(
    k: int | None = None,
    *,
    fraction: float | None = None,
    unbiased: bool = True,
    shared_seed: bool = False,
) -> Compressor:
    r"""Random-:math:`k` sparsification: keep a uniform random subset of size :math:`k`.

    .. math::

      \mathcal C(x) = \tfrac dk\, x \odot \mathbb 1_S \quad(\text{unbiased}), \qquad
      \mathcal C(x) = x \odot \mathbb 1_S \quad(\text{biased}), \qquad
      S \sim \mathrm{Unif}\{S \subseteq [d] : |S| = k\}.

    Unbiased (scaled) version: :math:`\omega = d/k - 1` (attained with equality),
    :math:`\delta = 1/(1+\omega) = k/d` for :math:`\tfrac kd\,\mathcal C`. Biased
    (unscaled) version: contractive with
    :math:`\mathbb E\|\mathcal C(x)-x\|^2 = (1-k/d)\|x\|^2`, :math:`\delta = k/d`,
    :math:`\omega = \infty`. Stich, Cordonnier, Jaggi 2018, "Sparsified SGD with
    memory", arXiv 1809.07599; used by CHOCO-SGD (Koloskova et al. 2019, arXiv
    1902.00340). :math:`S` is the top-:math:`k` of :math:`d` random keys, ties
    broken at random: :math:`O(d\log k)` per call, no sort of a permutation of
    :math:`d`.

    Bit cost: by default :math:`k\,(b + \lceil\log_2 d\rceil)`, values and indices,
    the same as top-:math:`k`, so comparisons between the two are fair and no
    assumption is made about receivers regenerating the sender's key. With
    ``shared_seed=True`` only the values are counted, :math:`k\,b`: valid when every
    receiver can recompute the sender's key (in decentjax the per-agent key is
    ``fold_in(step_key, agent)``, so neighbours can), which is how the sparsified
    SGD literature counts rand-:math:`k`.

    Args:
      k: number of kept coordinates, :math:`1 \le k \le d` (checked against
        :math:`d` when the message is traced).
      fraction: instead of ``k``, the fraction of :math:`d` to keep, in
        :math:`(0, 1]`; :math:`k = \max(1, \lceil \text{fraction}\cdot d\rceil)`.
      unbiased: scale the kept coordinates by :math:`d/k` (default) or keep them
        unscaled (biased, contractive).
      shared_seed: count only the values in :attr:`Compressor.bits` (see above).

    Returns:
      The rand-:math:`k` :class:`Compressor`.

    Raises:
      ValueError: unless exactly one of ``k`` and ``fraction`` is given and valid;
        at trace time, if :math:`k > d`.
    """
    _check_k_args(k, fraction)

    def fn(key: jax.Array, flat: jax.Array) -> jax.Array:
        d = flat.size
        kk = _resolve_k(k, fraction, d)
        idx = _uniform_subset(key, d, kk)
        kept = flat[idx] * (d / kk) if unbiased else flat[idx]
        return jnp.zeros_like(flat).at[idx].set(kept)

    def bits(d: int, dtype_bits: int = 32) -> int:
        d, dtype_bits = _check_d(d), _check_dtype_bits(dtype_bits)
        per_value = dtype_bits + (0 if shared_seed else _index_bits(d))
        return _resolve_k(k, fraction, d) * per_value

    def omega(d: int) -> float:
        return _check_d(d) / _resolve_k(k, fraction, d) - 1.0 if unbiased else math.inf

    label = _k_label(k, fraction)
    if not unbiased:
        label += ", unbiased=False"
    if shared_seed:
        label += ", shared_seed=True"
    return Compressor(
        compress=_flat_compressor(fn),
        unbiased=unbiased,
        omega=omega,
        delta=lambda d: _resolve_k(k, fraction, _check_d(d)) / d,
        bits=bits,
        name=f"rand_k({label})",
    )
