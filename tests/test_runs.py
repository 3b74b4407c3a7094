"""Seeds and sweeps in one compiled program (core.runs) equal separate runs."""

import functools
import math

import jax
import numpy as np
import pytest

from decentjax.algos import d_rr, dsgd
from decentjax.core import (
    comm,
    datasets,
    loop,
    mesh,
    metrics,
    partition,
    runs,
    sampling,
    schedules,
    topology,
    weights,
)
from decentjax.models import objectives

N, M, D = 8, 8, 4
EPOCHS = 2  # one chunk of log_every = 2: one compilation per program
EPS = np.finfo(np.float64).eps


@functools.cache
def problem():
    data, _ = datasets.synthetic_logistic_regression(N * M, D, seed=0, dtype=np.float64)
    parts = partition.partition_label_sorted(datasets.normalize_rows(data), N)
    obj = objectives.logistic_regression(reg=0.2)
    op = comm.gossip(weights.lazy(weights.metropolis_hastings(topology.ring(N))))
    return parts, obj, op


def init(key):
    return jax.random.normal(key, (D,), np.float64) / math.sqrt(D)


def keys_of(seed):
    root = jax.random.key(seed)
    return jax.random.fold_in(root, 0), jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)


def separate(make_algorithm, sampler, seeds):
    """Runs one by one the ordinary way (core.loop.Runner): [(history, final params)]."""
    parts, obj, op = problem()
    agent_mesh = mesh.make_agent_mesh(N, 8)
    data = mesh.shard_agents(parts, agent_mesh)
    algorithm = make_algorithm(obj.loss, op)
    runner = loop.Runner(algorithm, sampler, agent_mesh, metrics.make_evaluator(obj.loss, op))
    out = []
    for seed in seeds:
        model_key, state_key, train_key = keys_of(seed)
        state = runner.init(mesh.agent_init(init, agent_mesh, N)(model_key), data, state_key)
        state, history = loop.train(runner, state, data, train_key, EPOCHS, log_every=2)
        out.append((history, np.asarray(jax.device_get(algorithm.params(state)))))
    return out


def together(build, sampler, seeds, hyper, n_devices=8):
    """All runs in one RunsRunner: per-run histories and final params (R, N, D)."""
    parts, obj, op = problem()
    agent_mesh = mesh.make_agent_mesh(N, n_devices)
    data = mesh.shard_agents(parts, agent_mesh)
    evaluate = metrics.make_evaluator(obj.loss, op)
    runner = runs.RunsRunner(
        lambda h: build(obj.loss, op, h), sampler, agent_mesh, evaluate, hyper, len(seeds)
    )
    per_seed = zip(*map(keys_of, seeds), strict=True)
    model_keys, state_keys, train_keys = (jax.numpy.stack(k) for k in per_seed)
    params = runs.runs_init(init, agent_mesh, N)(model_keys)
    state = runner.init(params, data, state_keys)
    state, histories, _ = runs.train_runs(runner, state, data, train_keys, EPOCHS, log_every=2)
    return histories, np.asarray(jax.device_get(runner.algorithm.params(state)))


# Rounding only: a few ulps per step (the vmapped program may fuse differently).
RTOL = 64 * EPOCHS * M * EPS


def assert_same_run(history_a, params_a, history_b, params_b):
    np.testing.assert_allclose(params_a, params_b, rtol=RTOL, atol=RTOL)
    for row_a, row_b in zip(history_a, history_b, strict=True):
        for key in ("loss", "consensus", "grad_norm_sq", "bytes_sent"):
            np.testing.assert_allclose(row_a[key], row_b[key], rtol=RTOL, atol=RTOL, err_msg=key)


