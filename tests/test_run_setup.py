"""A run's set-up: independent keys, initial params built sharded, compile vs run time."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import comm, loop, mesh, metrics, sampling, topology, weights
from decentjax.launch import train
from decentjax.launch.configs import quickstart
from decentjax.models import nets, objectives


def _key_data(key):
    return tuple(np.asarray(jax.random.key_data(key)).ravel())


def test_run_keys_are_distinct_streams():
    keys = train.run_keys(0)
    data = {name: _key_data(k) for name, k in keys._asdict().items()}
    assert len(set(data.values())) == 3
    assert _key_data(jax.random.key(0)) not in data.values()  # The old shared key.
    assert _key_data(train.run_keys(1).train) != data["train"]  # Seeded.


def test_train_uses_one_key_per_purpose_and_builds_x0_sharded(tmp_path, monkeypatch):
    seen = {}
    runner_init, loop_train = loop.Runner.init, loop.train

    def spy_init(self, params, data, key):
        seen["params"], seen["state_key"] = params, key
        return runner_init(self, params, data, key)

    def spy_train(runner, state, data, key, *args, **kwargs):
        seen["train_key"] = key
        return loop_train(runner, state, data, key, *args, **kwargs)

    monkeypatch.setattr(loop.Runner, "init", spy_init)
    monkeypatch.setattr(loop, "train", spy_train)
    config = quickstart.get_config("runlocal")
    config.num_epochs, config.log_every, config.checkpoint_every = 1, 1, 0
    config.topologies, config.algorithms = ("ring",), ("d_rr",)
    train.train_and_evaluate(config, str(tmp_path))
    keys = train.run_keys(config.seed)
    assert _key_data(seen["state_key"]) == _key_data(keys.state)
    assert _key_data(seen["train_key"]) == _key_data(keys.train)
    # x0 ~ N(0, I/d) from the model key, the same for every agent, sharded on agents.
    params = seen["params"]
    assert params.sharding.is_equivalent_to(mesh.agent_sharding(params.sharding.mesh), 2)
    d = params.shape[1]
    want = np.asarray(jax.random.normal(keys.model, (d,), jnp.float32)) / math.sqrt(d)
    np.testing.assert_allclose(np.asarray(params), np.broadcast_to(want, params.shape), rtol=1e-6)


def test_agent_init_builds_the_same_params_per_agent_on_device():
    agent_mesh = mesh.make_agent_mesh(16)  # 8 devices, 2 agents each.
    net = nets.mlp(12, (5,), 3, param_dtype=jnp.float64)
    traced = []

    def init(key):
        traced.append(isinstance(key, jax.core.Tracer))  # Evaluated in the compiled program.
        return net.init(key)

    params = mesh.agent_init(init, agent_mesh, 16)(jax.random.key(3))
    assert traced == [True]
    one = net.init(jax.random.key(3))
    for leaf, ref in zip(jax.tree.leaves(params), jax.tree.leaves(one), strict=True):
        assert leaf.shape == (16, *ref.shape)
        assert leaf.sharding.is_equivalent_to(mesh.agent_sharding(agent_mesh), leaf.ndim)
        # Each device holds only its own two agents.
        assert {s.data.shape for s in leaf.addressable_shards} == {(2, *ref.shape)}
        np.testing.assert_array_equal(np.asarray(leaf), np.broadcast_to(ref, leaf.shape))


def _runner():
    op = comm.gossip(weights.metropolis_hastings(topology.ring(8)))
    obj = objectives.least_squares(reg=0.1)
    agent_mesh = mesh.make_agent_mesh(8)
    runner = loop.Runner(
        algos.dsgd(obj.loss, op, 0.1),
        sampling.reshuffle(4),
        agent_mesh,
        metrics.make_evaluator(obj.loss, op),
    )
    rng = np.random.default_rng(0)
    data = mesh.shard_agents(
        {"x": rng.normal(size=(8, 4, 3)), "y": rng.normal(size=(8, 4))}, agent_mesh
    )
    state = runner.init(mesh.shard_agents(np.zeros((8, 3)), agent_mesh), data, jax.random.key(0))
    return runner, state, data


def test_compile_time_is_reported_apart_from_run_time():
    runner, state, data = _runner()
    key = jax.random.key(1)
    # Chunks of 2, 2, 1 epochs: two programs, each compiled once.
    _, history = loop.train(runner, state, data, key, 5, log_every=2)
    compile_s = [row["compile_seconds"] for row in history]
    assert compile_s[0] == 0.0 and compile_s[1] > 0.0
    assert compile_s[1] == compile_s[2] == compile_s[3] == compile_s[4] < compile_s[5]
    assert runner.compile_epochs(state, data, key, 2) == 0.0  # Cached.
    run_s = [row["seconds"] for row in history]
    assert run_s == sorted(run_s) and run_s[-1] > 0.0
    table = train._format_table(
        [
            {
                "topology": "ring",
                "algorithm": "dsgd",
                "dist_to_opt": 1.0,
                "rate": 0.0,
                "loss": 1.0,
                "consensus": 0.0,
                "bytes_sent": 0.0,
                **history[-1],
            }
        ],
        "dist_to_opt",
        None,
    )
    header, _, line = table.splitlines()
    assert header.endswith("compile s   run s")
    assert line.split()[-2:] == [f"{compile_s[-1]:.2f}", f"{run_s[-1]:.2f}"]


def test_state_of_another_agent_count_fails_at_trace_time_naming_the_leaf():
    runner, _, data = _runner()  # 8 agents, one per device.
    other = mesh.make_agent_mesh(16, 8)
    state16 = runner.init(
        mesh.shard_agents(np.zeros((16, 3)), other),
        mesh.shard_agents({"x": np.zeros((16, 4, 3)), "y": np.zeros((16, 4))}, other),
        jax.random.key(0),
    )
    with pytest.raises(
        ValueError,
        match=r"state leaf '\.params' \(shape \(2, 3\)\) has leading size 2 per device, but "
        r"the data holds a block of 1 agents per device \(8 agents on 8 devices\)",
    ):
        runner.run_epochs(state16, data, jax.random.key(0), 0, 1)
