"""Flax NNX networks, exposed to the rest of decentjax as pure ``init``/``apply`` functions.

The library never holds a stateful NNX module: algorithms stack one params pytree per
agent along a leading ``"agents"`` axis and lift agent-local code with ``jax.vmap``. So
each factory here (:func:`linear`, :func:`mlp`, :func:`cnn`) returns a :class:`Model`:

* ``init(key) -> params``: builds the module with ``nnx.Rngs(key)`` and returns its
  ``nnx.Param`` state as a plain nested dict of arrays, so per-agent params are
  ``jax.jit(jax.vmap(model.init))(keys)``;
* ``apply(params, x) -> outputs``: ``nnx.merge`` of the graphdef captured once at factory
  time (from an abstract module made with ``nnx.eval_shape``, so no real params are ever
  allocated there) with ``params``, called on the batch ``x``.

This is the functional API of the Flax NNX guides (``nnx.split`` / ``nnx.merge``).

Params are plain dicts (``nnx.to_pure_dict``), not ``nnx.State``, because:

* their leaves are bare arrays, so optax, orbax (``StandardSave``), ``jax.tree.map``,
  ``jax.grad`` and sharding specs (the agent axis prepended to every leaf) see the same
  tree structure whether the tree came from ``init``, from ``jax.grad``, from a
  checkpoint or from user code;
* ``nnx.Param`` nodes carry metadata (e.g. sharding annotations) in the tree definition,
  which would be stale once ``jax.vmap`` adds the agent axis;
* ``nnx.merge`` accepts a plain dict and rebuilds the ``nnx.Param`` variables from the
  graphdef, so nothing is lost, and the conversion happens at trace time only.

List-held layers (the hidden layers of :class:`MLP`) appear under integer keys
(``{"hidden": {0: ..., 1: ...}}``), as NNX names them; restore such trees from orbax with
an abstract target so the keys stay integers.

Compute and param dtypes default to float32; pass ``param_dtype=jnp.float64`` for float64.
Inputs are cast to the compute dtype, so float64 data with float32 params (or the
reverse) never mixes dtypes, as ``jax_numpy_dtype_promotion="strict"`` requires.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

Params = Any  # a nested dict of arrays, as returned by ``Model.init``


class Model(NamedTuple):
    """A network as pure functions of a params pytree.

    Attributes:
        init: ``init(key) -> params``: fresh params from a PRNG key (typed or raw); vmap it
            over a batch of keys to get per-agent params with a leading agent axis.
        apply: ``apply(params, x) -> outputs`` for a batch ``x`` of shape ``(B, ...)``.
        name: a short name for logs and plots.
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    name: str


