"""Resume after SIGKILL, divergence guard, damaged checkpoints, and bad inputs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from decentjax import algos
from decentjax.core import (
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
from decentjax.core.algorithm import map_over_agents
from decentjax.launch import experiment, train
from decentjax.launch.configs import quickstart
from decentjax.models import nets, objectives

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = [
    "--config=launch/configs/quickstart.py:runlocal",
    "--config.num_epochs=6",
    "--config.log_every=1",
    "--config.checkpoint_every=2",
    "--config.topologies=('ring',)",
    "--config.algorithms=('d_rr','centralized_rr')",
]


def _main(workdir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "decentjax.launch.main", *RUN, f"--workdir={workdir}", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        timings = ("seconds", "compile_seconds")
        return [{k: v for k, v in json.loads(line).items() if k not in timings} for line in f]


def _kill_at_checkpoint(workdir, run, epoch, timeout=600.0):
    """Starts the run, SIGKILLs it from outside once ``run`` has a complete checkpoint
    of ``epoch``, and returns the epochs whose checkpoints are complete then.

    Orbax writes a checkpoint under a temporary name and renames it to ``<epoch>``
    when it is complete (the run writes ``history_<epoch>.json`` before), so the
    folder's appearance is the signal. Polls without assuming any speed.
    """
    directory = os.path.join(workdir, "checkpoints", run)
    os.makedirs(workdir)
    with open(os.path.join(workdir, "log.txt"), "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "decentjax.launch.main", *RUN, f"--workdir={workdir}"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        try:
            while not os.path.isdir(os.path.join(directory, str(epoch))):
                assert proc.poll() is None, f"the run ended (rc {proc.returncode}) first"
                assert time.monotonic() < deadline, f"no checkpoint {epoch} in {timeout} s"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(workdir, "summary.txt")), "killed after the end"
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def test_sigkilled_run_resumes_to_identical_metrics(tmp_path):
    straight = _main(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    saved = _kill_at_checkpoint(str(tmp_path / "resumed"), "ring__d_rr", 2)
    assert saved[:2] == [0, 2], saved
    resumed = _main(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"ring__d_rr at epoch {saved[-1]}" in resumed.stdout
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


def _with(shape, index, value, dtype=np.float64):
    """``np.ones(shape)`` (or zeros for integer labels) with one entry replaced."""
    a = np.ones(shape, dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
    a[index] = value
    return a


BAD_DATA = [
    (
        lambda: mesh.shard_agents(
            {"x": _with((8, 4, 3), (2, 3, 1), np.nan), "y": np.zeros((8, 4))},
            mesh.make_agent_mesh(8),
        ),
        r"data\['x'\] holds nan at index \(2, 3, 1\) \(agent 2, sample 3; 1 non-finite",
    ),
    (
        lambda: mesh.shard_agents({"w": _with((8, 3), (5, 0), -np.inf)}, mesh.make_agent_mesh(8)),
        r"data\['w'\] holds -inf at index \(5, 0\) \(agent 5, sample 0",
    ),
    (
        lambda: objectives.logistic_regression(reg=0.1).check_data(
            {"x": np.ones((4, 5, 3)), "y": _with((4, 5), (1, 3), 2, np.int32)}
        ),
        r"labels must be 0 or 1 .*got 2 at agent 1, sample 3 \(1 bad labels",
    ),
    (
        lambda: objectives.softmax_cross_entropy(lambda p, x: x @ p).check_data(
            {"x": np.ones((4, 5, 3)), "y": _with((4, 5), (0, 2), -1, np.int32)}
        ),
        r"labels must be class indices >= 0, got -1 at agent 0, sample 2",
    ),
    (  # y >= C: optax would score it against no logit, silently.
        lambda: objectives.softmax_cross_entropy(lambda p, x: x @ p, num_classes=3).check_data(
            {"x": np.ones((4, 5, 3)), "y": _with((4, 5), (1, 4), 3, np.int32)}
        ),
        r"labels must be class indices in 0\.\.2 \(num_classes=3\), got 3 at agent 1, sample 4",
    ),
    (  # launch.train's path: C from the training labels, checked on the test split too.
        lambda: experiment.objective(
            ml_collections.ConfigDict({"objective": {"name": "softmax", "reg": 0.0}}),
            nets.linear(3, 3),
            num_classes=3,
        ).check_data({"x": np.ones((4, 2, 3)), "y": _with((4, 2), (3, 1), 7, np.int32)}),
        r"labels must be class indices in 0\.\.2 \(num_classes=3\), got 7 at agent 3, sample 1",
    ),
    (  # The loss checks the logits against num_classes at trace time.
        lambda: jax.eval_shape(
            objectives.softmax_cross_entropy(lambda p, x: x @ p, num_classes=4).loss,
            np.zeros((3, 3)),
            {"x": np.ones((5, 3)), "y": np.zeros(5, np.int32)},
        ),
        r"apply_fn must return logits of shape \(5, 4\) .* got shape \(5, 3\)",
    ),
    (
        lambda: objectives.logistic_regression(reg=0.1).check_data({"x": np.ones((4, 5, 3))}),
        r"missing key 'y': the objective needs keys \['x', 'y'\], got keys \['x'\]",
    ),
    (  # The loss itself, at trace time (before compiling), instead of a bare KeyError.
        lambda: jax.eval_shape(
            objectives.least_squares().loss, np.zeros(3), {"x": np.ones((4, 3)), "z": 0}
        ),
        r"missing key 'y': the objective needs keys \['x', 'y'\], got keys \['x', 'z'\]",
    ),
]


def test_softmax_labels_up_to_num_classes_minus_one_pass():
    objective = objectives.softmax_cross_entropy(lambda p, x: x @ p, num_classes=3)
    objective.check_data({"x": np.ones((2, 3, 3)), "y": np.array([[0, 1, 2], [2, 2, 0]])})


@pytest.mark.parametrize("call, message", BAD_CALLS + BAD_DATA)
def test_bad_library_inputs_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_directed_matrix_rejected_by_a_method_needing_doubly_stochastic_w():
    from decentjax.core import directed

    r = directed.row_stochastic(directed.directed_ring(6))
    with pytest.raises(ValueError, match="column 0 of W sums to|not symmetric|sums to"):
        algos.dsgd(objectives.least_squares().loss, comm.gossip(r), 0.1)


@pytest.mark.parametrize(
    "index, value, message",
    [
        # Sample 5 is the first of class 0: first after the label sort.
        ((5, 10), np.nan, r"data\['x'\] holds nan at index \(0, 0, 10\) \(agent 0, sample 0"),
        # 1797 = 3 x 599 samples: nothing is dropped, label 2 sorts last.
        ((5,), 2, r"labels must be 0 or 1 .*got 2 at agent 2, sample 598 \(1 bad"),
    ],
)
def test_bad_data_fails_before_compiling(index, value, message, tmp_path, monkeypatch):
    load = experiment.load_data

    def broken(config):
        data, description = load(config)
        data = {k: np.array(v) for k, v in data.items()}
        data["x" if len(index) == 2 else "y"][index] = value
        return data, description

    monkeypatch.setattr(experiment, "load_data", broken)
    monkeypatch.setattr(loop, "Runner", None)  # Nothing may be built, let alone compiled.
    config = _config(n_agents=3, topologies=("ring",), algorithms=("d_rr",))
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, str(tmp_path))
