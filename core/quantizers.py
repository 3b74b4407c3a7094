r"""Quantizers: QSGD, scaled sign and natural compression (fewer bits per coordinate).

:func:`qsgd` rounds magnitudes at random to ``levels`` levels of the norm (unbiased),
:func:`scaled_sign` sends signs and one scale (biased), :func:`natural` rounds at
random to a power of two (unbiased, sign and exponent only). Re-exported by
:mod:`core.compression`, the public face.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core.compressor import (
    Compressor,
    _check_d,
    _check_dtype_bits,
    _flat_compressor,
)

# IEEE exponent widths by total width, for natural compression's bit cost.
_EXPONENT_BITS = {16: 5, 32: 8, 64: 11}


def qsgd(levels: int, *, norm: Literal["l2", "linf"] = "l2") -> Compressor:
    r"""QSGD: stochastic quantization to :math:`s` levels of the scaled magnitudes.

    .. math::

      \mathcal C(x)_j = \frac{\|x\|}{s}\,\mathrm{sign}(x_j)\,\xi_j, \qquad
      \xi_j = \ell_j + \mathrm{Bern}\!\Big(\frac{s|x_j|}{\|x\|} - \ell_j\Big), \qquad
      \ell_j = \Big\lfloor \frac{s|x_j|}{\|x\|} \Big\rfloor,

    so :math:`\xi_j \in \{0, \dots, s\}` and every output lies on the grid
    :math:`\|x\|\{-s, \dots, s\}/s`; :math:`\mathcal C(0) = 0`. Unbiased.

    * ``norm="l2"`` (Alistarh et al. 2017, "QSGD: Communication-efficient SGD via
      gradient quantization and encoding", arXiv 1610.02132, Lemma 3.1):
      :math:`\omega = \min(d/s^2, \sqrt d/s)`.
    * ``norm="linf"``, the LEAD-style "b-bit :math:`\infty`-norm quantization" with
      :math:`s = 2^{b-1}`: each coordinate's variance is at most
      :math:`\|x\|_\infty^2/(4s^2)` and the sum at most
      :math:`\|x\|_\infty\|x\|_1/s`, so
      :math:`\omega = \min(d/(4s^2), \sqrt d/s)`.

    Reported :math:`\delta = 1/(1+\omega)`, that of :math:`\mathcal C/(1+\omega)`
    (ChocoSGD's ``qsgd-biased``; Koloskova et al. 2019, arXiv 1902.00340).

    Bit cost (fixed-width coding, no Elias coding):
    :math:`d\,(1 + \lceil\log_2(s+1)\rceil) + b`: per entry one sign bit and the
    level :math:`\xi_j \in \{0..s\}`, plus the norm as one float of
    ``dtype_bits`` :math:`= b`. Note the LEAD "b-bit" operator (:math:`s=2^{b-1}`)
    thus costs :math:`b+1` bits per entry for :math:`b \ge 2`, since its signed
    levels take :math:`2^b + 1` values.

    Args:
      levels: the number of levels :math:`s \ge 1`.
      norm: ``"l2"`` (QSGD) or ``"linf"`` (LEAD-style).

    Returns:
      The QSGD :class:`Compressor`.

    Raises:
      ValueError: if ``levels < 1`` or ``norm`` is unknown.
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got levels={levels!r}.")
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got norm={norm!r}.")
    s = int(levels)

    def fn(key: jax.Array, flat: jax.Array) -> jax.Array:
        mag = jnp.abs(flat)
        scale = jnp.linalg.norm(flat) if norm == "l2" else jnp.max(mag, initial=0.0)
        # A zero vector quantizes to zero: divide by 1 instead of 0 to avoid NaN.
        y = s * mag / jnp.where(scale > 0, scale, jnp.ones_like(scale))
        low = jnp.floor(y)
        up = jax.random.uniform(key, flat.shape, flat.dtype) < (y - low)
        # Rounding can push y a hair above s; clipping keeps the coded grid.
        xi = jnp.minimum(low + up.astype(flat.dtype), s)
        return jnp.sign(flat) * xi * (scale / s)

    def omega(d: int) -> float:
        d = _check_d(d)
        if norm == "l2":
            return min(d / s**2, math.sqrt(d) / s)
        return min(d / (4 * s**2), math.sqrt(d) / s)

    def bits(d: int, dtype_bits: int = 32) -> int:
        d, dtype_bits = _check_d(d), _check_dtype_bits(dtype_bits)
        return d * (1 + math.ceil(math.log2(s + 1))) + dtype_bits

    label = f"levels={s}" + (", norm='linf'" if norm == "linf" else "")
    return Compressor(
        compress=_flat_compressor(fn),
        unbiased=True,
        omega=omega,
        delta=lambda d: 1.0 / (1.0 + omega(d)),
        bits=bits,
        name=f"qsgd({label})",
    )


def scaled_sign() -> Compressor:
    r"""Scaled sign: one bit per coordinate and the mean magnitude.

    .. math::

      \mathcal C(x) = \frac{\|x\|_1}{d}\,\mathrm{sign}(x),

    with :math:`\mathrm{sign}(0) = +1` so that every entry is one bit (the value
    at a zero coordinate does not change the error:
    :math:`\|\mathcal C(x)-x\|^2 = \|x\|_2^2 - \|x\|_1^2/d` either way). Biased and
    deterministic, contractive with
    :math:`\delta(x) = \|x\|_1^2/(d\|x\|_2^2) \ge 1/d`; the reported ``delta`` is
    the worst case :math:`1/d`. Karimireddy, Rebjock, Stich, Jaggi 2019, "Error
    feedback fixes SignSGD and other gradient compression schemes", arXiv
    1901.09847.

    Bit cost: :math:`d + b`, one sign bit per entry and the scale
    :math:`\|x\|_1/d` as one float of ``dtype_bits`` :math:`= b`.

    Returns:
      The scaled-sign :class:`Compressor`.
    """

    def fn(key: jax.Array, flat: jax.Array) -> jax.Array:
        del key  # deterministic
        sign = jnp.where(flat >= 0, jnp.ones_like(flat), -jnp.ones_like(flat))
        return jnp.sum(jnp.abs(flat)) / max(flat.size, 1) * sign

    def bits(d: int, dtype_bits: int = 32) -> int:
        return _check_d(d) + _check_dtype_bits(dtype_bits)

    return Compressor(
        compress=_flat_compressor(fn),
        unbiased=False,
        omega=lambda d: math.inf,
        delta=lambda d: 1.0 / max(_check_d(d), 1),
        bits=bits,
        name="scaled_sign",
    )


def natural() -> Compressor:
    r"""Natural compression: unbiased stochastic rounding to a power of two.

    For :math:`x_j \ne 0` with :math:`2^{e} \le |x_j| < 2^{e+1}`,

    .. math::

      \mathcal C(x)_j = \mathrm{sign}(x_j)\cdot
      \begin{cases}
        2^{e+1} & \text{with probability } p_j = |x_j|/2^{e} - 1,\\
        2^{e}   & \text{with probability } 1 - p_j,
      \end{cases}

    and :math:`\mathcal C(x)_j = 0` for :math:`x_j = 0`. Unbiased with
    :math:`\omega = 1/8` (the worst case :math:`|x_j| = \tfrac43 2^e`), so
    :math:`\delta = 1/(1+\omega) = 8/9` for :math:`\mathcal C/(1+\omega)`. Horváth,
    Ho, Horváth, Sahu, Canini, Richtárik 2019, "Natural compression for
    distributed deep learning", arXiv 1905.10988.

    Bit cost: :math:`d\,(1 + e_b)`: a sign bit and the IEEE exponent field of
    :math:`e_b` bits per entry, no mantissa (the exponent field's zero code stands
    for 0). :math:`e_b = 5, 8, 11` for ``dtype_bits`` :math:`= 16, 32, 64`
    (IEEE half, single, double), e.g. :math:`9d` for float32.

    Returns:
      The natural-compression :class:`Compressor`.
    """

    def fn(key: jax.Array, flat: jax.Array) -> jax.Array:
        mag = jnp.abs(flat)
        # frexp gives mag = m * 2**ex with m in [0.5, 1): the lower power of two is
        # 2**(ex-1) and p = mag / 2**(ex-1) - 1 = 2m - 1, both exact.
        mant, ex = jnp.frexp(mag)
        low = jnp.ldexp(jnp.full_like(flat, 0.5), ex)
        up = jax.random.uniform(key, flat.shape, flat.dtype) < 2 * mant - 1
        rounded = jnp.where(up, 2 * low, low)
        return jnp.where(mag > 0, jnp.sign(flat) * rounded, jnp.zeros_like(flat))

    def bits(d: int, dtype_bits: int = 32) -> int:
        d, dtype_bits = _check_d(d), _check_dtype_bits(dtype_bits)
        if dtype_bits not in _EXPONENT_BITS:
            raise ValueError(
                f"natural compression needs an IEEE float width, one of "
                f"{sorted(_EXPONENT_BITS)}; got dtype_bits={dtype_bits}."
            )
        return d * (1 + _EXPONENT_BITS[dtype_bits])

    return Compressor(
        compress=_flat_compressor(fn),
        unbiased=True,
        omega=lambda d: 0.125,
        delta=lambda d: 1.0 / 1.125,
        bits=bits,
        name="natural",
    )
