"""convs_as_matmuls: the same function and gradients as the stock convolutions (float64)."""

import functools

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from decentjax.core.algorithm import agent_grad, map_over_agents
from decentjax.core.conv_lowering import (
    conv_as_matmul,
    convs_as_matmuls,
    lowered_on_cpu,
    native_convs,
    pool_as_reshape,
)

CASES = {
    "nhwc_same": dict(dn=("NHWC", "HWIO", "NHWC"), k=(3, 3), strides=(1, 1), pad="SAME"),
    "nhwc_valid_stride2": dict(dn=("NHWC", "HWIO", "NHWC"), k=(3, 3), strides=(2, 2), pad="VALID"),
    "nchw_explicit": dict(
        dn=("NCHW", "OIHW", "NCHW"), k=(2, 3), strides=(1, 2), pad=((1, 0), (2, 1))
    ),
    "pointwise": dict(dn=("NHWC", "HWIO", "NHWC"), k=(1, 1), strides=(1, 1), pad="SAME"),
    "mixed_layouts": dict(dn=("NCHW", "HWIO", "NHWC"), k=(3, 2), strides=(2, 1), pad="SAME"),
}


def _operands(case, seed=0):
    rng = np.random.default_rng(seed)
    batch, c_in, c_out, h, w = 2, 3, 4, 7, 6
    lhs_shape = {"NHWC": (batch, h, w, c_in), "NCHW": (batch, c_in, h, w)}[case["dn"][0]]
    kh, kw = case["k"]
    rhs_shape = {"HWIO": (kh, kw, c_in, c_out), "OIHW": (c_out, c_in, kh, kw)}[case["dn"][1]]
    return rng.normal(size=lhs_shape), rng.normal(size=rhs_shape)


def _conv(case):
    return lambda x, k: jax.lax.conv_general_dilated(
        x, k, case["strides"], case["pad"], dimension_numbers=case["dn"]
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_function_and_gradients_equal_conv_general_dilated(name):
    case = CASES[name]
    x, k = _operands(case)
    conv = _conv(case)
    fast = convs_as_matmuls(conv)
    np.testing.assert_allclose(fast(x, k), conv(x, k), rtol=1e-12, atol=1e-12)
    cotangent = np.random.default_rng(1).normal(size=conv(x, k).shape)
    grads = jax.grad(lambda x, k: jnp.vdot(conv(x, k), cotangent), argnums=(0, 1))(x, k)
    fast_grads = jax.grad(lambda x, k: jnp.vdot(fast(x, k), cotangent), argnums=(0, 1))(x, k)
    for got, want in zip(fast_grads, grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(fast)(x, k))


def test_unsupported_convolutions_are_left_alone():
    x, k = np.ones((1, 6, 6, 4)), np.ones((3, 3, 2, 4))
    grouped = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2
    )
    assert "conv_general_dilated" in str(jax.make_jaxpr(convs_as_matmuls(grouped))(x, k))
    np.testing.assert_allclose(convs_as_matmuls(grouped)(x, k), grouped(x, k))


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_tiling_pools_become_reshapes_and_others_stay(pool):
    # flax's avg_pool divides by an int window size: not allowed by strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        _check_pool(pool)


def _check_pool(pool):
    fn = {"max": nnx.max_pool, "avg": nnx.avg_pool}[pool]
    x = np.random.default_rng(2).normal(size=(2, 9, 8, 3))  # 9 rows: the last is cropped
    tiling = lambda x: fn(x, (2, 2), (2, 2))  # noqa: E731
    # Max is exact; a window sum of 4 O(1) terms may round differently: 8 eps * |x|max.
    np.testing.assert_allclose(convs_as_matmuls(tiling)(x), tiling(x), rtol=0, atol=1e-14)
    g = jax.grad(lambda x: jnp.sum(jnp.sin(tiling(x))))(x)
    g_fast = jax.grad(lambda x: jnp.sum(jnp.sin(convs_as_matmuls(tiling)(x))))(x)
    np.testing.assert_allclose(g_fast, g, rtol=1e-14)
    assert "reduce_window" not in str(jax.make_jaxpr(convs_as_matmuls(tiling))(x))
    overlapping = lambda x: fn(x, (2, 2), (1, 1))  # noqa: E731
    assert "reduce_window" in str(jax.make_jaxpr(convs_as_matmuls(overlapping))(x))


