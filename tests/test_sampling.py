"""Samplers and schedules (the reference solver: tests/test_optimum.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax.core import sampling, schedules


def test_reshuffle_visits_every_sample_once_per_epoch():
    s = sampling.reshuffle(12, batch_size=3)
    assert s.steps_per_epoch == 4
    a = np.asarray(s.indices(jax.random.key(0)))
    b = np.asarray(s.indices(jax.random.key(1)))
    assert a.shape == (4, 3)
    np.testing.assert_array_equal(np.sort(a.ravel()), np.arange(12))
    np.testing.assert_array_equal(np.sort(b.ravel()), np.arange(12))
    assert not np.array_equal(a, b)  # A fresh order each epoch.


def test_reshuffle_drops_remainder_and_iid_and_full():
    s = sampling.reshuffle(10, batch_size=3)
    idx = np.asarray(s.indices(jax.random.key(0)))
    assert idx.shape == (3, 3) and len(set(idx.ravel())) == 9
    it = sampling.iid(10, batch_size=2)
    idx = np.asarray(it.indices(jax.random.key(0)))
    assert idx.shape == (5, 2) and idx.min() >= 0 and idx.max() < 10
    full = sampling.full_batch(7)
    np.testing.assert_array_equal(np.asarray(full.indices(jax.random.key(0))), [np.arange(7)])


def test_sampler_errors():
    with pytest.raises(ValueError, match="batch_size must be in"):
        sampling.reshuffle(4, batch_size=5)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        sampling.iid(0)
    with pytest.raises(ValueError, match="unknown sampler 'rr'"):
        sampling.make_sampler("rr", 10)


def test_epochwise_schedules():
    sched = schedules.inverse_epoch(1.0, 50.0, 400.0, steps_per_epoch=10)
    assert float(sched(jnp.int32(9))) == pytest.approx(1 / 400)
    assert float(sched(jnp.int32(10))) == pytest.approx(1 / 450)
    pw = schedules.piecewise_epoch([1 / 50, 1 / 250, 1 / 1000], [20, 75], steps_per_epoch=5)
    got = [float(pw(jnp.int32(5 * t))) for t in (0, 19, 20, 74, 75, 200)]
    np.testing.assert_allclose(got, [1 / 50, 1 / 50, 1 / 250, 1 / 250, 1 / 1000, 1 / 1000])
    with pytest.raises(ValueError, match="len"):
        schedules.piecewise_epoch([1.0], [3], steps_per_epoch=1)
