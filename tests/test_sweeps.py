"""Seeds / step-size sweeps and per-agent metrics from the launch config (launch.sweeps)."""

import importlib
import json
import os

import numpy as np
import pytest

from decentjax.launch import sweeps, train
from decentjax.launch.configs import quickstart


def tiny_config():
    config = quickstart.get_config("runlocal")
    config.topologies = ("exponential",)
    config.algorithms = ("dsgd",)
    config.num_epochs = 2
    config.checkpoint_every = 0
    return config


def test_seeds_and_sweep_run_as_one_program_with_bands_and_best_step(tmp_path):
    config = tiny_config()
    config.seeds = 2
    config.sweep.learning_rate = (0.5, 2.0)
    config.agent_metrics = True
    out = train.train_and_evaluate(config, str(tmp_path))
    with open(out["files"]["metrics"]) as f:
        rows = [json.loads(line) for line in f]
    # 2 step sizes x 2 seeds, epochs 0..2 each; every row names its run.
    assert sorted({(r["run"], r["seed"], r["learning_rate"]) for r in rows}) == [
        (0, 0, 0.5),
        (1, 1, 0.5),
        (2, 0, 2.0),
        (3, 1, 2.0),
    ]
    assert len(rows) == 4 * 3
    # One compilation for the four runs: they share compile_seconds.
    assert len({r["compile_seconds"] for r in rows if r["epoch"] == 2}) == 1
    # Seeds differ (x0), step sizes differ.
    last = {r["run"]: r["dist_to_opt"] for r in rows if r["epoch"] == 2}
    assert len(set(last.values())) == 4
    with open(out["files"]["bands"]) as f:
        bands = [json.loads(line) for line in f]
    for step in (0.5, 2.0):
        [band] = [b for b in bands if b["learning_rate"] == step and b["epoch"] == 2]
        runs = [r["dist_to_opt"] for r in rows if r["learning_rate"] == step and r["epoch"] == 2]
        np.testing.assert_allclose(band["dist_to_opt"], np.mean(runs), rtol=1e-12)
        np.testing.assert_allclose(band["dist_to_opt_std"], np.std(runs), rtol=1e-12)
        assert band["seeds"] == 2
    best = min(
        (0.5, 2.0),
        key=lambda s: np.mean([last[r] for r in last if rows[r * 3]["learning_rate"] == s]),
    )
    with open(out["files"]["summary"]) as f:
        summary = f.read()
    assert f"best of 2 settings: learning_rate {best:g}" in summary
    assert "per agent (agent i's x_i on its own train / test data)" in summary
    assert out["histories"][("exponential", "dsgd")][-1]["dist_to_opt_std"] > 0
    assert "agent_loss_worst" in rows[-1]


def test_one_seed_without_sweep_is_the_ordinary_run(tmp_path):
    config = tiny_config()
    out = train.train_and_evaluate(config, str(tmp_path))
    assert "bands" not in out["files"]
    with open(out["files"]["metrics"]) as f:
        assert "run" not in json.loads(f.readline())
    assert not os.path.exists(tmp_path / "bands.jsonl")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seeds", 0, "config.seeds must be a positive int, got 0"),
        ("sweep.learning_rate", (0.1, -1.0), r"positive finite step sizes, got \[-1.0\]"),
    ],
)
def test_bad_seeds_and_sweeps_are_refused_before_loading(field, value, message):
    config = tiny_config()
    if field == "seeds":
        config.seeds = value
    else:
        config.sweep.learning_rate = value
    with pytest.raises(ValueError, match=message):
        sweeps.validate(config)


def test_a_method_with_a_constant_step_only_is_refused_before_compiling(tmp_path):
    config = tiny_config()
    config.algorithms = ("extra",)
    config.step.schedule = "constant"
    config.sweep.learning_rate = (0.1, 0.2)
    with pytest.raises(ValueError, match="takes a constant positive learning_rate"):
        train.train_and_evaluate(config, str(tmp_path))


def test_consensus_step_sweep_equals_separate_runs(tmp_path):
    # CEDAS with QSGD: the swept gamma enters as a traced per-run value; DSGD has no
    # consensus step and runs once.
    config = importlib.import_module("decentjax.launch.configs.compressed").get_config("runlocal")
    config.topologies, config.num_epochs, config.checkpoint_every = ("exponential",), 1, 0
    config.algorithms, config.dtype = ("cedas@qsgd2", "dsgd"), "float64"
    config.sweep.consensus_step = (0.05, 0.2)
    out = train.train_and_evaluate(config, str(tmp_path / "sweep"))
    with open(out["files"]["metrics"]) as f:
        rows = [json.loads(line) for line in f if '"epoch": 1,' in line]
    swept = {r["consensus_step"]: r["dist_to_opt"] for r in rows if r["algorithm"] != "dsgd"}
    assert [r["run"] for r in rows if r["algorithm"] == "dsgd"] == [0]
    config.sweep.consensus_step = ()
    config.algorithms = ("cedas@qsgd2",)
    config.compressors.qsgd2.consensus_step = 0.2
    alone = train.train_and_evaluate(config, str(tmp_path / "alone"))
    want = alone["histories"][("exponential", "cedas@qsgd2")][-1]["dist_to_opt"]
    # float64, one epoch: rounding only.
    np.testing.assert_allclose(swept[0.2], want, rtol=1e-10)
    assert swept[0.05] != swept[0.2]