@pytest.mark.parametrize("window", [(2, 2), (3, 3), (1, 3), (5, 5)])
def test_max_pool_gradient_goes_where_the_native_one_goes_ties_included(window):
    # Small integers: most windows hold tied maxima. The native gradient (select and
    # scatter with >=) takes each window's first maximum; so does the lowered one, in
    # reverse and forward mode and at second order. (5, 5) = 25 positions takes the
    # reshape path, whose ties share the gradient: compared without ties.
    rng = np.random.default_rng(3)
    ties = window != (5, 5)
    shape = (2, 10, 10, 3)
    x = rng.integers(0, 3, size=shape).astype(np.float64) if ties else rng.normal(size=shape)
    pool = lambda x: nnx.max_pool(x, window, window)  # noqa: E731
    fast = convs_as_matmuls(pool)
    assert "reduce_window" not in str(jax.make_jaxpr(fast)(x))
    r = rng.normal(size=pool(x).shape)
    np.testing.assert_array_equal(fast(x), pool(x))
    grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * r))(x)  # noqa: E731
    np.testing.assert_array_equal(grad(fast), grad(pool))
    t = rng.normal(size=shape)
    np.testing.assert_array_equal(jax.jvp(fast, (x,), (t,))[1], jax.jvp(pool, (x,), (t,))[1])
    # Second order (a Hessian-vector product) too: the rule holds under an outer jvp.
    square = lambda f: jax.grad(lambda x: jnp.sum(f(x) ** 2 * r))  # noqa: E731
    hvp = lambda f: jax.jvp(square(f), (x,), (t,))[1]  # noqa: E731
    np.testing.assert_array_equal(hvp(fast), hvp(pool))


