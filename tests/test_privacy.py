"""DP-SGD local steps: clipping, noise, reduction to the plain method, accounting, devices."""

import functools

import dp_accounting
import jax
import numpy as np
import pytest
from scipy import stats

from decentjax import algos
from decentjax.core import (
    comm,
    datasets,
    loop,
    mesh,
    metrics,
    partition,
    privacy,
    sampling,
    topology,
    weights,
)
from decentjax.models import objectives

N, M, D, B = 8, 12, 4, 4
LEVEL = 1e-3  # false-alarm probability of each statistical test
ORDERS = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0)


@functools.cache
def problem():
    data, _ = datasets.synthetic_logistic_regression(N * M, D, seed=0, dtype=np.float64)
    return partition.partition_iid(data, N, seed=0), objectives.logistic_regression(reg=0.1)


def one_agent():
    parts, obj = problem()
    return jax.tree.map(lambda a: a[0], parts), obj


def test_clipping_bounds_every_per_example_gradient():
    batch, obj = one_agent()
    params = np.linspace(-2.0, 2.0, D)
    raw, norms = privacy.clipped_gradients(obj.loss, params, batch, np.inf)
    clip = float(np.median(norms))  # half the examples are clipped
    clipped, same_norms = privacy.clipped_gradients(obj.loss, params, batch, clip)
    np.testing.assert_array_equal(norms, same_norms)
    after = np.linalg.norm(np.asarray(clipped), axis=1)
    eps = np.finfo(np.float64).eps
    assert np.all(after <= clip * (1 + 8 * eps))
    small = np.asarray(norms) <= clip
    assert 0 < small.sum() < M
    np.testing.assert_array_equal(np.asarray(clipped)[small], np.asarray(raw)[small])
    np.testing.assert_allclose(after[~small], clip, rtol=8 * eps)


def test_noise_has_the_stated_standard_deviation():
    """B (g~ - mean clipped) / (sigma C) over K keys and D coordinates is N(0, 1).

    Two-sided chi-square test of the variance (K D degrees of freedom) and a z-test
    of the mean, each at level LEVEL.
    """
    batch, obj = one_agent()
    params, clip, sigma, keys = np.full(D, 0.3), 0.5, 1.3, 2000
    clipped, _ = privacy.clipped_gradients(obj.loss, params, batch, clip)
    grads = jax.vmap(
        lambda k: privacy.private_gradient(
            obj.loss, params, batch, k, clip_norm=clip, noise_multiplier=sigma
        )
    )(jax.random.split(jax.random.key(0), keys))
    z = (np.asarray(grads) - np.asarray(clipped).mean(axis=0)) * M / (sigma * clip)
    dof = z.size
    ss = float(np.sum(z**2))
    assert stats.chi2.ppf(LEVEL / 2, dof) < ss < stats.chi2.ppf(1 - LEVEL / 2, dof), ss / dof
    assert abs(z.mean()) * np.sqrt(dof) < stats.norm.ppf(1 - LEVEL / 2)


def run(make, n_devices=1):
    """Per-agent params after one epoch (M / B steps) of a method on the problem."""
    parts, obj = problem()
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    data = mesh.shard_agents(parts, agent_mesh)
    runner = loop.Runner(
        make(obj.loss, op),
        sampling.without_replacement(M, B),
        agent_mesh,
        metrics.make_evaluator(obj.loss, op),
    )
    x0 = np.zeros((N, D))
    state = runner.init(mesh.shard_agents(x0, agent_mesh), data, jax.random.key(0))
    states = runner.trace_epoch(state, data, jax.random.key(1), 0)
    return np.asarray(jax.device_get(runner.algorithm.params(states)))[-1]


def private(factory, clip, sigma, **kwargs):
    def make(loss, op):
        dp_loss = privacy.dp_sgd(loss, clip_norm=clip, noise_multiplier=sigma)
        return algos.with_model(factory, dp_loss, op, **kwargs)

    return make


def test_no_noise_and_no_clipping_is_the_plain_method():
    plain = run(lambda loss, op: algos.dsgd(loss, op, learning_rate=0.5))
    dp = run(private(algos.dsgd, np.inf, 0.0, learning_rate=0.5))
    # Mean of per-example gradients vs the gradient of the mean: rounding only.
    np.testing.assert_allclose(dp, plain, rtol=1e3 * np.finfo(np.float64).eps, atol=1e-15)


