"""Standard networks (ResNet-20, LeNet-5), their conv lowering, bf16 compute, augmentation."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from decentjax.algos import dsgd
from decentjax.core import comm, loop, mesh, sampling, topology, weights
from decentjax.models import convs_as_matmuls, objectives
from decentjax.models.augment import random_crop_flip
from decentjax.models.lenet import LeNet5, lenet5
from decentjax.models.nets import _as_model
from decentjax.models.resnet import ResNet, resnet20


def _n_params(module):
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_parameter_counts(norm):
    # He et al. 2016 Table 6: ResNet-20 has 0.27M parameters (option-A shortcuts). Each
    # strided stage's projection adds a 1x1 conv and a scale/shift pair:
    # (16*32 + 2*32) + (32*64 + 2*64) = 2752.
    build = lambda **kw: nnx.eval_shape(lambda: ResNet(norm=norm, rngs=nnx.Rngs(0), **kw))
    assert _n_params(build()) == 269_722
    assert _n_params(build(shortcut="projection")) == 269_722 + 2752
    # LeNet-5 on 28x28x1: 156 + 2416 + 48120 + 10164 + 850.
    assert _n_params(nnx.eval_shape(lambda: LeNet5(rngs=nnx.Rngs(0)))) == 61_706
    cifar = nnx.eval_shape(lambda: LeNet5((32, 32, 3), padding=0, rngs=nnx.Rngs(0)))
    assert _n_params(cifar) == 61_706 + 5 * 5 * 2 * 6


def test_resnet20_model_per_agent_shapes():
    # Shapes only (abstract evaluation, no compile); numerics are checked below.
    model = resnet20(num_classes=100)
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.eval_shape(jax.vmap(model.init), keys)
    assert params["conv"]["kernel"].shape == (3, 3, 3, 3, 16)
    assert params["blocks"][3]["conv1"]["kernel"].shape == (3, 3, 3, 16, 32)
    assert params["dense"]["kernel"].shape == (3, 64, 100)
    images = jax.ShapeDtypeStruct((3, 2, 32, 32, 3), jnp.float32)
    logits = jax.eval_shape(jax.vmap(model.apply), params, images)
    assert logits.shape == (3, 2, 100) and logits.dtype == jnp.float32


def test_bad_arguments_raise_before_building():
    with pytest.raises(ValueError, match="norm must be one of.*'layer'"):
        ResNet(norm="layer", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="shortcut must be one of.*'B'"):
        resnet20(shortcut="B")
    with pytest.raises(ValueError, match="groups=3 must divide every width"):
        resnet20(groups=3)
    with pytest.raises(ValueError, match="too small for LeNet-5"):
        lenet5((8, 8, 1), padding=0)
    model = lenet5()
    params = jax.eval_shape(model.init, jax.random.key(0))
    with pytest.raises(ValueError, match=r"expected a batch of shape \(B, 28, 28, 1\)"):
        jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32))


def _loss(graphdef):
    """A pure loss of (params, rest, x) for an NNX model (train-mode BatchNorm updates rest)."""

    def loss(params, rest, x):
        model = nnx.merge(graphdef, params, rest)
        out = model(x)
        return jnp.sum(jnp.sin(out.astype(jnp.float32))), nnx.to_pure_dict(
            nnx.state(model, nnx.Not(nnx.Param))
        )

    return loss


def _split(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def test_batchnorm_train_updates_statistics_and_eval_uses_them():
    model = ResNet(norm="batch", blocks=1, rngs=nnx.Rngs(0))  # ResNet-8: fast to compile
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3), jnp.float32)
    model.train()
    graphdef, params, stats = _split(model)

    @jax.jit
    def train_step(params, stats, x):
        (value, new), grads = jax.value_and_grad(_loss(graphdef), has_aux=True)(params, stats, x)
        first_conv = nnx.merge(graphdef, params, stats).conv(x)
        return value, new, grads, first_conv

    value, new_stats, grads, first_conv = train_step(params, stats, x)
    assert np.isfinite(value)
    # Momentum 0.9 from zero means: the new running mean is 0.1 x the batch mean.
    want = 0.1 * jnp.mean(first_conv, axis=(0, 1, 2))
    np.testing.assert_allclose(new_stats["norm"]["mean"], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(new_stats["blocks"][2]["norm2"]["var"], 1.0)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["conv"]["kernel"]).max()) > 0
    # Eval mode normalises with the running statistics: each example independently.
    model = nnx.merge(graphdef, params, new_stats)
    model.eval()
    graphdef, params, stats = _split(model)
    apply = jax.jit(lambda x: nnx.merge(graphdef, params, stats)(x))
    np.testing.assert_allclose(apply(x)[:1], apply(x[:1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_bf16_compute_keeps_float32_params(norm):
    model = ResNet(
        norm=norm, blocks=1, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0)
    )
    model.train()
    graphdef, params, rest = _split(model)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    x = jnp.ones((2, 8, 8, 3), jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda x: nnx.merge(graphdef, params, rest)(x))(x))
    assert "conv_general_dilated" in jaxpr and "bf16[2,8,8,16]" in jaxpr
    assert not re.search(r"f(32|64)\[[0-9,]*\] = conv_general_dilated", jaxpr)
    out, grads = jax.jit(
        lambda p, x: (
            nnx.merge(graphdef, p, rest)(x),
            jax.grad(_loss(graphdef), has_aux=True)(p, rest, x)[0],
        )
    )(params, x)
    assert out.dtype == jnp.bfloat16
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


def _assert_same_loss_and_grads(loss, args, rtol):
    fast = convs_as_matmuls(loss)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(fast)(*args))
    both = jax.jit(lambda *a: [jax.value_and_grad(f, has_aux=True)(*a) for f in (loss, fast)])
    want, got = both(*args)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, np.abs(b).max()))


def test_groupnorm_resnet_through_convs_as_matmuls():
    # Float64, with strided 3x3 "SAME" convs (asymmetric padding), strided 1x1
    # projections, GroupNorm and the global average pool. The rewrite only reorders
    # sums of at most 3*3*64 products per output: 1e-9 relative is far above its error.
    # One block per stage has every layer configuration of ResNet-20 (a third of the
    # compile time).
    model = ResNet(shortcut="projection", blocks=1, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    graphdef, params, rest = _split(model)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3), jnp.float64)
    _assert_same_loss_and_grads(_loss(graphdef), (params, rest, x), rtol=1e-9)


def test_batchnorm_resnet_through_convs_as_matmuls():
    # Flax keeps batch statistics in float32 whatever the param dtype, so this runs in
    # float32: a reordered sum of K = 3*3*64 products moves by at most K * eps32 ~ 7e-5
    # relative (typically sqrt(K) * eps32 ~ 3e-6); 1e-3 leaves room for the blocks'
    # amplification. One block per stage has every layer configuration of ResNet-20.
    model = ResNet(norm="batch", blocks=1, shortcut="projection", rngs=nnx.Rngs(0))
    model.train()
    graphdef, params, rest = _split(model)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3), jnp.float32)
    _assert_same_loss_and_grads(_loss(graphdef), (params, rest, x), rtol=1e-3)


def test_lenet_through_convs_as_matmuls():
    model = LeNet5(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    graphdef, params, rest = _split(model)
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1), jnp.float64)
    _assert_same_loss_and_grads(_loss(graphdef), (params, rest, x), rtol=1e-9)


def test_lenet5_model():
    model = lenet5((32, 32, 3), 100, padding=0)
    params = model.init(jax.random.key(0))
    assert params["c1"]["kernel"].shape == (5, 5, 3, 6)
    assert jax.jit(model.apply)(params, jnp.ones((2, 32, 32, 3), jnp.float32)).shape == (2, 100)


def _images(n_agents=3, batch=5, size=8):
    rng = np.random.default_rng(0)
    # Distinct positive pixels, so a zero can only come from the padding.
    return jnp.asarray(rng.uniform(1.0, 2.0, (n_agents, batch, size, size, 2)), jnp.float32)


def test_augmentation_is_per_agent_and_deterministic():
    images = _images()
    keys = jax.random.split(jax.random.key(0), images.shape[0])
    augment = jax.jit(jax.vmap(random_crop_flip))
    out = augment(images, keys)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_array_equal(augment(images, keys), out)  # same key, same output
    # Every agent gets the same images here: different keys must augment them differently.
    same = jnp.broadcast_to(images[:1], images.shape)
    per_agent = augment(same, keys)
    assert not np.array_equal(per_agent[0], per_agent[1])
    assert not np.array_equal(per_agent[1], per_agent[2])
    # One agent alone, with its key, gives what it got inside the vmap.
    np.testing.assert_array_equal(random_crop_flip(same[1], keys[1]), per_agent[1])


def test_crop_is_a_window_of_the_padded_image_and_flip_is_exact():
    images = _images(n_agents=1, batch=16)[0]
    p = 4
    padded = np.pad(np.asarray(images), ((0, 0), (p, p), (p, p), (0, 0)))
    crops = np.asarray(random_crop_flip(images, jax.random.key(3), padding=p, flip=False))
    offsets = set()
    for b in range(images.shape[0]):
        hits = [
            (i, j)
            for i in range(2 * p + 1)
            for j in range(2 * p + 1)
            if np.array_equal(padded[b, i : i + 8, j : j + 8], crops[b])
        ]
        assert len(hits) == 1  # exactly one window (pixels are distinct)
        offsets.add(hits[0])
    assert len(offsets) > 1
    flipped = np.asarray(random_crop_flip(images, jax.random.key(4), padding=0))
    mirrored = np.asarray(images)[:, :, ::-1]
    is_flip = [np.array_equal(f, m) for f, m in zip(flipped, mirrored, strict=True)]
    is_same = [np.array_equal(f, x) for f, x in zip(flipped, np.asarray(images), strict=True)]
    assert all(a != b for a, b in zip(is_flip, is_same, strict=True))  # bit-exact, one of two
    assert 0 < sum(is_flip) < len(is_flip)
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        random_crop_flip(images, jax.random.key(0), padding=-1)
    with pytest.raises(ValueError, match=r"batch \(B, H, W, C\)"):
        random_crop_flip(images[0], jax.random.key(0))


def test_resnet_dsgd_step_same_on_one_and_eight_devices():
    # One full-batch DSGD step (ring, 8 agents, 2 images of 8x8 each) of the GroupNorm
    # ResNet with one block per stage (every layer configuration of ResNet-20 at a third
    # of the compile time), its convolutions lowered to matmuls as a per-agent model's
    # should be.
    # Each agent's arithmetic is the same on 1 and 8 devices, but XLA may block the
    # float32 GEMMs differently for 8 agents per device than for 1: a reordered sum of K
    # <= 576 terms differs by ~sqrt(K) * eps32 ~ 3e-6 relative; 1e-5 (scaled by the
    # largest param) bounds it.
    n, m = 8, 2
    model = _as_model(lambda rngs: ResNet(blocks=1, rngs=rngs), "resnet8-gn")
    obj = objectives.softmax_cross_entropy(convs_as_matmuls(model.apply), num_classes=10)
    rng = np.random.default_rng(0)
    parts = {
        "x": rng.normal(size=(n, m, 8, 8, 3)).astype(np.float32),
        "y": rng.integers(0, 10, size=(n, m)),
    }
    params0 = jax.jit(jax.vmap(model.init))(jax.random.split(jax.random.key(0), n))
    params0 = jax.tree.map(np.asarray, params0)
    op = comm.gossip(weights.lazy(weights.metropolis_hastings(topology.ring(n))))
    out = []
    for n_devices in (1, 8):
        agent_mesh = mesh.make_agent_mesh(n, n_devices)
        data = mesh.shard_agents(parts, agent_mesh)
        algorithm = dsgd(obj.loss, op, 0.1)
        # No metrics: only the parameters are compared (and the evaluator's backward pass
        # would double the compile time).
        runner = loop.Runner(algorithm, sampling.full_batch(m), agent_mesh, lambda *_: {})
        state = runner.init(mesh.shard_agents(params0, agent_mesh), data, jax.random.key(1))
        state, _ = runner.run_epochs(state, data, jax.random.key(2), 0, 1)
        out.append(jax.device_get(algorithm.params(state)))
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), out[0], params0)
    assert max(jax.tree.leaves(moved)) > 1e-3  # the step did something
    for a, b in zip(jax.tree.leaves(out[1]), jax.tree.leaves(out[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