def test_four_seeds_in_one_program_equal_four_runs():
    # D-RR: every seed draws its own x0, its own per-agent sample orders.
    seeds = [0, 1, 2, 3]
    make_algorithm = functools.partial(d_rr, learning_rate=0.05)
    sampler = sampling.reshuffle(M)
    histories, params = together(lambda loss, op, h: make_algorithm(loss, op), sampler, seeds, {})
    for r, (history, want) in enumerate(separate(make_algorithm, sampler, seeds)):
        assert_same_run(histories[r], params[r], history, want)
    assert len({h[-1]["loss"] for h in histories}) == len(seeds)  # the seeds do differ


def test_step_size_sweep_equals_separate_runs():
    base = schedules.inverse_epoch(1.0, 5.0, 20.0, M)
    scales = np.array([0.5, 1.0, 2.0])

    def build(loss, op, hyper):
        return dsgd(loss, op, schedules.scaled(base, hyper["lr_scale"]))

    histories, params = together(build, sampling.iid(M), [0, 0, 0], {"lr_scale": scales})
    for r, scale in enumerate(scales):
        make = functools.partial(dsgd, learning_rate=schedules.scaled(base, float(scale)))
        [(history, want)] = separate(make, sampling.iid(M), [0])
        assert_same_run(histories[r], params[r], history, want)
    assert histories[0][-1]["loss"] != histories[2][-1]["loss"]


def test_runs_on_one_and_eight_devices_agree():
    def build(loss, op, hyper):
        return dsgd(loss, op, schedules.scaled(0.05, hyper["lr_scale"]))

    hyper = {"lr_scale": np.array([1.0, 2.0])}
    one = together(build, sampling.iid(M), [0, 1], hyper, n_devices=1)
    eight = together(build, sampling.iid(M), [0, 1], hyper, n_devices=8)
    for r in range(2):
        assert_same_run(one[0][r], one[1][r], eight[0][r], eight[1][r])


def test_bad_runs_input_raises_before_compiling():
    parts, obj, op = problem()
    agent_mesh = mesh.make_agent_mesh(N, 8)
    evaluate = metrics.make_evaluator(obj.loss, op)
    with pytest.raises(ValueError, match=r"'lr_scale' must hold one finite value per run"):
        runs.RunsRunner(
            lambda h: dsgd(obj.loss, op, 0.1),
            sampling.iid(M),
            agent_mesh,
            evaluate,
            {"lr_scale": [1.0, 2.0]},
            3,
        )
    runner = runs.RunsRunner(
        lambda h: dsgd(obj.loss, op, 0.1), sampling.iid(M), agent_mesh, evaluate, {}, 3
    )
    params = runs.runs_init(init, agent_mesh, N)(jax.random.split(jax.random.key(0), 2))
    with pytest.raises(ValueError, match="a runner of 3 runs needs"):
        runner.init(
            params, mesh.shard_agents(parts, agent_mesh), jax.random.split(jax.random.key(0), 2)
        )


def test_trace_epoch_of_the_runs_equals_each_run_traced():
    parts, obj, op = problem()
    agent_mesh = mesh.make_agent_mesh(N, 8)
    data = mesh.shard_agents(parts, agent_mesh)
    evaluate = metrics.make_evaluator(obj.loss, op)
    make = functools.partial(dsgd, obj.loss, op, 0.05)
    runner = runs.RunsRunner(lambda h: make(), sampling.iid(M), agent_mesh, evaluate, {}, 2)
    keys = jax.random.split(jax.random.key(5), 2)
    params = runs.runs_init(init, agent_mesh, N)(keys)
    traced = jax.device_get(runner.trace_epoch(runner.init(params, data, keys), data, keys, 1))
    single = loop.Runner(make(), sampling.iid(M), agent_mesh, evaluate)
    for r in range(2):
        state = single.init(mesh.agent_init(init, agent_mesh, N)(keys[r]), data, keys[r])
        want = jax.device_get(single.trace_epoch(state, data, keys[r], 1))
        assert traced.params.shape == (2, M, N, D)
        np.testing.assert_allclose(traced.params[r], want.params, rtol=RTOL, atol=RTOL)