def test_private_fedavg_is_the_same_on_one_and_eight_devices():
    make = private(algos.fedavg, 0.5, 1.0, learning_rate=0.5, local_steps=3)
    one, eight = run(make, 1), run(make, 8)
    np.testing.assert_allclose(one, eight, rtol=1e-12, atol=1e-14)
    assert np.ptp(one, axis=0).max() < 1e-14  # a round ended: every client holds x


def test_epsilon_is_dp_accounting_on_the_sampling_done():
    sampler, steps, sigma, delta = sampling.without_replacement(M, B), 300, 1.1, 1e-5
    ours = privacy.epsilon(sigma, sampler, steps, delta, orders=ORDERS)
    accountant = dp_accounting.rdp.RdpAccountant(
        orders=list(ORDERS), neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        M, B, dp_accounting.GaussianDpEvent(sigma / 2)
    )
    direct = accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    assert ours == direct.get_epsilon(delta)
    assert 0 < ours < privacy.epsilon(sigma / 2, sampler, steps, delta, orders=ORDERS)
    full = privacy.epsilon(sigma, sampling.full_batch(M), 10, delta, orders=ORDERS)
    accountant = dp_accounting.rdp.RdpAccountant(
        orders=list(ORDERS), neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    gaussian = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma / 2), 10)
    assert full == accountant.compose(gaussian).get_epsilon(delta)
    assert privacy.epsilon(0.0, sampler, steps, delta) == np.inf
    with pytest.raises(ValueError, match="without_replacement"):
        privacy.epsilon(sigma, sampling.reshuffle(M, B), steps, delta)


def test_bad_privacy_parameters_are_clear_errors():
    _, obj = one_agent()
    with pytest.raises(ValueError, match="clip_norm"):
        privacy.dp_sgd(obj.loss, clip_norm=0.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="finite clip_norm"):
        privacy.dp_sgd(obj.loss, clip_norm=np.inf, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        privacy.dp_sgd(obj.loss, clip_norm=1.0, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="delta"):
        privacy.epsilon(1.0, sampling.full_batch(M), 3, 1.5)
    with pytest.raises(ValueError, match="clip_norm must be a real number, got None"):
        privacy.dp_sgd(obj.loss, clip_norm=None, noise_multiplier=1.0)


def test_methods_whose_noise_would_not_protect_are_refused():
    # FedKSeed only evaluates the loss (no gradient to noise); ED-RR's same-sample
    # difference takes two gradients on one key, so the noise cancels.
    parts, obj = problem()
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    dp = dict(clip_norm=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="fedkseed takes no gradients"):
        algos.private(algos.fedkseed, obj.loss, op, 0.1, local_steps=1, num_seeds=4, **dp)
    with pytest.raises(ValueError, match="same_sample_difference=True .* cancels the DP noise"):
        algos.private(algos.ed_rr, obj.loss, op, 0.1, same_sample_difference=True, **dp)


def test_private_config_names_build_the_private_method_and_report_epsilon():
    from decentjax.launch import experiment, private_runs
    from decentjax.launch.configs import private

    config = private.get_config(None)
    experiment.validate(config)
    assert experiment.sampler_of(config, "dp_fedavg@s8") == ("without_replacement", False)
    assert experiment.sampler_of(config, "dp_dsgd@s8") == ("without_replacement", True)
    parts, obj = problem()
    op = comm.gossip(weights.metropolis_hastings(topology.ring(N)))
    algorithm = experiment.build_algorithm(config, "dp_dsgd@s8", obj.loss, op, 0.5)
    assert algorithm.name == "dp-dsgd"
    sampler = sampling.without_replacement(M, B)
    history = [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}]
    private_runs.annotate(config, "dp_dsgd@s8", sampler, history)
    spent = [
        privacy.epsilon(8.0, sampler, t * M // B, 1e-5, orders=private_runs.ORDERS) for t in (1, 2)
    ]
    assert [row["epsilon"] for row in history] == [0.0, *spent]
    config.algorithms = ("dp_dsgd@s3",)
    with pytest.raises(ValueError, match="noise_multipliers"):
        experiment.validate(config)