class _UserCNN(nnx.Module):
    """A model as a user writes it: stock nnx layers, max pooling, a jitted helper."""

    def __init__(self, rngs):
        self.c1 = nnx.Conv(1, 4, (3, 3), param_dtype=jnp.float64, rngs=rngs)
        self.c2 = nnx.Conv(4, 6, (3, 3), strides=(2, 2), param_dtype=jnp.float64, rngs=rngs)
        self.out = nnx.Linear(2 * 2 * 6, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(nnx.relu(self.c1(x)), (2, 2), (2, 2))
        x = jax.jit(nnx.relu)(self.c2(x))
        return self.out(x.reshape(x.shape[0], -1))


def test_a_user_nnx_cnn_loss_and_per_agent_gradients_are_unchanged():
    graphdef, params = nnx.split(_UserCNN(nnx.Rngs(0)), nnx.Param)

    def loss(params, batch):
        logits = nnx.merge(graphdef, params)(batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    rng = np.random.default_rng(3)
    agents = 3
    batch = {"x": rng.normal(size=(agents, 5, 8, 8, 1)), "y": rng.integers(0, 3, size=(agents, 5))}
    stacked = jax.tree.map(lambda p: jnp.stack([p * (1 + 0.1 * i) for i in range(agents)]), params)
    want = jax.vmap(jax.value_and_grad(loss))(stacked, batch)
    fast = convs_as_matmuls(loss)
    got = jax.jit(jax.vmap(jax.value_and_grad(fast)))(stacked, batch)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
    text = str(jax.make_jaxpr(jax.vmap(jax.grad(fast)))(stacked, batch))
    assert "conv_general_dilated" not in text and "reduce_window" not in text


def test_conv_as_matmul_is_the_reference_formula():
    # One output entry by hand: sum over the window and the input channels.
    x = np.arange(1.0, 1 + 1 * 4 * 4 * 2).reshape(1, 4, 4, 2)
    k = np.arange(1.0, 1 + 2 * 2 * 2 * 1).reshape(2, 2, 2, 1)
    dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
    y = conv_as_matmul(
        x, k, window_strides=(1, 1), padding=((0, 0), (0, 0)), dimension_numbers=dn,
        lhs_dilation=(1, 1), rhs_dilation=(1, 1), feature_group_count=1, batch_group_count=1,
    )  # fmt: skip
    assert y.shape == (1, 3, 3, 1)
    assert float(y[0, 1, 2, 0]) == float(np.sum(x[0, 1:3, 2:4, :] * k[..., 0]))


def _user_loss_and_agents(agents=3):
    graphdef, params = nnx.split(_UserCNN(nnx.Rngs(0)), nnx.Param)

    def loss(params, batch):
        logits = nnx.merge(graphdef, params)(batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    rng = np.random.default_rng(4)
    batch = {"x": rng.normal(size=(agents, 5, 8, 8, 1)), "y": rng.integers(0, 3, size=(agents, 5))}
    stacked = jax.tree.map(lambda p: jnp.stack([p * (1 + 0.1 * i) for i in range(agents)]), params)
    return loss, stacked, batch


@pytest.mark.parametrize("mapped", [False, True])
def test_every_method_differentiates_a_stock_conv_loss_in_the_patch_form_on_cpu(mapped):
    # agent_grad is how the methods take per-agent gradients: on XLA:CPU a stock
    # nnx.Conv loss is lowered without the user wrapping it (elsewhere it stays native);
    # native_convs opts out on any backend.
    lowered = jax.default_backend() == "cpu"
    loss, stacked, batch = _user_loss_and_agents()
    wrap = map_over_agents if mapped else (lambda f: f)
    want = jax.vmap(jax.grad(loss))(stacked, batch)
    auto = agent_grad(wrap(loss))
    native = agent_grad(wrap(native_convs(loss)))
    for got in (jax.jit(auto)(stacked, batch), jax.jit(native)(stacked, batch)):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
    assert ("conv_general_dilated" in str(jax.make_jaxpr(auto)(stacked, batch))) != lowered
    assert "conv_general_dilated" in str(jax.make_jaxpr(native)(stacked, batch))


def test_a_loss_without_convolutions_compiles_exactly_as_before():
    def loss(w, batch):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

    rng = np.random.default_rng(5)
    w, batch = (
        rng.normal(size=(3, 4)),
        {"x": rng.normal(size=(3, 6, 4)), "y": rng.normal(size=(3, 6))},
    )
    plain = jax.make_jaxpr(jax.vmap(jax.grad(loss)))(w, batch)
    assert str(jax.make_jaxpr(agent_grad(loss))(w, batch)) == str(plain)


def test_native_mark_survives_later_wrapping():
    # native_convs marks by a named jit, so a marked loss wrapped again (a Task's loss,
    # augmentation, a lambda) keeps its convolutions native under the automatic lowering.
    conv = nnx.Conv(2, 3, (3, 3), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(conv, nnx.Param)

    def loss(p, x):
        return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

    x = jnp.ones((2, 6, 6, 2), jnp.float32)
    wrapped = lambda p, x: 2.0 * native_convs(loss)(p, x)  # noqa: E731
    for fn, native in ((wrapped, True), (lambda p, x: 2.0 * loss(p, x), False)):
        jaxpr = str(jax.make_jaxpr(lowered_on_cpu(fn))(params, x))
        assert ("conv_general_dilated" in jaxpr) == native or jax.default_backend() != "cpu"
    np.testing.assert_allclose(
        jax.grad(lowered_on_cpu(wrapped))(params, x)["kernel"][...],
        jax.grad(lambda p, x: 2.0 * loss(p, x))(params, x)["kernel"][...],
        rtol=1e-10,
    )


def test_the_centralized_method_lowers_its_pooled_gradient_on_cpu():
    # algos.centralized differentiates one model on the block's pooled batch (not through
    # agent_grad); on XLA:CPU that gradient is lowered too (native: 194 s vs 3.8 s per
    # ResNet-20 step on batch 512 in launch/benchmarks/resnet.py), with equal results.
    from decentjax import algos
    from decentjax.core import comm, mesh, weights
    from decentjax.core.algorithm import Batch

    loss, stacked, batch = _user_loss_and_agents()
    agents = jax.tree.leaves(stacked)[0].shape[0]
    agent_mesh = mesh.make_agent_mesh(agents, 1)
    op = comm.gossip(weights.averaging(agents))
    stacked, batch = mesh.shard_agents((stacked, batch), agent_mesh)
    results = []
    for fn in (loss, native_convs(loss)):
        method = algos.centralized(fn, op, 0.1)

        spec = jax.P(mesh.AGENT_AXIS)

        @jax.jit
        @functools.partial(jax.shard_map, mesh=agent_mesh, in_specs=spec, out_specs=spec)
        def step(params, data, method=method):
            state = method.init(params, data, jax.random.key(0))
            zero = jnp.zeros((), jnp.int32)
            new, _ = method.step(state, Batch(data, zero, zero), jax.random.key(1))
            return method.params(new)

        jaxpr = str(jax.make_jaxpr(step)(stacked, batch))
        assert ("conv_general_dilated" in jaxpr) == (
            fn is not loss or jax.default_backend() != "cpu"
        )
        results.append(step(stacked, batch))
    for a, b in zip(*(jax.tree.leaves(r) for r in results), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def _dot_shapes(jaxpr) -> list[tuple[int, ...]]:
    """The output shapes of every dot_general in a jaxpr, nested calls included."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(tuple(eqn.outvars[0].aval.shape))
        for sub in jex.jaxprs_in_params(eqn.params):
            shapes += _dot_shapes(sub)
    return shapes


def test_agent_grad_forms_a_first_layer_kernel_gradient_patches_first():
    # k_h k_w C_in = 9 < 12 output channels (a first layer): under agent_grad (reverse
    # mode only) the kernel gradient is P^T G, shape (9, 12), not JAX's (G^T P)^T, which
    # makes XLA:CPU transpose the larger cotangent; a layer with 18 patch columns and 4
    # outputs keeps JAX's order. Values equal the native gradients; without
    # reverse_only the lowering stays forward-mode differentiable.
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        nnx.Conv(1, 12, (3, 3), param_dtype=jnp.float64, rngs=rngs),
        nnx.relu,
        nnx.Conv(12, 2, (3, 3), param_dtype=jnp.float64, rngs=rngs),
    )
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p, x):
        return jnp.sum(jnp.tanh(nnx.merge(graphdef, p)(x)))

    rng = np.random.default_rng(8)
    stacked = jax.tree.map(lambda p: jnp.stack([p, 0.5 * p]), params)
    x = rng.normal(size=(2, 3, 6, 6, 1))
    want = jax.vmap(jax.grad(loss))(stacked, x)
    got = jax.jit(agent_grad(loss))(stacked, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
    fast = _dot_shapes(jax.make_jaxpr(agent_grad(loss))(stacked, x).jaxpr)
    plain = _dot_shapes(jax.make_jaxpr(jax.vmap(jax.grad(lowered_on_cpu(loss))))(stacked, x).jaxpr)
    if jax.default_backend() == "cpu":
        assert (2, 9, 12) in fast and (2, 12, 9) not in fast
        assert (2, 12, 9) in plain and (2, 9, 12) not in plain
        assert (2, 2, 108) in fast and (2, 2, 108) in plain  # the 108-column layer: as JAX does
    # Forward over reverse still works (the custom_vjp is only ever linearized).
    ts = jax.tree.map(jnp.ones_like, stacked)
    for a, b in zip(
        jax.tree.leaves(jax.jvp(lambda p: agent_grad(loss)(p, x), (stacked,), (ts,))[1]),
        jax.tree.leaves(jax.jvp(lambda p: jax.vmap(jax.grad(loss))(p, x), (stacked,), (ts,))[1]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    t = jax.tree.map(jnp.ones_like, params)
    single = jax.tree.map(lambda p: p[0], stacked)
    np.testing.assert_allclose(
        jax.jvp(lambda p: lowered_on_cpu(loss)(p, x[0]), (single,), (t,))[1],
        jax.jvp(lambda p: loss(p, x[0]), (single,), (t,))[1],
        rtol=1e-11,
    )


def test_a_max_pool_window_holding_nan_sends_its_gradient_to_its_last_position():
    # As documented in pool_as_reshape: no view equals a NaN maximum, so the window's
    # first-maximum code stays at its last position.
    x = jnp.asarray([[1.0, jnp.nan], [0.0, 3.0], [2.0, 5.0], [4.0, 1.0]]).reshape(1, 4, 2, 1)
    grad = jax.grad(lambda x: jnp.sum(pool_as_reshape(x, jnp.max, (1, 2, 2, 1))))(x)
    np.testing.assert_array_equal(grad.ravel(), [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
