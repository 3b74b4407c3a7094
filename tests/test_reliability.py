"""Resume after SIGKILL, divergence guard, damaged checkpoints, and bad inputs."""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import algos
from core import (
    checkpointing,
    comm,
    compression,
    directed,
    loop,
    mesh,
    metrics,
    partition,
    sampling,
    topology,
    weights,
)
from core.algorithm import map_over_agents
from launch import experiment, train
from launch.configs import quickstart
from models import objectives

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = [
    "--config=launch/configs/quickstart.py:runlocal",
    "--config.num_epochs=6",
    "--config.log_every=1",
    "--config.checkpoint_every=2",
    "--config.topologies=('ring',)",
    "--config.algorithms=('d_rr','centralized_rr')",
]


def _main(workdir, *extra, env=None):
    return subprocess.run(
        [sys.executable, "-m", "launch.main", *RUN, f"--workdir={workdir}", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in f]


def test_sigkilled_run_resumes_to_identical_metrics(tmp_path):
    straight = _main(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _main(tmp_path / "resumed", env={"DECENTJAX_TEST_KILL_AT_EPOCH": "3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints" / "ring__d_rr")) == [
        "0",
        "2",
        "history_0.json",
        "history_2.json",
    ]
    resumed = _main(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stdout and "at epoch 2" in resumed.stdout
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "straight")


def _d_rr_runner(config, parts):
    op, _ = experiment.mixing_operator(config, "ring")
    obj = experiment.objective(config)
    agent_mesh = mesh.make_agent_mesh(config.n_agents)
    m = parts["x"].shape[1]
    runner = loop.Runner(
        algos.d_rr(obj.loss, op, 1.0),
        sampling.reshuffle(m),
        agent_mesh,
        metrics.make_evaluator(obj.loss, op),
    )
    x0 = np.zeros((config.n_agents, parts["x"].shape[2]), np.float32)
    shard = mesh.shard_agents(parts, agent_mesh)
    return runner.init(mesh.shard_agents(x0, agent_mesh), shard, jax.random.key(0))


def test_divergence_stops_loudly_and_keeps_a_restorable_checkpoint(tmp_path):
    config = quickstart.get_config("runlocal")
    config.topologies = ("ring",)
    config.algorithms = ("d_rr",)
    config.step.schedule = "constant"
    config.step.constant = 1e6
    config.checkpoint_every = 1
    with pytest.raises(
        FloatingPointError,
        match=r"d-rr: metrics \[.*'loss'.*\] became "
        r"non-finite in epochs 1\.\.2; lower the step size",
    ):
        train.train_and_evaluate(config, str(tmp_path))
    directory = tmp_path / "checkpoints" / "ring__d_rr"
    ckpt = checkpointing.Checkpointer(str(directory))
    assert ckpt.latest_epoch() == 0  # The last good state: the start.
    data, _ = experiment.load_data(config)
    parts = experiment.split_over_agents(config, data)
    parts = {"x": parts["x"].astype(np.float32), "y": parts["y"]}
    state, epoch = ckpt.restore(_d_rr_runner(config, parts))
    assert epoch == 0 and np.all(np.isfinite(np.asarray(jax.device_get(state.params))))
    # The command line exits non-zero with the guard's message.
    result = _main(
        tmp_path / "cli", "--config.step.schedule=constant", "--config.step.constant=1e6"
    )
    assert result.returncode != 0 and "became non-finite in epochs" in result.stderr


def test_damaged_newest_checkpoint_falls_back_and_all_damaged_is_an_error(tmp_path):
    op = comm.gossip(weights.metropolis_hastings(topology.ring(8)))
    agent_mesh = mesh.make_agent_mesh(8, 8)
    obj = objectives.least_squares()
    data = {"x": np.ones((8, 4, 3)), "y": np.ones((8, 4))}
    shard = mesh.shard_agents(data, agent_mesh)
    runner = loop.Runner(
        algos.dsgd(obj.loss, op, 0.1),
        sampling.iid(4),
        agent_mesh,
        metrics.make_evaluator(obj.loss, op),
    )
    state = runner.init(mesh.shard_agents(np.zeros((8, 3)), agent_mesh), shard, jax.random.key(0))
    ckpt = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3)
    for epoch in (1, 2):
        state, _ = runner.run_epochs(state, shard, jax.random.key(0), epoch - 1, 1)
        ckpt.save(epoch, state)
        ckpt.wait_until_finished()
    like = runner.init(mesh.shard_agents(np.zeros((8, 3)), agent_mesh), shard, jax.random.key(0))

    def damage(epoch):
        for root, _, files in os.walk(tmp_path / str(epoch)):
            for name in files:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")

    damage(2)
    with pytest.warns(RuntimeWarning, match="checkpoint of epoch 2 .* is unreadable"):
        _, epoch = checkpointing.Checkpointer(str(tmp_path)).restore(like)
    assert epoch == 1
    damage(1)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="every checkpoint in"):
        checkpointing.Checkpointer(str(tmp_path)).restore(like)
    shutil.rmtree(tmp_path)


def _config(**changes):
    config = quickstart.get_config("runlocal")
    for key, value in changes.items():
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        with config.unlocked() if hasattr(config, "unlocked") else _nothing():
            node[last] = value
    return config


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


