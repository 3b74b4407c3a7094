r"""On-device image augmentation: random crop with zero padding and horizontal flip.

The standard CIFAR augmentation of He et al. (2016, §4.2): pad each image with
``padding`` zeros on every side, take a random crop of the original size, and flip it
left-right with probability 1/2. For an image :math:`x \in \mathbb{R}^{H \times W \times C}`
with offsets :math:`(i, j) \in \{0..2p\}^2` and flip bit :math:`f`,

.. math::

  y_{h,w,:} = x^{\text{pad}}_{i + h,\; j + w',\, :}, \qquad
  w' = \begin{cases} W - 1 - w & f = 1 \\ w & f = 0 \end{cases}.

:func:`random_crop_flip` is a pure function of ``(images, key)`` for one agent's batch:
the same key gives the same output, each image draws its own offsets and flip from
``jax.random.split(key, B)``, and no host round trip happens. Lift it over agents with
``jax.vmap(random_crop_flip)(batches, keys)`` where ``keys`` are the per-agent step keys,
so every agent augments its own batch differently and the result does not depend on how
agents are placed on devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _crop_flip_one(padded: jax.Array, key: jax.Array, size: tuple[int, int], flip: bool):
    k_i, k_j, k_f = jax.random.split(key, 3)
    height, width = size
    i = jax.random.randint(k_i, (), 0, padded.shape[0] - height + 1)
    j = jax.random.randint(k_j, (), 0, padded.shape[1] - width + 1)
    crop = jax.lax.dynamic_slice(padded, (i, j, 0), (height, width, padded.shape[2]))
    if not flip:
        return crop
    return jnp.where(jax.random.bernoulli(k_f), crop[:, ::-1, :], crop)


def random_crop_flip(
    images: jax.Array, key: jax.Array, *, padding: int = 4, flip: bool = True
) -> jax.Array:
    """Random crop after zero padding, then a random horizontal flip, per image.

    Args:
        images: one agent's batch ``(B, H, W, C)``.
        key: a PRNG key (typed or raw), e.g. the agent's step key.
        padding: zeros added on each side before cropping (4 for CIFAR); 0 disables the
            crop.
        flip: whether to flip each image left-right with probability 1/2.

    Returns:
        The augmented batch, with the shape and dtype of ``images``.

    Raises:
        ValueError: if ``images`` is not 4-D or ``padding`` is not an int >= 0.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> batches = jnp.ones((4, 8, 32, 32, 3))  # 4 agents x batch 8
        >>> keys = jax.random.split(jax.random.key(0), 4)
        >>> jax.vmap(random_crop_flip)(batches, keys).shape
        (4, 8, 32, 32, 3)
    """
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (B, H, W, C), got shape {images.shape}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    p = padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    keys = jax.random.split(key, images.shape[0])
    size = images.shape[1:3]
    return jax.vmap(lambda x, k: _crop_flip_one(x, k, size, flip))(padded, keys)
