"""Tests for ``models``: objectives against finite differences and scipy, nets as pure functions.

Runs under conftest's float64 + strict dtype/rank promotion, so every objective and net is
also checked to never mix dtypes.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
import scipy.special
from flax import nnx
from jax.flatten_util import ravel_pytree

from decentjax.models import (
    Model,
    Objective,
    cnn,
    least_squares,
    linear,
    logistic_regression,
    mlp,
    nets,
    nonconvex_logistic_regression,
    smoothness_least_squares,
    smoothness_logistic,
    softmax_cross_entropy,
)

_N, _D = 12, 5


def _binary_batch(seed: int = 0, dtype=np.float64) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((_N, _D)).astype(dtype)
    y = rng.integers(0, 2, size=_N)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def _regression_batch(seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {
        "x": jnp.asarray(rng.standard_normal((_N, _D))),
        "y": jnp.asarray(rng.standard_normal(_N)),
    }


def _central_difference(f, w: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    f = jax.jit(f)  # one compilation instead of eager dispatch for every evaluation
    grad = np.zeros_like(w)
    for j in range(w.size):
        e = np.zeros_like(w)
        e[j] = eps
        grad[j] = (float(f(jnp.asarray(w + e))) - float(f(jnp.asarray(w - e)))) / (2 * eps)
    return grad


_LINEAR_OBJECTIVES = {
    "least_squares": (lambda: least_squares(reg=0.3), _regression_batch),
    "least_squares_noreg": (lambda: least_squares(), _regression_batch),
    "logistic": (lambda: logistic_regression(reg=0.2), _binary_batch),
    "nonconvex_logistic": (lambda: nonconvex_logistic_regression(reg=0.2), _binary_batch),
}


@pytest.mark.parametrize("name", list(_LINEAR_OBJECTIVES))
def test_linear_objective_gradient_matches_finite_difference(name):
    make, make_batch = _LINEAR_OBJECTIVES[name]
    obj = make()
    batch = make_batch()
    w = np.random.default_rng(1).standard_normal(_D)
    loss = lambda w: obj.loss(w, batch)
    grad = jax.grad(loss)(jnp.asarray(w))
    np.testing.assert_allclose(grad, _central_difference(loss, w), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", list(_LINEAR_OBJECTIVES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_objective_dtype_follows_params(name, dtype):
    make, make_batch = _LINEAR_OBJECTIVES[name]
    batch = make_batch()
    batch = {"x": batch["x"].astype(dtype), "y": batch["y"]}
    w = jnp.ones(_D, dtype)
    obj = make()
    assert obj.loss(w, batch).dtype == dtype
    assert jax.grad(obj.loss)(w, batch).dtype == dtype
    if obj.accuracy is not None:
        assert obj.accuracy(w, batch).dtype == dtype


def test_least_squares_value():
    batch = {"x": jnp.eye(2), "y": jnp.array([1.0, 3.0])}
    w = jnp.array([1.0, 1.0])
    # 0.5 * mean([0, 4]) + 0.5 * 0.1 * 2
    np.testing.assert_allclose(least_squares(reg=0.1).loss(w, batch), 1.0 + 0.1, rtol=1e-15)
    assert least_squares().accuracy is None


def test_logistic_is_stable_for_large_scores():
    batch = {"x": jnp.array([[1.0], [1.0]]), "y": jnp.array([0, 1])}
    # Scores +-1000: a naive log(1 + exp(1000)) overflows; softplus gives 1000 exactly.
    value = logistic_regression(reg=0.0).loss(jnp.array([1000.0]), batch)
    np.testing.assert_allclose(value, 500.0, rtol=1e-12)


def test_logistic_minimiser_from_scipy_has_zero_gradient():
    reg = 0.1
    obj = logistic_regression(reg=reg)
    batch = _binary_batch(seed=3)
    x, s = np.asarray(batch["x"]), 2.0 * np.asarray(batch["y"]) - 1.0

    # An independent NumPy reference of the objective and its gradient drives scipy, so the
    # check below does not trust our own gradient to find the minimiser.
    def f_np(w):
        return np.mean(np.logaddexp(0.0, -s * (x @ w))) + 0.5 * reg * w @ w

    def g_np(w):
        return -x.T @ (s * scipy.special.expit(-s * (x @ w))) / len(s) + reg * w

    def h_np(w):
        p = scipy.special.expit(x @ w)
        return (x.T * (p * (1.0 - p))) @ x / len(s) + reg * np.eye(_D)

    # Newton-type (trust-exact): the minimiser is accurate to what float64 function values
    # can resolve (a gradient of ~1e-11 against ~1e-1 at the start).
    res = scipy.optimize.minimize(
        f_np, np.zeros(_D), jac=g_np, hess=h_np, method="trust-exact", options={"gtol": 1e-10}
    )
    assert np.linalg.norm(g_np(res.x)) < 1e-10
    w_star = jnp.asarray(res.x)
    np.testing.assert_allclose(obj.loss(w_star, batch), f_np(res.x), rtol=1e-14)
    grad = jax.grad(obj.loss)(w_star, batch)
    assert np.linalg.norm(grad) < 1e-10
    np.testing.assert_allclose(grad, g_np(res.x), rtol=0, atol=1e-15)


def test_nonconvex_regulariser_gradient_matches_paper_code():
    reg = 0.2
    w = jnp.asarray(np.random.default_rng(2).standard_normal(_D) * 2.0)
    batch = _binary_batch()
    data_only = nonconvex_logistic_regression(reg=0.0).loss
    full = nonconvex_logistic_regression(reg=reg).loss
    reg_grad = jax.grad(full)(w, batch) - jax.grad(data_only)(w, batch)
    np.testing.assert_allclose(reg_grad, reg * w / (1.0 + w**2) ** 2, rtol=1e-12, atol=1e-15)


def test_nonconvex_data_term_equals_logistic():
    batch = _binary_batch()
    w = jnp.asarray(np.random.default_rng(4).standard_normal(_D))
    np.testing.assert_allclose(
        nonconvex_logistic_regression(reg=0.0).loss(w, batch),
        logistic_regression(reg=0.0).loss(w, batch),
        rtol=1e-15,
    )


@pytest.mark.parametrize("make", [logistic_regression, nonconvex_logistic_regression])
def test_binary_accuracy_on_hand_made_batch(make):
    # Scores x @ w = [2, -1, 3, -4]; predictions [1, 0, 1, 0]; labels [1, 1, 0, 0].
    batch = {"x": jnp.array([[2.0], [-1.0], [3.0], [-4.0]]), "y": jnp.array([1, 1, 0, 0])}
    acc = make(reg=0.1).accuracy(jnp.array([1.0]), batch)
    np.testing.assert_allclose(acc, 0.5)


def test_softmax_cross_entropy_gradient_matches_finite_difference():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((_N, _D)))
    batch = {"x": x, "y": jnp.asarray(rng.integers(0, 3, size=_N))}
    apply = lambda p, x: x @ p["w"] + p["b"][None, :]
    obj = softmax_cross_entropy(apply, reg=0.3)
    w0 = rng.standard_normal(_D * 3 + 3)

    def loss(flat):
        return obj.loss({"w": flat[: _D * 3].reshape(_D, 3), "b": flat[_D * 3 :]}, batch)

    np.testing.assert_allclose(
        jax.grad(loss)(jnp.asarray(w0)), _central_difference(loss, w0), rtol=1e-7, atol=1e-8
    )


def test_softmax_cross_entropy_value_and_accuracy():
    apply = lambda p, x: x @ p
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 0.0]])
    batch = {"x": jnp.eye(4), "y": jnp.array([0, 1, 1, 0])}
    obj = softmax_cross_entropy(apply, reg=0.5)
    expected_ce = np.mean(
        [
            np.log(np.sum(np.exp(row))) - row[y]
            for row, y in zip(np.asarray(logits), [0, 1, 1, 0], strict=True)
        ]
    )
    expected = expected_ce + 0.25 * float(jnp.sum(logits**2))
    np.testing.assert_allclose(obj.loss(logits, batch), expected, rtol=1e-13)
    # argmax = [0, 1, 2, 1] against labels [0, 1, 1, 0]
    np.testing.assert_allclose(obj.accuracy(logits, batch), 0.5)


def test_smoothness_constants():
    rng = np.random.default_rng(6)
    for shape in [(30, 4), (3, 10)]:  # tall and wide: either Gram matrix is used
        x = rng.standard_normal(shape)
        lam = np.linalg.norm(x, 2) ** 2 / shape[0]
        np.testing.assert_allclose(smoothness_least_squares(x, 0.5), lam + 0.5, rtol=1e-12)
        np.testing.assert_allclose(smoothness_logistic(x, 0.2), lam / 4 + 0.2, rtol=1e-12)
    assert isinstance(smoothness_logistic(jnp.ones((3, 2)), 0.0), float)


def test_smoothness_bounds_logistic_hessian():
    obj = logistic_regression(reg=0.2)
    batch = _binary_batch(seed=7)
    w = jnp.asarray(np.random.default_rng(8).standard_normal(_D) * 0.1)
    hess = jax.hessian(obj.loss)(w, batch)
    assert np.linalg.eigvalsh(np.asarray(hess))[-1] <= smoothness_logistic(batch["x"], 0.2)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: least_squares(reg=r),
        lambda r: logistic_regression(reg=r),
        lambda r: nonconvex_logistic_regression(reg=r),
        lambda r: softmax_cross_entropy(lambda p, x: x, reg=r),
        lambda r: smoothness_logistic(np.ones((2, 2)), r),
        lambda r: smoothness_least_squares(np.ones((2, 2)), r),
    ],
)
@pytest.mark.parametrize("reg", [-0.5, float("nan")])
def test_negative_reg_raises(make, reg):
    with pytest.raises(ValueError, match=f"reg={reg}"):
        make(reg)


def test_objective_shape_errors():
    obj = logistic_regression(reg=0.1)
    batch = _binary_batch()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        obj.loss(jnp.ones(3), batch)  # w does not match x's features
    with pytest.raises(ValueError, match=r"shape \(5, 1\)"):
        obj.loss(jnp.ones((5, 1)), batch)  # w is not a vector
    with pytest.raises(ValueError, match=r"shape \(11,\)"):
        obj.loss(jnp.ones(_D), {"x": batch["x"], "y": batch["y"][:11]})
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\)"):
        smoothness_logistic(np.ones((2, 3, 4)), 0.1)
    ce = softmax_cross_entropy(lambda p, x: x @ p)
    with pytest.raises(ValueError, match=r"shape \(12, 2\)"):
        ce.loss(jnp.ones((_D, 3)), {"x": batch["x"], "y": jnp.zeros((_N, 2), jnp.int32)})


# --- nets -------------------------------------------------------------------------------

_NETS = {
    "linear": (lambda **kw: linear(64, 10, **kw), (8, 8, 1), 10),
    "mlp": (lambda **kw: mlp(64, [16, 8], 10, **kw), (64,), 10),
    "cnn_8x8": (lambda **kw: cnn((8, 8, 1), 10, **kw), (8, 8, 1), 10),
    "cnn_28x28": (lambda **kw: cnn((28, 28, 1), 10, features=(4, 8), **kw), (28, 28, 1), 10),
}
# CPU compilation dominates these tests' time, so the larger CNN is only built once.
_SMALL_NETS = ["linear", "mlp", "cnn_8x8"]


@pytest.mark.parametrize("name", list(_NETS))
def test_net_vmapped_init_and_apply(name):
    make, in_shape, classes = _NETS[name]
    model = make()
    assert isinstance(model, Model)
    params = jax.jit(jax.vmap(model.init))(jax.random.split(jax.random.key(0), 4))
    leaves = jax.tree.leaves(params)
    assert leaves and all(leaf.shape[0] == 4 for leaf in leaves)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    # Agents get different random kernels (biases start at zero).
    for path, leaf in jax.tree.leaves_with_path(params):
        if path[-1].key == "kernel":
            assert not np.allclose(leaf[0], leaf[1]), path
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, *in_shape)), jnp.float32)
    out = jax.jit(jax.vmap(model.apply))(params, x)
    assert out.shape == (4, 3, classes) and out.dtype == jnp.float32
    # The same apply on one agent's params, outside vmap.
    one = jax.tree.map(lambda p: p[2], params)
    np.testing.assert_allclose(model.apply(one, x[2]), out[2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", _SMALL_NETS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_net_grad_of_softmax_cross_entropy(name, dtype):
    make, in_shape, classes = _NETS[name]
    model = make(param_dtype=dtype)
    params = jax.jit(model.init)(jax.random.key(1))
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
    obj = softmax_cross_entropy(model.apply, reg=1e-3)
    rng = np.random.default_rng(0)
    batch = {
        "x": jnp.asarray(rng.standard_normal((5, *in_shape)), dtype),
        "y": jnp.asarray(rng.integers(0, classes, size=5)),
    }
    loss, grads = jax.jit(jax.value_and_grad(obj.loss))(params, batch)
    assert loss.shape == () and loss.dtype == dtype and np.isfinite(loss)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
    accuracy = jax.jit(obj.accuracy)(params, batch)
    assert accuracy.dtype == dtype and 0.0 <= float(accuracy) <= 1.0
    # An optax step composes with the params as they are (plain dict of arrays).
    opt = optax.sgd(0.1)
    updates, _ = opt.update(grads, opt.init(params), params)
    assert jax.tree.structure(optax.apply_updates(params, updates)) == jax.tree.structure(params)


def test_net_float32_params_accept_float64_inputs():
    # Inputs are cast to the compute dtype, so strict promotion never sees a mix.
    model = mlp(4, [3], 2)
    params = jax.eval_shape(model.init, jax.random.key(0))
    out = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((2, 4), jnp.float64))
    assert out.dtype == jnp.float32 and out.shape == (2, 2)


def test_mlp_finite_difference_float64():
    model = mlp(3, [4], 2, param_dtype=jnp.float64)
    params = jax.jit(model.init)(jax.random.key(3))
    rng = np.random.default_rng(1)
    batch = {"x": jnp.asarray(rng.standard_normal((6, 3))), "y": jnp.asarray([0, 1] * 3)}
    obj = softmax_cross_entropy(model.apply, reg=0.1)
    flat, unravel = ravel_pytree(params)
    loss = lambda v: obj.loss(unravel(v), batch)
    np.testing.assert_allclose(
        jax.grad(loss)(flat), _central_difference(loss, np.asarray(flat)), rtol=1e-6, atol=1e-8
    )


def test_init_accepts_raw_uint32_keys():
    model = linear(4, 2)
    params = jax.eval_shape(jax.vmap(model.init), jax.random.split(jax.random.PRNGKey(0), 3))
    assert params["dense"]["kernel"].shape == (3, 4, 2)


def test_net_shape_errors():
    with pytest.raises(ValueError, match=r"\(28, 28\)"):
        cnn((28, 28), 10)
    with pytest.raises(ValueError, match=r"\(2, 2, 1\)"):
        cnn((2, 2, 1), 10)
    with pytest.raises(ValueError, match="num_classes=0"):
        linear(4, 0)
    with pytest.raises(ValueError, match=r"hidden\[1\]=-3"):
        mlp(4, [2, -3], 2)
    # Shapes are checked at trace time, so abstract params and inputs suffice.
    model = linear(64, 10)
    params = jax.eval_shape(model.init, jax.random.key(0))
    with pytest.raises(ValueError, match=r"shape \(2, 63\)"):
        jax.eval_shape(model.apply, params, jnp.ones((2, 63)))
    model = cnn((8, 8, 1), 10)
    params = jax.eval_shape(model.init, jax.random.key(0))
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8\)"):
        jax.eval_shape(model.apply, params, jnp.ones((2, 8, 8)))


def test_objective_is_a_namedtuple():
    obj = logistic_regression(reg=0.1)
    assert isinstance(obj, Objective)
    assert obj.name == "logistic_regression"
    loss, accuracy, name, check_data = obj
    assert callable(loss) and callable(accuracy) and name == obj.name and callable(check_data)


@pytest.mark.parametrize("kernel_size", [(3, 3), (1, 1), (3, 5)])
def test_patch_conv_equals_nnx_conv(kernel_size):
    # Same init (same RNG draws), same outputs and gradients as nnx.Conv "SAME", stride 1.
    kwargs = dict(dtype=jnp.float64, param_dtype=jnp.float64)
    ours = nets.PatchConv(3, 5, kernel_size, rngs=nnx.Rngs(0), **kwargs)
    ref = nnx.Conv(3, 5, kernel_size, rngs=nnx.Rngs(0), **kwargs)
    np.testing.assert_array_equal(ours.kernel[...], ref.kernel[...])
    bias = jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float64)
    ours.bias[...], ref.bias[...] = bias, bias
    x = jax.random.normal(jax.random.key(1), (2, 7, 6, 3), jnp.float64)
    np.testing.assert_allclose(ours(x), ref(x), rtol=0, atol=1e-12)

    def grads(module):
        graphdef, params = nnx.split(module, nnx.Param)
        return jax.grad(lambda p: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(x))))(params)

    chex.assert_trees_all_close(grads(ours), grads(ref), rtol=0, atol=1e-11)


@pytest.mark.parametrize("kernel_size", [(2, 3), (0, 1), (3, -1)])
def test_patch_conv_rejects_even_or_empty_kernel(kernel_size):
    with pytest.raises(ValueError, match="kernel_size must be two odd positive ints"):
        nets.PatchConv(1, 2, kernel_size, rngs=nnx.Rngs(0))
