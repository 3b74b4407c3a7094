"""The cross-device launch path: cohort methods on unequal clients from a config."""

import json

import numpy as np
import pytest

from decentjax.launch import train
from decentjax.launch.configs import cross_device


def _config(**cohort):
    config = cross_device.get_config("runlocal,clients=24,cohort=4")
    config.model.name = "linear"  # Fast to compile; the CNN path is the benchmark's.
    config.dtype = "float64"
    config.algorithms = ("fedavg", "fedavg_selfnorm", "scaffold")
    config.cohort.update(cohort)
    return config


def test_cross_device_config_runs_and_logs_every_method(tmp_path, capsys):
    out = train.train_and_evaluate(_config(), str(tmp_path))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert {r["algorithm"] for r in rows} == {"fedavg", "fedavg_selfnorm", "scaffold"}
    for name, history in out["histories"].items():
        assert [r["round"] for r in history] == [0, 2, 4], name
        assert all(np.isfinite(r[k]) for r in history for k in ("loss", "test_accuracy"))
        assert 0.0 <= history[-1]["test_accuracy"] <= 1.0
    # Every method starts from the same server model.
    starts = {name: h[0]["loss"] for name, h in out["histories"].items()}
    assert len(set(starts.values())) == 1, starts
    # Bytes: FedAvg uploads one model per member per round; SCAFFOLD model + control.
    fedavg, scaffold = (
        out["histories"][("cohort", "fedavg")],
        out["histories"][("cohort", "scaffold")],
    )
    assert fedavg[-1]["bytes_sent"] > 0
    np.testing.assert_allclose(scaffold[-1]["bytes_sent"], 2 * fedavg[-1]["bytes_sent"], rtol=1e-12)
    assert (tmp_path / "summary.txt").exists() and (tmp_path / "loss_vs_rounds.png").exists()
    # Clients of unequal size (the Dirichlet split with unequal sizes), as printed.
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("data:"))
    lo, hi = (int(v) for v in line.split("clients of ")[1].split(" samples")[0].split(".."))
    assert lo < hi, line


def test_cross_device_rejects_unknown_algorithm_before_running(tmp_path):
    config = _config()
    config.algorithms = ("fedavg", "fednova")
    with pytest.raises(ValueError, match="fednova.*valid: fedavg"):
        train.train_and_evaluate(config, str(tmp_path))
