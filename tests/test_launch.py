"""The quickstart experiment end to end, and config errors before any compilation."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from launch_checks import (
    assert_consistent_with_optimum,
    assert_federated_tracks_gradient_descent,
    assert_same_runs,
    assert_tracks_gradient_descent,
)

from decentjax.core import topology, weights
from decentjax.launch import experiment, rates, train
from decentjax.launch.configs import quickstart

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_runs_end_to_end(tmp_path):
    config = quickstart.get_config("runlocal")
    out = train.train_and_evaluate(config, str(tmp_path))
    names = {(t, a) for t, a in out["histories"]}
    assert names == {
        ("exponential", "d_rr"),
        ("exponential", "dsgd"),
        ("centralized", "centralized_rr"),
        ("ring", "d_rr"),
        ("ring", "dsgd"),
    }
    for history in out["histories"].values():
        assert len(history) == config.num_epochs + 1
    assert_tracks_gradient_descent(config, out)
    assert_consistent_with_optimum(config, out)
    with open(out["files"]["metrics"]) as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 5 * (config.num_epochs + 1)
    assert {"epoch", "loss", "dist_to_opt", "consensus", "accuracy", "bytes_sent"} <= set(lines[0])
    assert os.path.getsize(out["files"]["plot"]) > 10_000
    with open(out["files"]["summary"]) as f:
        assert "d_rr" in f.read()


def test_convergence_check_fails_for_a_method_at_half_speed(tmp_path, monkeypatch):
    config = quickstart.get_config("runlocal")
    config.topologies = ("ring",)
    config.algorithms = ("d_rr",)
    config.n_devices = 1
    real = experiment.learning_rate

    def half(config, steps_per_epoch):
        schedule = real(config, steps_per_epoch)
        return lambda count: 0.5 * schedule(count)

    monkeypatch.setattr(experiment, "learning_rate", half)  # The run's, not the reference's.
    out = train.train_and_evaluate(config, str(tmp_path))
    assert_consistent_with_optimum(config, out)  # Any iterate satisfies the sandwich...
    with pytest.raises(AssertionError, match="d_rr"):
        assert_tracks_gradient_descent(config, out)  # ...but not the reference's pace.


def test_unknown_names_and_too_small_datasets_are_rejected(tmp_path):
    config = quickstart.get_config("runlocal")
    config.algorithms = ("d_rr", "gossip_magic")
    with pytest.raises(ValueError, match="unknown algorithm 'gossip_magic'; valid:"):
        train.train_and_evaluate(config, str(tmp_path))
    config = quickstart.get_config("runlocal")
    config.data.source = "sklearn:iris"  # 150 samples.
    config.n_agents = 160
    with pytest.raises(ValueError, match="dataset has 150 samples but n_agents=160"):
        train.train_and_evaluate(config, str(tmp_path))
    config = quickstart.get_config("runlocal")
    config.topologies = ("grid",)
    config.n_agents = 12
    with pytest.raises(ValueError, match="square number of agents, got n_agents=12"):
        experiment.mixing_operator(config, "grid")


def test_main_rejects_unknown_config_key(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "decentjax.launch.main",
            "--config=launch/configs/quickstart.py:runlocal",
            f"--workdir={tmp_path}",
            "--config.learning_rat=0.1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "learning_rat" in result.stderr


@pytest.mark.parametrize("name", ["rr_logistic", "rr_nonconvex"])
def test_reproduction_configs_run_and_fall_back_to_embedded_data(name, tmp_path, monkeypatch):
    module = importlib.import_module(f"decentjax.launch.configs.{name}")
    config = module.get_config("runlocal")
    config.topologies = ("ring",)  # One graph keeps the test short; all methods run.
    config.n_devices = 1  # 1 vs 8 devices is tested elsewhere; fake devices are slow here.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds_here"))
    out = train.train_and_evaluate(config, str(tmp_path))
    assert {a for _, a in out["histories"]} == set(config.algorithms)
    assert_tracks_gradient_descent(config, out)
    if name == "rr_nonconvex":
        assert out["x_star"] is None
    else:
        assert_consistent_with_optimum(config, out)


def test_tfds_source_is_used_when_prepared(tmp_path):
    config = importlib.import_module("decentjax.launch.configs.rr_logistic").get_config("runlocal")
    config.data.max_examples = 400
    with tfds.testing.mock_data(num_examples=400):
        data, description = experiment.load_data(config)
    assert description.startswith("tfds:mnist, 2 vs 6") and "fallback" not in description
    assert data["x"].shape[1] == 28 * 28 + 1  # Flattened pixels plus the bias feature.
    assert set(np.unique(data["y"])) <= {0, 1}
    np.testing.assert_allclose(np.linalg.norm(data["x"][:, :-1], axis=1), 1.0, rtol=1e-5)


def test_fit_rate_recovers_power_laws():
    epochs = np.arange(0, 201)
    for p in (1.0, 2.0, 2.0 / 3.0):
        values = 5.0 * np.maximum(epochs, 1.0) ** -p
        assert rates.fit_rate(epochs, values) == pytest.approx(-p, abs=1e-9)
    assert np.isnan(rates.fit_rate([0, 1], [1.0, 0.5]))
    history = [{"epoch": e, "err": 3.0 / e**2 if e else 1.0} for e in range(50)]
    assert rates.history_rate(history, "err") == pytest.approx(-2.0)


def test_compressed_config_counts_bits_and_reports_bytes_to_target(tmp_path):
    config = importlib.import_module("decentjax.launch.configs.compressed").get_config("runlocal")
    config.topologies = ("ring",)
    config.algorithms = ("dsgd", "cedas@qsgd2", "choco_sgd@rand30")
    config.n_devices = 1
    config.target_error = 10.0  # Reached at epoch 0: bytes to target is then 0.
    out = train.train_and_evaluate(config, str(tmp_path))
    sent = {a: h[-1]["bytes_sent"] for (_, a), h in out["histories"].items()}
    m, d = 112, 65
    assert sent["dsgd"] == config.num_epochs * m * d * 8  # float64 vectors.
    assert sent["cedas@qsgd2"] == config.num_epochs * m * (d * 3 + 64) / 8
    assert sent["choco_sgd@rand30"] == config.num_epochs * m * 20 * (64 + 7) / 8
    assert all(row["bytes_to_target"] == 0 for row in out["summary"])
    assert os.path.getsize(out["files"]["plot_bytes"]) > 10_000


def test_compressed_config_rejects_unknown_compressor(tmp_path):
    config = importlib.import_module("decentjax.launch.configs.compressed").get_config("runlocal")
    config.algorithms = ("cedas@zip",)
    with pytest.raises(ValueError, match="names compressor 'zip', which config.compressors"):
        train.train_and_evaluate(config, str(tmp_path))


def test_federated_config_runs_with_models_test_split_and_round_budget(tmp_path):
    config = importlib.import_module("decentjax.launch.configs.federated").get_config(
        "alpha=0.5,runlocal"
    )
    config.model.name = "mlp"
    config.model.hidden = (16,)
    config.report_heterogeneity = False  # core.heterogeneity has its own tests.
    config.num_epochs = 2
    config.algorithm_epochs = {"dsgt": 1}
    config.algorithms = ("local_sgd", "fedavg", "dsgt")  # The rest: tests/test_federated.py.
    config.n_devices = 1
    out = train.train_and_evaluate(config, str(tmp_path))
    histories = {a: h for (_, a), h in out["histories"].items()}
    assert set(histories) == set(config.algorithms)
    assert len(histories["dsgt"]) == 2 and len(histories["fedavg"]) == 3
    for history in histories.values():
        assert 0.0 <= history[-1]["test_accuracy"] <= 1.0
    assert_federated_tracks_gradient_descent(config, out)
    # Rounds of K = 5 local steps; local SGD uploads from all clients, FedAvg from half.
    assert histories["fedavg"][-1]["bytes_sent"] < histories["local_sgd"][-1]["bytes_sent"]


@pytest.mark.parametrize("experiment_name", ["apd", "cpp"])
def test_directed_config_runs(experiment_name, tmp_path):
    config = importlib.import_module("decentjax.launch.configs.directed").get_config(
        f"{experiment_name},runlocal"
    )
    config.topologies = ("random_digraph",)
    config.n_devices = 1
    out = train.train_and_evaluate(config, str(tmp_path))
    assert {a for _, a in out["histories"]} == set(config.algorithms)
    assert_tracks_gradient_descent(config, out)
    assert_consistent_with_optimum(config, out)
    if experiment_name == "cpp":
        sent = {a: h[-1]["bytes_sent"] for (_, a), h in out["histories"].items()}
        assert sent["cpp@qsgd2"] < 0.1 * sent["push_pull"]
        assert 0.3 < sent["b_cpp_sync@qsgd2"] / sent["cpp@qsgd2"] < 0.7  # p = 0.5.


def test_gt_rr_ring_analysis_shows_the_tracker_restart():
    from decentjax.launch.analysis import gt_rr_ring

    errors = gt_rr_ring.tracker_errors(epochs=2)
    spread = errors[-1][0]  # ||grad f_i(x*) - grad f(x*)||_F, 2.58 on this split.
    for epoch in (0, 1):
        # Y = G at every epoch start: in expectation the local gradients' spread plus the
        # sampling spread (this seed's draws: 2.79, 2.63); ...
        assert errors[epoch][0] >= spread
        # ...then mixing contracts it by about (1 - gap)^k, e^-1 after k = 1/gap = 40
        # steps, down to the sampling floor (measured 0.45x and 0.48x at step 40).
        assert errors[epoch][40] < 0.5 * errors[epoch][0]
        assert errors[epoch][-1] < 0.5 * spread


def test_relabelled_config_equals_the_plain_run_in_user_order(tmp_path):
    config = quickstart.get_config("runlocal")
    config.update(n_agents=64, n_devices=8, dtype="float64", agent_metrics=True)
    config.update(topologies=("grid",), algorithms=("d_rr", "centralized_rr"))
    config.update(num_epochs=2, log_every=2, checkpoint_every=0)
    config.data.partition = "iid"
    plain = train.train_and_evaluate(config, str(tmp_path / "plain"))
    config.relabel = "rcm"
    op, _ = experiment.mixing_operator(config, "grid")
    assert op.path == "halo" and not np.array_equal(op.order, np.arange(64))
    relabelled = train.train_and_evaluate(config, str(tmp_path / "relabelled"))
    assert_same_runs(relabelled, plain)
    assert (
        relabelled["histories"][("grid", "d_rr")][-1]["loss"]
        < plain["histories"][("grid", "d_rr")][0]["loss"]
    )  # the run moved
    config.seeds = 2
    with pytest.raises(ValueError, match="relabel='rcm' needs a single run per method"):
        experiment.validate(config)
    config.relabel = "metis"
    with pytest.raises(ValueError, match=r"relabel must be one of \['none', 'rcm', 'auto'\]"):
        experiment.validate(config)


def test_relabel_auto_takes_the_halo_path_only_for_graphs_with_many_offsets():
    side = 16
    shuffle = np.random.default_rng(0).permutation(side * side)
    grid = weights.metropolis_hastings(topology.grid(side, side))
    shuffled = experiment.relabelled_gossip(grid[np.ix_(shuffle, shuffle)], "auto")
    assert shuffled.path == "halo" and shuffled.order is not None
    plain = experiment.relabelled_gossip(grid, "auto")  # 5 offsets: the shift path as is
    assert plain.path == "shift" and plain.order is None
