"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) in its common modern form, as an NNX module.

The variant, stated exactly (the one most decentralized / federated papers call
"LeNet-5"):

* C1: 5x5 convolution, 6 channels, zero padding ``padding`` (2 for 28x28 MNIST, which
  makes the paper's 32x32 input; 0 for 32x32 CIFAR), ReLU;
* S2: 2x2 average pooling, stride 2 (the paper's subsampling without its trainable
  coefficient and bias);
* C3: 5x5 convolution ("VALID"), 16 channels, **fully connected** to the 6 input maps
  (the paper's sparse connection table is dropped), ReLU;
* S4: 2x2 average pooling, stride 2;
* F5, F6: dense 120 and 84 with ReLU (the paper's scaled tanh replaced by ReLU);
* output: dense to the classes, logits for softmax cross-entropy (the paper's RBF
  output layer is dropped).

For 28x28x1 inputs with ``padding=2`` (or 32x32 with ``padding=0``) the map before F5
is 5x5x16 and the network has 61,706 parameters for 10 classes on one input channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from decentjax.models.nets import Model, _as_model, _avg_pool_2x2, _check_positive


class LeNet5(nnx.Module):
    """LeNet-5 (see the module docstring for the exact variant).

    Args:
        input_shape: ``(H, W, C)`` of one example, e.g. ``(28, 28, 1)``.
        num_classes: the number of outputs.
        padding: C1's zero padding on each side.
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params.
        rngs: NNX random streams for initialisation.

    Raises:
        ValueError: if the input is too small for two 5x5 convolutions and two poolings
            (``H + 2 * padding`` and ``W + 2 * padding`` must be at least 16).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),
        num_classes: int = 10,
        *,
        padding: int = 2,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != 3 or not isinstance(padding, int) or padding < 0:
            raise ValueError(
                f"input_shape must be (H, W, C) and padding an int >= 0, got "
                f"input_shape={input_shape}, padding={padding!r}"
            )
        _check_positive(num_classes=num_classes, channels=input_shape[2])
        # C1 keeps H + 2p - 4, S2 halves, C3 removes 4, S4 halves: at least 1 left.
        size = [((n + 2 * padding - 4) // 2 - 4) // 2 for n in input_shape[:2]]
        if min(size) < 1:
            raise ValueError(
                f"input_shape {input_shape} with padding={padding} is too small for "
                "LeNet-5: H + 2 * padding and W + 2 * padding must be at least 16"
            )
        dtype = param_dtype if dtype is None else dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_shape = input_shape
        self.dtype = dtype
        self.c1 = nnx.Conv(input_shape[2], 6, (5, 5), padding=padding, **kw)
        self.c3 = nnx.Conv(6, 16, (5, 5), padding="VALID", **kw)
        self.f5 = nnx.Linear(size[0] * size[1] * 16, 120, **kw)
        self.f6 = nnx.Linear(120, 84, **kw)
        self.out = nnx.Linear(84, num_classes, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps a batch ``(B, H, W, C)`` to logits ``(B, num_classes)``."""
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(
                f"expected a batch of shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got shape {x.shape}"
            )
        x = jnp.asarray(x, self.dtype)
        x = _avg_pool_2x2(jax.nn.relu(self.c1(x)))
        x = _avg_pool_2x2(jax.nn.relu(self.c3(x)))
        x = jax.nn.relu(self.f5(x.reshape(x.shape[0], -1)))
        return self.out(jax.nn.relu(self.f6(x)))


def lenet5(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    *,
    padding: int = 2,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Model:
    """LeNet-5 (see :class:`LeNet5`) as a :class:`Model`.

    Args:
        input_shape: ``(H, W, C)`` of one example: ``(28, 28, 1)`` for the MNIST family
            (with ``padding=2``), ``(32, 32, 3)`` for CIFAR (with ``padding=0``).
        num_classes: the number of classes.
        padding: C1's zero padding on each side.
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params.

    Returns:
        A :class:`Model` whose ``apply`` maps ``(B, *input_shape)`` to ``(B, num_classes)``.

    Raises:
        ValueError: as :class:`LeNet5`.
    """
    input_shape = tuple(input_shape)
    # _as_model builds the module abstractly now, so bad sizes raise here.
    return _as_model(
        lambda rngs: LeNet5(
            input_shape,
            num_classes,
            padding=padding,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        ),
        name="lenet5",
    )
