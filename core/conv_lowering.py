r"""Evaluate a function's 2-D convolutions as patches times a matrix, without editing it.

:func:`convs_as_matmuls` takes any JAX function — typically a loss that applies a
user's Flax model built from stock ``nnx.Conv`` layers — traces it to a jaxpr and
re-evaluates that jaxpr with every 2-D ``lax.conv_general_dilated`` replaced by its
im2col form: the :math:`k_h k_w` strided, shifted views of the padded input
concatenated on the channel axis, times the kernel reshaped to
:math:`(k_h k_w C_{in}, C_{out})`,

.. math::

  y_{b,h,w,:} = \Big[\, x^{\text{pad}}_{b,\, s_h h + i,\, s_w w + j,\, :}
  \Big]_{i<k_h,\, j<k_w} \cdot \operatorname{reshape}(K, (k_h k_w C_{in}, C_{out})).

Why: per-agent (per-client) models put a leading agent axis on every weight. Under
``jax.vmap`` XLA:CPU turns each convolution and its two gradients into batched or
grouped convolutions, which it runs far below its GEMM speed (the reason the
library's own CNN uses :class:`models.nets.PatchConv`). The patch form is slices
plus one batched matrix product per layer, which XLA:CPU runs at GEMM speed. The
rewrite is exact up to floating-point summation order (tested against
``conv_general_dilated`` and its gradients to 1e-12 in float64). Tiling max/sum
poolings are rewritten too (:func:`pool_as_reshape`); a max-pooling gradient goes to
each window's first maximum, as ``reduce_window``'s does, so tied maxima get the native
gradient (windows of more than 16 positions excepted: there ties share it, which is
also a valid subgradient).

Scope: convolutions with two spatial dimensions, no input or kernel dilation,
``feature_group_count = batch_group_count = 1`` and non-negative padding, in any
dimension order (``NHWC``/``HWIO`` as ``nnx.Conv`` emits, or ``NCHW``/``OIHW``) and
any strides. Other convolutions are left as they are. Convolutions inside ``jit``
calls are rewritten; inside other higher-order primitives (``scan``, ``cond``,
``custom_jvp`` bodies) they are left untouched. The function is traced once per
call signature (inside ``jit`` that is once per compile).

**Automatic on XLA:CPU.** The gradient methods differentiate their per-agent loss
through :func:`core.algorithm.agent_grad`, which applies :func:`lowered_on_cpu` (not
covered: the token walks of :mod:`algos.random_walk`, the per-example gradients of
:func:`core.privacy.dp_sgd` and the zeroth-order :func:`algos.fedkseed`; wrap their loss
in :func:`convs_as_matmuls` there): when the
default backend is the CPU and the traced loss holds a convolution this module can
rewrite, the loss is evaluated in the patch form; otherwise (GPU/TPU, where the
native batched convolutions are fast, or a loss without convolutions) it is called as
it is, and the compiled program is unchanged. So a model written with stock
``nnx.Conv`` layers runs at the patch form's speed on a CPU without being rewritten.
``agent_grad`` lowers with ``reverse_only=True``: a first layer's kernel gradient is then
formed with the patches as the first GEMM operand (see :func:`lowered_on_cpu`).
The evaluation does the same where its convolutions are per-agent or per-run: the
per-agent metrics (:func:`core.agent_metrics.with_agent_metrics`) and an evaluator built
with ``core.metrics.make_evaluator(..., lower_convs=True)``, which ``launch.train`` uses
for seeds and sweeps run as one program (:class:`core.runs.RunsRunner`).
:func:`native_convs` opts a loss out.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

_JIT_PRIMITIVES = ("pjit", "jit")
# The name of the ``jit`` that :func:`native_convs` puts around a function: the rewrite
# leaves everything inside such a call native, however the function is wrapped later.
_NATIVE_NAME = "decentjax_native_convs"


def _native_call(eqn: Any) -> bool:
    return eqn.primitive.name in _JIT_PRIMITIVES and eqn.params.get("name") == _NATIVE_NAME


def _supported(params: dict[str, Any], lhs: jax.Array) -> bool:
    return (
        lhs.ndim == 4
        and tuple(params["lhs_dilation"]) == (1, 1)
        and tuple(params["rhs_dilation"]) == (1, 1)
        and params["feature_group_count"] == 1
        and params["batch_group_count"] == 1
        and all(lo >= 0 and hi >= 0 for lo, hi in params["padding"])
    )


def conv_as_matmul(lhs: jax.Array, rhs: jax.Array, **params: Any) -> jax.Array:
    """``lax.conv_general_dilated(lhs, rhs, **params)`` (a supported one) as im2col."""
    return _conv_as_matmul(lhs, rhs, params, reverse_only=False)


def _conv_as_matmul(
    lhs: jax.Array, rhs: jax.Array, params: dict[str, Any], *, reverse_only: bool
) -> jax.Array:
    """:func:`conv_as_matmul`; ``reverse_only``: see :func:`lowered_on_cpu`."""
    dn = params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    x = jnp.transpose(lhs, (lhs_spec[0], lhs_spec[2], lhs_spec[3], lhs_spec[1]))  # NHWC
    k = jnp.transpose(rhs, (rhs_spec[2], rhs_spec[3], rhs_spec[1], rhs_spec[0]))  # HWIO
    (pad_h, pad_w), (sh, sw) = params["padding"], params["window_strides"]
    x = jnp.pad(x, ((0, 0), tuple(pad_h), tuple(pad_w), (0, 0)))
    kh, kw, c_in, c_out = k.shape
    out_h = (x.shape[1] - kh) // sh + 1
    out_w = (x.shape[2] - kw) // sw + 1
    patches = jnp.concatenate(
        [
            x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )
    kernel = k.reshape(kh * kw * c_in, c_out)
    precision = params.get("precision")
    preferred = params.get("preferred_element_type")
    if (
        reverse_only
        and kh * kw * c_in < c_out
        and preferred is None
        and patches.dtype == kernel.dtype
        and jnp.issubdtype(kernel.dtype, jnp.floating)
    ):
        y = _patches_times_kernel(patches, kernel, precision)
    else:
        y = jax.lax.dot_general(
            patches,
            kernel,
            (((3,), (0,)), ((), ())),
            precision=precision,
            preferred_element_type=preferred,
        )
    # y is (batch, h, w, features); put each logical axis where out_spec wants it.
    positions = (out_spec[0], out_spec[2], out_spec[3], out_spec[1])
    return jnp.transpose(y, tuple(int(p) for p in np.argsort(positions)))


def _patches_dot(patches: jax.Array, kernel: jax.Array, precision: Any) -> jax.Array:
    return jax.lax.dot_general(patches, kernel, (((3,), (0,)), ((), ())), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _patches_times_kernel(patches: jax.Array, kernel: jax.Array, precision: Any) -> jax.Array:
    """``patches (B, H, W, K) @ kernel (K, C)`` whose reverse mode forms the kernel
    gradient as :math:`P^\\top G` (patches first).

    JAX transposes a ``dot_general`` with the cotangent as its first operand,
    :math:`(G^\\top P)^\\top`; XLA:CPU then copies :math:`G` (``B H W x C``) into its
    transpose before the GEMM. For a first layer (``K = k_h k_w C_in < C``) the patches are
    the smaller operand to transpose: on the W3 CNN's first layer (``K = 9``, ``C = 32``,
    16 x 28 x 28 positions) 116-143 us against 290 us per kernel gradient (this 2-core
    CPU; ``launch/benchmarks/cohort.py``'s round ~4% faster). A ``custom_vjp``: a direct
    ``jax.jvp`` of it raises, hence only behind ``lowered_on_cpu(..., reverse_only=True)``.
    """
    return _patches_dot(patches, kernel, precision)


def _patches_times_kernel_fwd(patches, kernel, precision):
    return _patches_dot(patches, kernel, precision), (patches, kernel)


def _patches_times_kernel_bwd(precision, residuals, g):
    patches, kernel = residuals
    d_patches = jax.lax.dot_general(g, kernel, (((3,), (1,)), ((), ())), precision=precision)
    d_kernel = jax.lax.dot_general(
        patches, g, (((0, 1, 2), (0, 1, 2)), ((), ())), precision=precision
    )
    return d_patches, d_kernel


_patches_times_kernel.defvjp(_patches_times_kernel_fwd, _patches_times_kernel_bwd)


_POOLS = {"reduce_window_max": jnp.max, "reduce_window_sum": jnp.sum}


def _tiling_window(params: dict[str, Any]) -> bool:
    """A pooling window that tiles its input: stride = window, no padding or dilation."""
    ones = (1,) * len(params["window_dimensions"])
    return (
        tuple(params["window_dimensions"]) == tuple(params["window_strides"])
        and tuple(params["base_dilation"]) == ones
        and tuple(params["window_dilation"]) == ones
        and all(lo == 0 and hi == 0 for lo, hi in params["padding"])
    )


# A tiling window of at most this many positions pools through elementwise operations on
# its strided views (see pool_as_reshape); a larger one reduces over the reshaped axes.
_MAX_UNROLLED_WINDOW = 16


def _split_shape(shape: tuple[int, ...], window: tuple[int, ...]) -> list[int]:
    """A window-divisible shape with each axis split as (windows, window):
    ``(o_0, w_0, o_1, w_1, ...)``."""
    return [d for n, w in zip(shape, window, strict=True) for d in (n // w, w)]


def _window_views(x: jax.Array, window: tuple[int, ...]) -> list[jax.Array]:
    """The strided views of a cropped, window-divisible ``x``, one per window position
    (row-major window order): view ``p`` holds element ``p`` of every window."""
    r = x.reshape(_split_shape(x.shape, window))
    return [
        r[tuple(i for p in position for i in (slice(None), p))]
        for position in itertools.product(*(range(w) for w in window))
    ]


def _window_sum(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """Sums each window by reshape and reduce (linear: its transpose is a broadcast)."""
    return jnp.sum(x.reshape(_split_shape(x.shape, window)), axis=tuple(range(1, 2 * x.ndim, 2)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sum_over_views(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    return functools.reduce(jnp.add, _window_views(x, window))


@_sum_over_views.defjvp
def _sum_over_views_jvp(window, primals, tangents):
    # The tangent in the reshape form: reverse mode then broadcasts each window's
    # cotangent (one read per element), instead of summing one padded view per position.
    (x,), (t,) = primals, tangents
    return _sum_over_views(x, window), _window_sum(t, window)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_over_views(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    return functools.reduce(jnp.maximum, _window_views(x, window))


@_max_over_views.defjvp
def _max_over_views_jvp(window, primals, tangents):
    # The tangent of each window's first maximum (row-major order): what reduce_window's
    # own rule selects (select_and_scatter / select_and_gather with >=), ties included.
    # The choice is a mask of x's shape, so reverse mode is one select per element.
    (x,), (t,) = primals, tangents
    views = _window_views(x, window)
    # Through _max_over_views itself, so that a second derivative takes this rule too
    # (jnp.maximum's own rule would split tied maxima there).
    y = _max_over_views(x, window)
    # Each window's first-maximum position (a window without one, i.e. holding NaN: its
    # last), compared with every element's position code. Built at the pooled
    # resolution and broadcast up, so reverse mode is one vectorisable select per
    # element; a mask stacked from per-position masks and interleaved by a transpose
    # made XLA:CPU emit a per-element branch over the stack (0.71 ms against 0.36 ms for
    # the W3 first layer's ReLU, pool and im2col backward; the round 3-9% faster).
    first = jnp.full(y.shape, len(views) - 1, jnp.int8)
    for i in reversed(range(len(views) - 1)):
        first = jnp.where(views[i] == y, jnp.int8(i), first)
    split = _split_shape(x.shape, window)
    code = jnp.broadcast_to(
        first.reshape([n if k % 2 == 0 else 1 for k, n in enumerate(split)]), split
    )
    position = np.arange(len(views), dtype=np.int8).reshape(window)
    position = position.reshape([1 if k % 2 == 0 else n for k, n in enumerate(split)])
    mask = (code == position).reshape(x.shape)
    return y, _window_sum(jnp.where(mask, t, jnp.zeros_like(t)), window)


def pool_as_reshape(x: jax.Array, reduce: Callable, window: tuple[int, ...]) -> jax.Array:
    """A tiling max/sum pooling (``reduce`` = ``jnp.max`` / ``jnp.sum``): crop, reshape,
    reduce over the window axes.

    A window of at most 16 positions is reduced elementwise over its strided views
    (``jnp.maximum`` / ``+`` in row-major window order), which XLA:CPU vectorises over
    the trailing (channel) axis where a ``reduce`` over the interleaved window axes is
    not. How much that gains depends on what XLA fuses around the pooling: in the W3
    round of ``launch/benchmarks/cohort.py`` the round took 0.96-1.03x the reduce
    form's time with max pooling and 0.95x with average pooling (interleaved A/B runs;
    XLA fuses conv2's col2im into the pooling's backward; since then the max rule's
    gradient mask, built at the pooled resolution, took another 3-9% off that round),
    while a pooling followed
    directly by an elementwise ``sin`` ran about 3x slower in isolation (its consumer
    re-evaluates the chain). The reason it is the default: max pooling's gradient goes
    to each window's first maximum in row-major order, as ``lax.reduce_window``'s does,
    so with tied maxima the first and second derivatives equal the native ones (finite
    inputs; a window holding NaN sends its gradient to its last position, natively to
    where ``reduce_window``'s ``>=`` scan over the window ends).
    Larger windows and other ``reduce`` functions reduce over the reshaped axes (ties
    then share the gradient).
    """
    out = [n // w for n, w in zip(x.shape, window, strict=True)]
    x = x[tuple(slice(0, o * w) for o, w in zip(out, window, strict=True))]
    if math.prod(window) <= _MAX_UNROLLED_WINDOW:
        if reduce is jnp.max:
            return _max_over_views(x, tuple(window))
        if reduce is jnp.sum:
            return _sum_over_views(x, tuple(window))
    return reduce(x.reshape(_split_shape(x.shape, window)), axis=tuple(range(1, 2 * x.ndim, 2)))


def _evaluate(
    jaxpr: jex.Jaxpr, consts: list[Any], *args: Any, reverse_only: bool = False
) -> list[Any]:
    """``jax.core.eval_jaxpr`` with the convolutions (also inside ``jit``) rewritten."""
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex.Literal) else env[v]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if _native_call(eqn):
            outs = _bind(eqn, invals)
        elif name == "conv_general_dilated" and _supported(eqn.params, invals[0]):
            outs = [_conv_as_matmul(*invals, eqn.params, reverse_only=reverse_only)]
        elif name in _POOLS and _tiling_window(eqn.params):
            outs = [
                pool_as_reshape(invals[0], _POOLS[name], tuple(eqn.params["window_dimensions"]))
            ]
        elif name in _JIT_PRIMITIVES:
            inner = eqn.params["jaxpr"]
            outs = _evaluate(inner.jaxpr, inner.consts, *invals, reverse_only=reverse_only)
        else:
            outs = _bind(eqn, invals)
        for var, value in zip(eqn.outvars, outs, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _bind(eqn: Any, invals: list[Any]) -> list[Any]:
    """Evaluates one equation as it is."""
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    subfuns: tuple = ()
    if isinstance(bind_params, tuple):  # JAX < 0.7 returned (subfuns, params).
        subfuns, bind_params = bind_params
    with eqn.ctx.manager:
        outs = eqn.primitive.bind(*subfuns, *invals, **bind_params)
    return list(outs) if eqn.primitive.multiple_results else [outs]


def _rewritable(jaxpr: jex.Jaxpr) -> bool:
    """Whether ``jaxpr`` (or a ``jit`` inside it) holds a convolution that
    :func:`_evaluate` rewrites (its poolings are rewritten along with it)."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if _native_call(eqn):
            continue
        if name == "conv_general_dilated" and _supported(eqn.params, eqn.invars[0].aval):
            return True
        if name in _JIT_PRIMITIVES and _rewritable(eqn.params["jaxpr"].jaxpr):
            return True
    return False


def native_convs(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a loss so that :func:`lowered_on_cpu` leaves its convolutions native.

    Use it to compare against the patch form, or where the native convolution is
    known to be faster. Calling the result calls ``fn`` inside a ``jax.jit`` named
    ``decentjax_native_convs``, which :func:`lowered_on_cpu` and :func:`convs_as_matmuls`
    never rewrite: the mark holds however the function is wrapped afterwards (a
    method's ``Task.loss``, augmentation, a user's lambda). ``fn``'s arguments must
    therefore be arrays or pytrees of arrays (they are traced).
    """

    def decentjax_native_convs(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    jitted = jax.jit(decentjax_native_convs)

    @functools.wraps(fn)
    def native(*args: Any, **kwargs: Any) -> Any:
        return jitted(*args, **kwargs)

    native.native_convs = True  # type: ignore[attr-defined]
    return native


def lowered_on_cpu(fn: Callable[..., Any], *, reverse_only: bool = False) -> Callable[..., Any]:
    """``fn`` in the patch form of :func:`convs_as_matmuls` when that pays, else ``fn``.

    At trace time: if ``jax.default_backend()`` is ``"cpu"`` and ``fn``'s jaxpr holds a
    2-D convolution that :func:`convs_as_matmuls` rewrites, the rewritten function is
    evaluated; otherwise ``fn`` is called unchanged (so losses without convolutions,
    and every loss on GPU/TPU, compile exactly as before). ``fn`` marked with
    :func:`native_convs` is returned as it is.

    Args:
      fn: a function of arrays / pytrees of arrays, e.g. ``loss(params, batch)``.
      reverse_only: the result is differentiated in reverse mode only (``jax.grad``,
        ``jax.vjp``, also repeatedly), as :func:`core.algorithm.agent_grad` does. A
        convolution with fewer patch columns than output channels (``k_h k_w C_in <
        C_out``: a first layer) then forms its kernel gradient as patches transposed
        times the cotangent, which XLA:CPU runs ~2x faster than JAX's order (a
        ``custom_vjp``; the values are equal up to summation order). Forward mode over
        reverse mode still works (``jax.hessian``, a ``jax.jvp`` of the gradient), but a
        direct ``jax.jvp`` of such a result raises JAX's error for ``custom_vjp``
        functions, so the default is ``False``.

    Returns:
      A function with ``fn``'s arguments and results.
    """
    if getattr(fn, "native_convs", False):
        return fn

    @functools.wraps(fn)
    def auto(*args: Any) -> Any:
        if jax.default_backend() != "cpu":
            return fn(*args)
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not _rewritable(closed.jaxpr):
            return fn(*args)
        outs = _evaluate(
            closed.jaxpr, closed.consts, *jax.tree.leaves(args), reverse_only=reverse_only
        )
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return auto


def lowers_on_cpu(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether :func:`lowered_on_cpu` would rewrite ``fn`` called on ``args``.

    True when the default backend is the CPU, ``fn`` is not marked by
    :func:`native_convs` and its jaxpr (traced on the shapes of ``args``, arrays or
    ``jax.ShapeDtypeStruct``) holds a convolution that :func:`convs_as_matmuls`
    rewrites. Methods use it to pick a schedule that suits the patch form.
    """
    if jax.default_backend() != "cpu" or getattr(fn, "native_convs", False):
        return False
    return _rewritable(jax.make_jaxpr(fn)(*args).jaxpr)


def convs_as_matmuls(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its 2-D convolutions computed as patches times a matrix.

    Same arguments, results and gradients as ``fn`` (up to summation order); see the
    module docstring for what is rewritten and why. Compose freely with ``jax.grad``,
    ``jax.vmap`` and ``jax.jit`` (apply it to the loss before differentiating).

    Args:
      fn: a function of arrays / pytrees of arrays, e.g. ``loss(params, batch)``.

    Returns:
      The rewritten function.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> conv = nnx.Conv(1, 4, (3, 3), rngs=nnx.Rngs(0))
      >>> x = jnp.ones((2, 8, 8, 1))
      >>> bool(jnp.allclose(convs_as_matmuls(conv)(x), conv(x), atol=1e-5))
      True
    """

    @functools.wraps(fn)
    def rewritten(*args: Any) -> Any:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = _evaluate(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return rewritten