BAD_CONFIGS = [
    ({"algorithms": ("d_rr", "magic")}, "unknown algorithm 'magic'; valid:"),
    ({"topologies": ("hypercube",)}, "unknown topology 'hypercube'; valid:"),
    ({"weights": "heavy"}, "unknown weights 'heavy'; valid:"),
    ({"objective.name": "hinge"}, "unknown objective 'hinge'; valid:"),
    ({"data.partition": "random"}, "unknown partition 'random'; valid:"),
    ({"num_epochs": 0}, "n_agents, num_epochs and log_every must be >= 1"),
    ({"dtype": "bfloat16"}, "dtype must be 'float32' or 'float64', got 'bfloat16'"),
    ({"step.schedule": "cosine"}, "step.schedule must be 'constant', 'inverse_epoch' or"),
    ({"data.source": "kaggle:titanic"}, "unknown data source 'kaggle:titanic'"),
    ({"data.source": "sklearn:cifar"}, "cifar"),
    ({"n_agents": 2000}, "dataset has 1797 samples but n_agents=2000"),
    ({"algorithms": ("cedas@zip",)}, "names compressor 'zip', which config.compressors"),
    (
        {"plot_metric": "dist_to_opt", "objective.name": "nonconvex_logistic"},
        "needs x\\*, which is not computed for the nonconvex",
    ),
    ({"topologies": ("grid",), "n_agents": 12}, "square number of agents, got n_agents=12"),
    ({"objective.reg": -1.0}, "reg must be a non-negative number, got reg=-1.0"),
    ({"agent_map": "pmap"}, "agent_map must be one of \\['auto', 'vmap', 'map'\\], got 'pmap'"),
]


@pytest.mark.parametrize("changes, message", BAD_CONFIGS)
def test_bad_configs_fail_before_compilation_with_their_message(changes, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(_config(**changes), str(tmp_path))


BAD_CALLS = [
    (lambda: mesh.make_agent_mesh(12, 8), "n_agents=12 is not divisible by the device count 8"),
    (lambda: comm.gossip(np.full((4, 4), 0.3)), "row 0 of W sums to"),
    (lambda: comm.gossip(np.ones((3, 4)) / 4), "square"),
    (
        lambda: comm.gossip(
            weights.metropolis_hastings(np.ones((4, 4), bool) & ~np.eye(4, dtype=bool)) * 0
            + np.eye(4)
        ),
        "disconnected",
    ),
    (lambda: topology.erdos_renyi(16, 0.0, seed=0), "drew a disconnected graph"),
    (lambda: weights.uniform(topology.star(5)), "only on regular graphs"),
    (lambda: compression.top_k(0), "k"),
    (lambda: compression.qsgd(0), "levels"),
    (
        lambda: partition.partition_iid({"x": np.ones((3, 2))}, 5, seed=0),
        "dataset has 3 samples but n_agents=5",
    ),
    (
        lambda: partition.partition_dirichlet(
            {"x": np.ones((30, 2)), "y": np.zeros(30, int)}, 3, -1.0, seed=0
        ),
        "alpha",
    ),
    (lambda: map_over_agents(lambda p, b: 0.0, 0), "batch_size must be None or a positive int"),
    (lambda: map_over_agents("loss"), "loss_fn must be callable, got 'loss'"),
    (lambda: sampling.reshuffle(4, batch_size=5), "batch_size must be in \\[1, num_samples=4\\]"),
    (
        lambda: algos.nids(
            objectives.least_squares().loss,
            comm.gossip(weights.metropolis_hastings(topology.ring(4))),
            lambda k: 0.1,
        ),
        "nids takes a constant positive learning_rate",
    ),
    (
        lambda: algos.cedas(
            objectives.least_squares().loss,
            comm.gossip(weights.metropolis_hastings(topology.ring(4))),
            compression.top_k(1),
            0.1,
        ),
        "assumes an unbiased compressor",
    ),
    (
        lambda: algos.dsgd(
            objectives.least_squares().loss,
            comm.gossip(
                directed.row_stochastic(directed.unbalanced_example(4)), doubly_stochastic=False
            ),
            0.1,
        ),
        "dsgd: the gossip operator must hold a doubly stochastic W.*column 0 of W sums to",
    ),
    (
        lambda: algos.exact_diffusion(
            objectives.least_squares().loss, comm.gossip(weights.uniform(topology.ring(4))), 0.1
        ),
        "ed: .*lambda_min\\(W\\) = -0.333333 < 0. Pass weights.lazy",
    ),
    (
        lambda: algos.nids(
            objectives.least_squares().loss,
            comm.gossip(weights.uniform(topology.ring(4))),
            0.1,
            c=9.0,
        ),
        "nids: need 0 < c \\* learning_rate <= 1 / \\(1 - lambda_min\\(W\\)\\) = 0.75",
    ),
]


@pytest.mark.parametrize("call, message", BAD_CALLS)
def test_bad_library_inputs_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_directed_matrix_rejected_by_a_method_needing_doubly_stochastic_w():
    from core import directed

    r = directed.row_stochastic(directed.directed_ring(6))
    with pytest.raises(ValueError, match="column 0 of W sums to|not symmetric|sums to"):
        algos.dsgd(objectives.least_squares().loss, comm.gossip(r), 0.1)
