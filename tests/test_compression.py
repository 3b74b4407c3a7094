"""Compression operators: moments against their constants, bit costs, local view."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax.core import compression, mesh

N_DRAWS = 20_000
# Each statistical check allows Z_SCORE standard errors: with a few hundred such
# checks a false alarm has probability ~1e-5, and the draws are seeded anyway.
Z_SCORE = 5.0

UNBIASED = {
    "identity": compression.identity(),
    "rand_k": compression.rand_k(3),
    "rand_k_fraction": compression.rand_k(fraction=0.25),
    "qsgd_1": compression.qsgd(1),
    "qsgd_4": compression.qsgd(4),
    "qsgd_linf": compression.qsgd(2, norm="linf"),
    "natural": compression.natural(),
}
CONTRACTIVE = {
    "top_k": compression.top_k(3),
    "top_k_fraction": compression.top_k(fraction=0.5),
    "rand_k_biased": compression.rand_k(3, unbiased=False),
    "scaled_sign": compression.scaled_sign(),
    "contractive_qsgd": compression.contractive(compression.qsgd(2)),
    "contractive_rand_k": compression.contractive(compression.rand_k(5)),
}
ALL = {**UNBIASED, **CONTRACTIVE}


def _tree(seed=0, dtype=np.float64):
    """A two-leaf pytree with d = 12 + 8 = 20."""
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(4, 3)).astype(dtype), "b": rng.normal(size=(8,)).astype(dtype)}


def _flat(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _draws(compressor, tree, n=N_DRAWS, seed=1):
    """``(n, d)`` flattened compressions of ``tree`` with ``n`` independent keys."""
    keys = jax.random.split(jax.random.key(seed), n)
    out = jax.jit(jax.vmap(compressor.compress, in_axes=(0, None)))(keys, tree)
    return np.concatenate([np.reshape(leaf, (n, -1)) for leaf in jax.tree.leaves(out)], axis=1)


@functools.cache
def _samples(name):
    """``(x, draws)`` of ``ALL[name]`` on ``_tree()``, shared by tests to save compiles."""
    tree = _tree()
    return _flat(tree), _draws(ALL[name], tree)


def _assert_mean_sq_error_at_most(samples, x, bound):
    err = np.sum((samples - x) ** 2, axis=1)
    stderr = err.std() / math.sqrt(len(err))
    assert err.mean() <= bound + Z_SCORE * stderr + 1e-12, (err.mean(), bound)


@pytest.mark.parametrize("name", sorted(UNBIASED))
def test_unbiased_mean_and_variance(name):
    c = UNBIASED[name]
    x, samples = _samples(name)
    stderr = samples.std(axis=0) / math.sqrt(N_DRAWS)
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - x), Z_SCORE * stderr + 1e-12)
    d = x.size
    _assert_mean_sq_error_at_most(samples, x, c.omega(d) * np.sum(x**2))
    assert c.unbiased
    assert c.delta(d) == pytest.approx(1.0 / (1.0 + c.omega(d)))


def _exact_variance(name, x):
    """``E||C(x) - x||^2`` of the unbiased compressor ``UNBIASED[name]``, in closed form.

    rand-k: ``(d/k - 1)||x||^2`` (its omega is attained for every x). QSGD: per entry
    the Bernoulli rounding of ``y_j = s|x_j|/||x||`` between its two grid points,
    ``(||x||/s)^2 p_j (1 - p_j)`` with ``p_j = y_j - floor(y_j)``. Natural: the
    rounding of ``|x_j|`` between ``2^e`` and ``2^(e+1)``, ``(2^(e+1) - |x_j|)(|x_j| - 2^e)``.
    """
    c, mag = UNBIASED[name], np.abs(x)
    if name == "identity":
        return 0.0
    if name.startswith("rand_k"):
        return c.omega(x.size) * np.sum(x**2)
    if name.startswith("qsgd"):
        levels = {"qsgd_1": 1, "qsgd_4": 4, "qsgd_linf": 2}[name]
        scale = mag.max() if name == "qsgd_linf" else np.linalg.norm(x)
        y = levels * mag / scale
        p = y - np.floor(y)
        return np.sum((scale / levels) ** 2 * p * (1 - p))
    assert name == "natural"
    low = 2.0 ** np.floor(np.log2(mag))
    return np.sum((2 * low - mag) * (mag - low))


@pytest.mark.parametrize("name", sorted(UNBIASED))
def test_unbiased_second_moment_is_exact(name):
    # The omega bound can be loose (qsgd(4) on this x: 0.22 ||x||^2 against omega = 1.12),
    # so it alone would pass 5x too much variance: compare with the exact value.
    x, samples = _samples(name)
    err = np.sum((samples - x) ** 2, axis=1)
    want = _exact_variance(name, x)
    assert want <= UNBIASED[name].omega(x.size) * np.sum(x**2) + 1e-12
    assert abs(err.mean() - want) <= Z_SCORE * err.std() / math.sqrt(err.size) + 1e-12, (
        err.mean(),
        want,
    )


@pytest.mark.parametrize("name", sorted(CONTRACTIVE))
def test_contractive_error_bound(name):
    c = CONTRACTIVE[name]
    x, samples = _samples(name)
    d = x.size
    assert 0.0 < c.delta(d) <= 1.0
    _assert_mean_sq_error_at_most(samples, x, (1.0 - c.delta(d)) * np.sum(x**2))
    assert not c.unbiased and c.omega(d) == math.inf


@pytest.mark.parametrize(("name", "ratio"), [("rand_k", 20 / 3 - 1), ("rand_k_biased", 1 - 3 / 20)])
def test_rand_k_error_is_attained(name, ratio):
    # rand-k's bounds are equalities: E||C(x) - x||^2 = ratio * ||x||^2 for every x.
    x, samples = _samples(name)
    err = np.sum((samples - x) ** 2, axis=1)
    assert abs(err.mean() - ratio * np.sum(x**2)) <= Z_SCORE * err.std() / math.sqrt(err.size)


def test_natural_variance_attains_one_eighth():
    # |x_j| = 4/3 * 2**e is the worst case: the variance is exactly x_j**2 / 8.
    x = 4.0 / 3.0 * 2.0 ** np.arange(-5.0, 5.0) * np.array([1.0, -1.0] * 5)
    err = np.sum((_draws(compression.natural(), jnp.asarray(x)) - x) ** 2, axis=1)
    want = np.sum(x**2) / 8
    assert abs(err.mean() - want) <= Z_SCORE * err.std() / math.sqrt(err.size)


def test_top_k_keeps_the_k_largest_magnitudes():
    tree = _tree(seed=4)
    x = _flat(tree)
    for c, k in [(compression.top_k(5), 5), (compression.top_k(fraction=0.1), 2)]:
        got = _flat(c.compress(jax.random.key(0), tree))
        kept = np.flatnonzero(got)
        np.testing.assert_array_equal(np.sort(kept), np.sort(np.argsort(-np.abs(x))[:k]))
        np.testing.assert_array_equal(got[kept], x[kept])


def test_top_k_fraction_rounds_up_without_float_noise():
    # 0.1 * 30 is 3.0000000000000004 in floating point; k must be 3, not 4.
    assert compression.top_k(fraction=0.1).delta(30) == pytest.approx(0.1)
    assert compression.top_k(fraction=0.11).delta(30) == pytest.approx(4 / 30)
    assert compression.top_k(fraction=0.01).delta(30) == pytest.approx(1 / 30)


@pytest.mark.parametrize(("name", "scale"), [("rand_k", 20 / 3), ("rand_k_biased", 1.0)])
def test_rand_k_keeps_exactly_k(name, scale):
    x, samples = _samples(name)
    np.testing.assert_array_equal(np.count_nonzero(samples, axis=1), 3)
    np.testing.assert_allclose(samples, np.where(samples != 0, scale * x, 0.0), rtol=1e-14)
    # Every coordinate is kept about k/d of the time: the subset is uniform.
    freq = np.count_nonzero(samples, axis=0) / N_DRAWS
    np.testing.assert_allclose(freq, 3 / 20, atol=Z_SCORE * math.sqrt(0.15 * 0.85 / N_DRAWS))


@pytest.mark.parametrize(
    ("name", "levels", "norm"), [("qsgd_1", 1, "l2"), ("qsgd_4", 4, "l2"), ("qsgd_linf", 2, "linf")]
)
def test_qsgd_values_lie_on_the_grid(name, levels, norm):
    x, samples = _samples(name)
    scale = np.linalg.norm(x) if norm == "l2" else np.max(np.abs(x))
    grid = samples * levels / scale
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-9)
    assert np.all(np.abs(grid) <= levels + 1e-9)
    assert np.all(grid * np.sign(x) >= -1e-9)  # signs agree with x
    # Each entry rounds to one of its two neighbouring levels.
    np.testing.assert_array_less(np.abs(np.abs(grid) - levels * np.abs(x) / scale), 1.0 + 1e-9)


def test_natural_outputs_are_signed_powers_of_two():
    x = np.array([0.3, -1.7, 5.0, -0.001, 1e6, 2.0, -0.5, 0.0])
    out = _draws(compression.natural(), jnp.asarray(x), n=500)
    nz = out[:, :-1]
    log = np.log2(np.abs(nz))
    np.testing.assert_array_equal(log, np.round(log))
    np.testing.assert_array_equal(np.sign(nz), np.broadcast_to(np.sign(x[:-1]), nz.shape))
    low = np.floor(np.log2(np.abs(x[:-1])))
    assert np.all((log == low) | (log == low + 1))
    np.testing.assert_array_equal(out[:, 5], 2.0)  # powers of two are kept exactly
    np.testing.assert_array_equal(out[:, -1], 0.0)


def test_scaled_sign_is_mean_magnitude_times_sign():
    x = np.array([1.0, -3.0, 0.0, 2.0])
    got = compression.scaled_sign().compress(jax.random.key(0), jnp.asarray(x))
    np.testing.assert_allclose(got, 1.5 * np.array([1.0, -1.0, 1.0, 1.0]))


def test_bit_costs():
    tree = {"w": np.zeros((4, 5)), "b": np.zeros(10, np.float32)}  # d = 30
    d, log_d = 30, 5  # ceil(log2 30) = 5
    want64 = [
        (compression.identity(), 30 * 64),
        (compression.top_k(4), 4 * (64 + log_d)),
        (compression.top_k(fraction=0.1), 3 * (64 + log_d)),
        (compression.rand_k(4), 4 * (64 + log_d)),
        (compression.rand_k(4, shared_seed=True), 4 * 64),
        (compression.qsgd(1), d * (1 + 1) + 64),
        (compression.qsgd(4), d * (1 + 3) + 64),
        (compression.qsgd(7), d * (1 + 3) + 64),
        (compression.qsgd(2, norm="linf"), d * (1 + 2) + 64),
        (compression.scaled_sign(), d + 64),
        (compression.natural(), d * (1 + 11)),
        (compression.contractive(compression.qsgd(4)), d * (1 + 3) + 64),
    ]
    for c, want in want64:
        # The widest leaf (float64) sets the width of the flattened message.
        assert compression.message_bits(c, tree, agent_axis=False) == want, c.name
        assert c.bits(d, 64) == want, c.name
    assert compression.natural().bits(d) == 9 * d
    assert compression.top_k(4).bits(d) == 4 * (32 + log_d)
    assert compression.identity().bits(1) == 32
    assert compression.top_k(1).bits(1) == 32  # no index bits for d = 1
    block = {"w": np.zeros((16, 4, 5), np.float32), "b": np.zeros((16, 10), np.float32)}
    assert compression.message_bits(compression.scaled_sign(), block) == d + 32


# One operator per code path (the rest differ only in constants).
STRUCTURE = ["identity", "top_k", "rand_k", "qsgd_4", "qsgd_linf", "scaled_sign", "natural"]
STRUCTURE += ["contractive_qsgd"]


@pytest.mark.parametrize("name", STRUCTURE)
@pytest.mark.parametrize("dtypes", ["float32", "float64", "mixed"])
def test_structure_dtype_zero_and_determinism(name, dtypes):
    c = ALL[name]
    tree = _tree(seed=7, dtype=np.float32 if dtypes == "float32" else np.float64)
    if dtypes == "mixed":  # flattened in float64, handed back per leaf
        tree["w"] = tree["w"].astype(np.float32)
    key = jax.random.key(3)
    fn = jax.jit(c.compress)
    out = fn(key, tree)
    assert jax.tree.structure(out) == jax.tree.structure(tree)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(tree), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
    for got, again in zip(jax.tree.leaves(out), jax.tree.leaves(fn(key, tree)), strict=True):
        np.testing.assert_array_equal(got, again)
    zero = fn(key, jax.tree.map(np.zeros_like, tree))
    for leaf in jax.tree.leaves(zero):
        np.testing.assert_array_equal(leaf, 0.0)


def test_different_keys_give_different_draws():
    _, samples = _samples("rand_k")
    assert len({row.tobytes() for row in samples[:100]}) > 50


def _block_compress(compressor, tree, n_devices):
    agent_mesh = mesh.make_agent_mesh(16, n_devices)
    fn = jax.shard_map(
        lambda key, t: compression.compress_block(compressor, key, t),
        mesh=agent_mesh,
        in_specs=(jax.P(), jax.P(mesh.AGENT_AXIS)),
        out_specs=jax.P(mesh.AGENT_AXIS),
    )
    key = jax.device_put(jax.random.key(11), mesh.replicated(agent_mesh))
    return jax.device_get(jax.jit(fn)(key, mesh.shard_agents(tree, agent_mesh)))


@pytest.mark.parametrize("name", ["rand_k", "qsgd_4"])
def test_compress_block_independent_per_agent_and_device_count_invariant(name):
    c = UNBIASED[name]
    one = _tree(seed=9)
    # Every agent holds the same vector, so differences come only from the keys.
    tree = jax.tree.map(lambda leaf: np.broadcast_to(leaf, (16, *leaf.shape)).copy(), one)
    on8 = _block_compress(c, tree, 8)
    on1 = _block_compress(c, tree, 1)
    for a, b in zip(jax.tree.leaves(on8), jax.tree.leaves(on1), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = np.concatenate([leaf.reshape(16, -1) for leaf in jax.tree.leaves(on8)], axis=1)
    assert len({row.tobytes() for row in rows}) == 16
    # Agent i's draw is compress(fold_in(key, i), x_i).
    want = _flat(c.compress(jax.random.fold_in(jax.random.key(11), 5), one))
    np.testing.assert_array_equal(rows[5], want)


def test_make_compressor():
    c = compression.make_compressor("top-k", k=2)
    assert c.name == "top_k(k=2)" and c.delta(10) == 0.2
    assert compression.make_compressor("qsgd", levels=4).omega(16) == 1.0
    assert set(compression.COMPRESSORS) >= {"identity", "top_k", "rand_k", "qsgd", "natural"}
    with pytest.raises(ValueError, match="unknown compressor 'foo'.*top_k.*scaled_sign"):
        compression.make_compressor("foo")


def test_contractive_passes_biased_operators_through():
    c = compression.top_k(2)
    assert compression.contractive(c) is c


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: compression.top_k(0), "k must be an integer >= 1"),
        (lambda: compression.rand_k(-1), "k must be an integer >= 1"),
        (lambda: compression.top_k(2.5), "k must be an integer >= 1"),
        (lambda: compression.top_k(), "exactly one of k and fraction"),
        (lambda: compression.rand_k(2, fraction=0.5), "exactly one of k and fraction"),
        (lambda: compression.top_k(fraction=0.0), r"fraction must lie in \(0, 1\]"),
        (lambda: compression.rand_k(fraction=1.5), r"fraction must lie in \(0, 1\]"),
        (lambda: compression.qsgd(0), "levels must be an integer >= 1"),
        (lambda: compression.qsgd(2, norm="l1"), "norm must be"),
    ],
)
def test_invalid_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize("c", [compression.top_k(21), compression.rand_k(21)])
def test_k_larger_than_d_fails_at_trace_time(c):
    with pytest.raises(ValueError, match="k=21 exceeds the dimension d=20"):
        c.compress(jax.random.key(0), _tree())
    with pytest.raises(ValueError, match="k=21 exceeds the dimension d=20"):
        c.bits(20)


def test_invalid_bit_arguments():
    with pytest.raises(ValueError, match="IEEE float width"):
        compression.natural().bits(10, dtype_bits=8)
    with pytest.raises(ValueError, match="dtype_bits must be a positive integer"):
        compression.identity().bits(10, dtype_bits=0)
    with pytest.raises(ValueError, match="floating-point"):
        compression.qsgd(2).compress(jax.random.key(0), jnp.arange(4))


def test_rand_k_draws_a_uniform_subset_without_sorting_d():
    d, k = 7, 3
    c = compression.rand_k(k, unbiased=False)
    # No sort of d = 1000 keys (a permutation): a top-k, then a sort of k + 32 candidates.
    jaxpr = jax.make_jaxpr(c.compress)(jax.random.key(0), jnp.ones(1000))
    sorted_sizes = [
        v.aval.shape for e in jaxpr.eqns if e.primitive.name == "sort" for v in e.invars
    ]
    assert sorted_sizes == [(k + 32,)] * 3
    assert any(e.primitive.name == "top_k" for e in jaxpr.eqns)
    kept = _draws(c, {"x": np.arange(1.0, d + 1)}, seed=3) != 0  # (N_DRAWS, d)
    assert np.all(kept.sum(axis=1) == k)
    # Every coordinate kept with probability k/d, every pair with k(k-1)/(d(d-1)).
    for p_hat, p in [
        (kept.mean(axis=0), k / d),
        (
            (kept.T.astype(float) @ kept)[np.triu_indices(d, 1)] / N_DRAWS,
            k * (k - 1) / (d * (d - 1)),
        ),
    ]:
        np.testing.assert_array_less(np.abs(p_hat - p), Z_SCORE * math.sqrt(p * (1 - p) / N_DRAWS))
    # All C(7, 3) = 35 subsets equally likely: Pearson's chi-square, 34 degrees of freedom.
    codes = kept.astype(np.int64) @ (1 << np.arange(d))
    counts = np.bincount(codes, minlength=1 << d)[np.bincount(codes, minlength=1 << d) > 0]
    assert len(counts) == math.comb(d, k)
    expected = N_DRAWS / math.comb(d, k)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 34 + Z_SCORE * math.sqrt(2 * 34)  # mean 34, sd sqrt(68)
