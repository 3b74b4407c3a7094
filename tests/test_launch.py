"""The quickstart experiment end to end, and config errors before any compilation."""

import json
import os
import subprocess
import sys

import pytest

from launch import experiment, train
from launch.configs import quickstart

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
        assert history[-1]["dist_to_opt"] < history[0]["dist_to_opt"]
    with open(out["files"]["metrics"]) as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 5 * (config.num_epochs + 1)
    assert {"epoch", "loss", "dist_to_opt", "consensus", "accuracy", "bytes_sent"} <= set(lines[0])
    assert os.path.getsize(out["files"]["plot"]) > 10_000
    with open(out["files"]["summary"]) as f:
        assert "d_rr" in f.read()


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
            "launch.main",
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
