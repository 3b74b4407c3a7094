r"""ResNet-20 for CIFAR (He et al. 2016, §4.2), with GroupNorm or BatchNorm, as an NNX module.

The CIFAR form of the deep residual network (He, Zhang, Ren, Sun, "Deep Residual
Learning for Image Recognition", CVPR 2016, §4.2), depth :math:`6n + 2` with
:math:`n = 3`:

* a 3x3 convolution to 16 channels, normalisation, ReLU;
* three stages of :math:`n` basic blocks with 16, 32 and 64 channels on 32x32, 16x16
  and 8x8 maps; the first block of stages 2 and 3 has stride 2;
* a basic block is :math:`y = \operatorname{relu}(\operatorname{norm}(\operatorname{conv}
  (\operatorname{relu}(\operatorname{norm}(\operatorname{conv}(x))))) + s(x))`, with 3x3
  convolutions without bias (the normalisation's shift replaces it);
* global average pooling and a dense layer to the classes.

The shortcut :math:`s` of a block that changes shape is, as in the paper's CIFAR
experiments, **option A** by default: the identity on a 2x-subsampled input
(``x[:, ::2, ::2]``) with the new channels zero-padded (half on each side, as the common
PyTorch reference implementation does), which adds no parameters: 269,722 parameters
for 10 classes with BatchNorm or GroupNorm (both have a scale and a shift per channel).
``shortcut="projection"`` uses option B instead (a strided 1x1 convolution followed by a
normalisation), 2,752 parameters more.

Normalisation: ``norm="batch"`` is the paper's BatchNorm (momentum 0.9, epsilon 1e-5, as
in PyTorch's defaults); its running statistics are ``nnx.BatchStat`` state, switched
between batch statistics and running averages by ``model.train()`` / ``model.eval()``.
``norm="group"`` is GroupNorm (Wu & He, ECCV 2018) with 2 groups per layer, the
stateless choice of decentralized / federated studies on non-i.i.d. data (Hsieh, Phanishayee,
Mutlu, Gibbons, "The Non-IID Data Quagmire of Decentralized Machine Learning", ICML 2020),
where per-agent batch statistics drift apart.

Convolutions use kaiming-normal (fan-in) initialisation. Compute and parameter dtypes are
separate, as in flax layers: ``dtype=jnp.bfloat16, param_dtype=jnp.float32`` keeps
float32 params (and float32 normalisation statistics, which flax reduces in float32) and
runs the convolutions and the dense layer in bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from decentjax.models.nets import Model, _as_model, _check_positive

NORMS = ("group", "batch")
SHORTCUTS = ("A", "projection")


def _norm(
    kind: str, features: int, *, groups: int, dtype: DTypeLike, param_dtype: DTypeLike, rngs
) -> nnx.Module:
    if kind == "batch":
        return nnx.BatchNorm(
            features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
    return nnx.GroupNorm(
        features, num_groups=groups, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


def _normalize(layer: nnx.Module, x: jax.Array) -> jax.Array:
    """``layer(x)`` for a flax normalisation layer, under standard dtype promotion.

    Flax computes the statistics in at least float32 through
    ``jnp.promote_types(x.dtype, jnp.float32)``, which ``jax_numpy_dtype_promotion=
    "strict"`` rejects for bfloat16 or float64 inputs; that promotion is the intended
    one, so it is allowed here (and only here).
    """
    with jax.numpy_dtype_promotion("standard"):
        return layer(x)


def _conv(c_in: int, c_out: int, kernel: int, stride: int, *, dtype, param_dtype, rngs) -> nnx.Conv:
    return nnx.Conv(
        c_in,
        c_out,
        (kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        use_bias=False,
        kernel_init=nnx.initializers.kaiming_normal(),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with normalisation and a residual shortcut (He et al. 2016).

    Args:
        in_features: input channels.
        out_features: output channels.
        stride: 1, or 2 to halve the spatial size.
        norm: ``"group"`` or ``"batch"``.
        shortcut: ``"A"`` (subsample and zero-pad channels) or ``"projection"`` (strided
            1x1 convolution and normalisation), used when the shape changes.
        groups: GroupNorm's number of groups (ignored for BatchNorm).
        dtype: the compute dtype.
        param_dtype: the dtype of the params.
        rngs: NNX random streams for initialisation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        stride: int = 1,
        *,
        norm: str = "group",
        shortcut: str = "A",
        groups: int = 2,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = _conv(in_features, out_features, 3, stride, **kw)
        self.norm1 = _norm(norm, out_features, groups=groups, **kw)
        self.conv2 = _conv(out_features, out_features, 3, 1, **kw)
        self.norm2 = _norm(norm, out_features, groups=groups, **kw)
        self.stride = stride
        self.pad = out_features - in_features
        self.reshape = stride != 1 or in_features != out_features
        self.project = self.reshape and shortcut == "projection"
        if self.project:
            self.proj_conv = _conv(in_features, out_features, 1, stride, **kw)
            self.proj_norm = _norm(norm, out_features, groups=groups, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``(B, H, W, in)`` to ``(B, H / stride, W / stride, out)``."""
        y = jax.nn.relu(_normalize(self.norm1, self.conv1(x)))
        y = _normalize(self.norm2, self.conv2(y))
        if self.project:
            s = _normalize(self.proj_norm, self.proj_conv(x))
        elif self.reshape:
            s = x[:, :: self.stride, :: self.stride, :]
            s = jnp.pad(s, ((0, 0), (0, 0), (0, 0), (self.pad // 2, self.pad - self.pad // 2)))
        else:
            s = x
        return jax.nn.relu(y + jnp.asarray(s, y.dtype))


class ResNet(nnx.Module):
    """CIFAR ResNet of depth ``6 * blocks + 2`` (see the module docstring).

    Args:
        num_classes: the number of outputs.
        blocks: basic blocks per stage (3 gives ResNet-20, 5 ResNet-32, 9 ResNet-56).
        widths: the channels of the three stages.
        in_channels: channels of the input images (3 for CIFAR).
        norm: ``"group"`` (GroupNorm, stateless) or ``"batch"`` (BatchNorm, with running
            statistics as ``nnx.BatchStat`` state; ``model.train()`` / ``model.eval()``).
        shortcut: ``"A"`` (the paper's CIFAR choice, parameter-free) or ``"projection"``.
        groups: GroupNorm's number of groups; must divide every width.
        dtype: the compute dtype (``jnp.bfloat16`` for mixed precision); ``None`` means
            ``param_dtype``.
        param_dtype: the dtype of the params.
        rngs: NNX random streams for initialisation.

    Raises:
        ValueError: if ``norm`` or ``shortcut`` is unknown, a size is not positive, or
            ``groups`` does not divide a width.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        blocks: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        in_channels: int = 3,
        norm: str = "group",
        shortcut: str = "A",
        groups: int = 2,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        widths = tuple(widths)
        _check_args(num_classes, blocks, widths, in_channels, norm, shortcut, groups)
        dtype = param_dtype if dtype is None else dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.conv = _conv(in_channels, widths[0], 3, 1, **kw)
        self.norm = _norm(norm, widths[0], groups=groups, **kw)
        layers = []
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(
                    BasicBlock(
                        c_in, width, stride, norm=norm, shortcut=shortcut, groups=groups, **kw
                    )
                )
                c_in = width
        self.blocks = nnx.List(layers)
        self.dense = nnx.Linear(c_in, num_classes, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps images ``(B, H, W, C)`` to logits ``(B, num_classes)`` (compute dtype)."""
        x = jnp.asarray(x, self.dtype)
        x = jax.nn.relu(_normalize(self.norm, self.conv(x)))
        for block in self.blocks:
            x = block(x)
        return self.dense(jnp.mean(x, axis=(1, 2)))


def _check_args(num_classes, blocks, widths, in_channels, norm, shortcut, groups) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    if len(widths) != 3:
        raise ValueError(f"widths must hold the channels of 3 stages, got widths={widths}")
    _check_positive(num_classes=num_classes, blocks=blocks, in_channels=in_channels)
    _check_positive(groups=groups, **{f"widths[{i}]": w for i, w in enumerate(widths)})
    if norm == "group" and any(w % groups for w in widths):
        raise ValueError(f"groups={groups} must divide every width, got widths={widths}")


def resnet20(
    num_classes: int = 10,
    *,
    shortcut: str = "A",
    groups: int = 2,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Model:
    """ResNet-20 with GroupNorm (stateless, so params are the whole state) as a :class:`Model`.

    The BatchNorm variant carries running statistics next to its params; build it as
    ``ResNet(norm="batch", rngs=...)`` and wrap it with the library's NNX wrapper for
    stateful modules.

    Args:
        num_classes: the number of classes (10 for CIFAR-10, 100 for CIFAR-100).
        shortcut: ``"A"`` or ``"projection"`` (see :class:`ResNet`).
        groups: GroupNorm's number of groups.
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params.

    Returns:
        A :class:`Model` whose ``apply`` maps ``(B, 32, 32, 3)`` to ``(B, num_classes)``.

    Raises:
        ValueError: as :class:`ResNet`.
    """
    # _as_model builds the module abstractly now, so bad arguments raise here.
    return _as_model(
        lambda rngs: ResNet(
            num_classes,
            shortcut=shortcut,
            groups=groups,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        ),
        name="resnet20-gn",
    )