def _flatten(x: jax.Array, in_features: int) -> jax.Array:
    """Flattens ``(B, ...)`` to ``(B, in_features)``, checking the size at trace time."""
    if x.ndim < 2 or math.prod(x.shape[1:]) != in_features:
        raise ValueError(
            f"expected a batch of shape (B, ...) with {in_features} features per example, "
            f"got shape {x.shape}"
        )
    return x.reshape(x.shape[0], in_features)


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 average pooling with stride 2 ("VALID") over ``(B, H, W, C)``.

    ``nnx.avg_pool`` divides by a NumPy int64 window size, which strict dtype promotion
    rejects; a window sum times the Python scalar 1/4 keeps the input's dtype.
    """
    # The init value must be a concrete (NumPy) zero for JAX to recognise a sum window,
    # which it knows how to differentiate; a traced ``jnp.zeros`` is a generic reducer.
    summed = jax.lax.reduce_window(
        x, np.zeros((), x.dtype), jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
    )
    return summed * 0.25


class Linear(nnx.Module):
    """Multi-class linear (softmax-regression) model: flattens each example, one dense layer.

    Args:
        in_features: the number of features per example after flattening.
        out_features: the number of outputs (classes).
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params.
        rngs: NNX random streams for initialisation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features
        self.dense = nnx.Linear(
            in_features,
            out_features,
            # Unlike Flax, None does not infer the dtype from the inputs: that would mix
            # float32 and float64 under strict promotion.
            dtype=param_dtype if dtype is None else dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps a batch ``(B, ...)`` to logits ``(B, out_features)``."""
        return self.dense(_flatten(x, self.in_features))


class MLP(nnx.Module):
    """Multi-layer perceptron with ReLU: flattens each example, then dense layers.

    Args:
        in_features: the number of features per example after flattening.
        hidden: the widths of the hidden layers (may be empty: then it is :class:`Linear`).
        out_features: the number of outputs (classes).
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params.
        rngs: NNX random streams for initialisation.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        dtype = param_dtype if dtype is None else dtype
        sizes = [in_features, *hidden]
        self.in_features = in_features
        self.hidden = nnx.List(
            [
                nnx.Linear(a, b, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.out = nnx.Linear(
            sizes[-1], out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps a batch ``(B, ...)`` to outputs ``(B, out_features)``."""
        x = _flatten(x, self.in_features)
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.out(x)


class PatchConv(nnx.Module):
    r"""Stride-1 "SAME" 2-D convolution computed as patches times a matrix (im2col).

    The same function and parameters as ``nnx.Conv(in_features, out_features,
    kernel_size)`` with stride 1 and "SAME" padding (``kernel`` ``(kh, kw, in, out)``,
    LeCun-normal init; ``bias`` ``(out,)``, zeros), computed as

    .. math::

      y_{b,h,w,:} = \Big[\, x^{\text{pad}}_{b,h+i,w+j,:} \Big]_{i<k_h,\, j<k_w}
      \cdot \operatorname{reshape}(K, (k_h k_w \cdot \text{in}, \text{out})) + \text{bias},

    i.e. the ``kh * kw`` shifted copies of the zero-padded input concatenated on the
    channel axis, then one matrix product. The reason is speed on CPU for per-agent
    models: with a leading agent axis (``jax.vmap`` or ``lax.map`` over agents) XLA:CPU
    runs ``conv_general_dilated`` and its gradients as slow batched/grouped convolutions
    (inside the run loop's ``lax.scan``: 2.3 s per FedAvg step for 16 clients of the
    small CNN, batch 32), while the patch form is slices plus a GEMM: 51-86 ms for the
    same step (``launch.benchmarks --only federated``). On a single model the two agree
    to rounding.

    Args:
        in_features: input channels.
        out_features: output channels.
        kernel_size: ``(kh, kw)``, both odd (so "SAME" padding is symmetric).
        dtype: the compute dtype.
        param_dtype: the dtype of the params.
        rngs: NNX random streams for initialisation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: tuple[int, int] = (3, 3),
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kh, kw = (int(k) for k in kernel_size)
        if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"kernel_size must be two odd positive ints, got {kernel_size}")
        self.kernel_size = (kh, kw)
        self.dtype = dtype
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(
            init(rngs.params(), (kh, kw, in_features, out_features), param_dtype)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``(B, H, W, in)`` to ``(B, H, W, out)``."""
        kh, kw = self.kernel_size
        _, height, width, channels = x.shape
        kernel = jnp.asarray(self.kernel[...], self.dtype)
        x = jnp.asarray(x, self.dtype)
        padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        patches = jnp.concatenate(
            [padded[:, i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)],
            axis=-1,
        )
        flat = kernel.reshape(kh * kw * channels, -1)
        bias = jnp.asarray(self.bias[...], self.dtype)
        return jnp.dot(patches, flat) + bias.reshape(1, 1, 1, -1)


class CNN(nnx.Module):
    """Small CNN: two [3x3 conv, ReLU, 2x2 average pool] blocks, then one dense layer.

    For 28x28x1 inputs the feature map before the dense layer is 7x7; for 8x8x1 (the
    scikit-learn digits) it is 2x2. Convolutions use "SAME" padding; pooling floors odd
    sizes.

    Args:
        input_shape: the shape ``(H, W, C)`` of one example; H and W must be at least 4.
        out_features: the number of outputs (classes).
        features: the channel counts of the two convolutions.
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params.
        rngs: NNX random streams for initialisation.

    Raises:
        ValueError: if ``input_shape`` is not ``(H, W, C)`` with H, W >= 4 and C >= 1.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        out_features: int,
        *,
        features: tuple[int, int] = (16, 32),
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != 3 or min(input_shape[:2]) < 4 or input_shape[2] < 1:
            raise ValueError(
                f"input_shape must be (H, W, C) with H, W >= 4 and C >= 1, got {input_shape}"
            )
        dtype = param_dtype if dtype is None else dtype
        height, width, channels = input_shape
        f1, f2 = features
        self.input_shape = input_shape
        self.conv1 = PatchConv(
            channels, f1, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.conv2 = PatchConv(f1, f2, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        flat = (height // 4) * (width // 4) * f2
        self.dense = nnx.Linear(flat, out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps a batch ``(B, H, W, C)`` to outputs ``(B, out_features)``."""
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(
                f"expected a batch of shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got shape {x.shape}"
            )
        x = _avg_pool_2x2(jax.nn.relu(self.conv1(x)))
        x = _avg_pool_2x2(jax.nn.relu(self.conv2(x)))
        return self.dense(x.reshape(x.shape[0], -1))


def _as_model(build: Callable[[nnx.Rngs], nnx.Module], name: str) -> Model:
    """Wraps a module constructor ``build(rngs)`` as pure ``init``/``apply`` functions."""
    # The graphdef is static (layer sizes, dtypes); an abstract module gives it without
    # allocating or initialising any real params at factory time.
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))), nnx.Param)

    def init(key: jax.Array) -> Params:
        # A single ``nnx.Param`` filter also asserts there is no other state (batch stats,
        # RNG counters) that a pure-params representation would silently drop.
        _, params = nnx.split(build(nnx.Rngs(key)), nnx.Param)
        return nnx.to_pure_dict(params)

    def apply(params: Params, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params)(x)

    return Model(init=init, apply=apply, name=name)


def _check_positive(**sizes: int) -> None:
    for arg, value in sizes.items():
        if not (isinstance(value, numbers.Integral) and value >= 1):
            raise ValueError(f"{arg} must be a positive integer, got {arg}={value!r}")


def linear(
    in_features: int,
    num_classes: int,
    *,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Model:
    """Multi-class linear (softmax-regression) model as a :class:`Model`.

    Args:
        in_features: the number of features per example (inputs are flattened).
        num_classes: the number of classes (output logits).
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params (float32 default; float64 for exact tests).

    Returns:
        A :class:`Model` with params ``{"dense": {"kernel": (in, C), "bias": (C,)}}``.

    Raises:
        ValueError: if a size is not a positive integer.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> model = linear(64, 10)
        >>> params = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 4))
        >>> params["dense"]["kernel"].shape  # one set of params per agent
        (4, 64, 10)
        >>> model.apply(jax.tree.map(lambda p: p[0], params), jnp.ones((5, 8, 8, 1))).shape
        (5, 10)
    """
    _check_positive(in_features=in_features, num_classes=num_classes)
    return _as_model(
        lambda rngs: Linear(
            in_features, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        ),
        name="linear",
    )


def mlp(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Model:
    """ReLU multi-layer perceptron as a :class:`Model`.

    Args:
        in_features: the number of features per example (inputs are flattened).
        hidden: the widths of the hidden layers.
        num_classes: the number of classes (output logits).
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params.

    Returns:
        A :class:`Model` with params ``{"hidden": {0: {"kernel", "bias"}, ...},
        "out": {"kernel", "bias"}}``.

    Raises:
        ValueError: if a size is not a positive integer.
    """
    hidden = tuple(hidden)
    _check_positive(in_features=in_features, num_classes=num_classes)
    _check_positive(**{f"hidden[{i}]": h for i, h in enumerate(hidden)})
    return _as_model(
        lambda rngs: MLP(
            in_features, hidden, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        ),
        name="mlp-" + "x".join(map(str, hidden)) if hidden else "mlp",
    )


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    features: tuple[int, int] = (16, 32),
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Model:
    """Small CNN (see :class:`CNN`) as a :class:`Model`.

    Args:
        input_shape: the shape ``(H, W, C)`` of one example, e.g. ``(28, 28, 1)`` or
            ``(8, 8, 1)``.
        num_classes: the number of classes (output logits).
        features: the channel counts of the two convolutions.
        dtype: the compute dtype; ``None`` means ``param_dtype``.
        param_dtype: the dtype of the params.

    Returns:
        A :class:`Model` whose ``apply`` maps ``(B, H, W, C)`` to ``(B, num_classes)``.

    Raises:
        ValueError: if ``input_shape`` is not ``(H, W, C)`` with H, W >= 4, or a size is
            not a positive integer.
    """
    features = tuple(features)
    if len(features) != 2:
        raise ValueError(f"features must hold two channel counts, got features={features}")
    _check_positive(
        num_classes=num_classes, **{f"features[{i}]": f for i, f in enumerate(features)}
    )
    input_shape = tuple(input_shape)
    return _as_model(
        lambda rngs: CNN(
            input_shape,
            num_classes,
            features=features,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        ),
        name="cnn",
    )
