"""Experiment tracking: JSONL rows, TensorBoard event files with hyperparameters, and
Weights & Biases through a stand-in ``wandb`` module."""

import json
import math
import struct
import sys
import types

import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from decentjax.launch import tracking
from decentjax.launch.configs import quickstart

HISTORY = [
    {"epoch": 0, "loss": 0.7, "dist_to_opt": 0.5, "bytes_sent": 0},
    {"epoch": 1, "loss": 0.6, "dist_to_opt": 0.25, "bytes_sent": 260},
    {"epoch": 2, "loss": math.nan, "dist_to_opt": math.inf, "bytes_sent": 520},
]


def _events(path):
    """Reads a TFRecord file of Event protos, checking every length and data CRC."""
    data, events, offset = path.read_bytes(), [], 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("Q", header)
        assert struct.unpack("I", data[offset + 8 : offset + 12])[0] == masked_crc32c(header)
        payload = data[offset + 12 : offset + 12 + length]
        crc = data[offset + 12 + length : offset + 16 + length]
        assert struct.unpack("I", crc)[0] == masked_crc32c(payload)
        events.append(event_pb2.Event.FromString(payload))
        offset += 16 + length
    return events


def test_tracker_writes_jsonl_and_tensorboard_scalars_and_hparams(tmp_path):
    config = quickstart.get_config("runlocal")
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"topology": "ring", "algorithm": "d_rr", "epoch": 0, "loss": 1.0})
        + "\n"
        + json.dumps({"topology": "ring", "algorithm": "dsgd", "epoch": 0, "loss": 9.0})
        + "\n"
    )
    with tracking.Tracker(tmp_path, config, {("ring", "dsgd")}) as tracker:
        tracker.log_history("ring", "dsgd", HISTORY)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # d_rr was not rerun: kept; dsgd's old row replaced by the new history.
    assert rows[0] == {"topology": "ring", "algorithm": "d_rr", "epoch": 0, "loss": 1.0}
    assert [r["epoch"] for r in rows[1:]] == [0, 1, 2]
    assert rows[2] == {"topology": "ring", "algorithm": "dsgd", **HISTORY[1]}

    (event_file,) = (tmp_path / "tensorboard" / "ring__dsgd").iterdir()
    events = _events(event_file)
    assert events[0].file_version == "brain.Event:2"
    scalars = {
        (value.tag, event.step): value.simple_value
        for event in events
        for value in event.summary.value
        if value.HasField("simple_value")
    }
    assert scalars[("dist_to_opt", 1)] == pytest.approx(0.25)
    assert scalars[("bytes_sent", 2)] == 520.0
    assert math.isnan(scalars[("loss", 2)]) and math.isinf(scalars[("dist_to_opt", 2)])
    assert len(scalars) == 3 * 3
    # The HParams plugin's experiment summary lists the config's keys.
    plugin = [
        value.metadata.plugin_data
        for event in events
        for value in event.summary.value
        if value.metadata.plugin_data.plugin_name == "hparams"
    ]
    assert len(plugin) == 3  # experiment, session start, session end
    assert b"step.c" in plugin[0].content and b"objective.reg" in plugin[0].content


def test_hparams_flatten_the_config_to_tensorboard_types():
    hparams = tracking.hparams(quickstart.get_config())
    assert hparams["step.c"] == 200.0 and hparams["objective.name"] == "logistic"
    assert hparams["topologies"] == '["exponential", "ring"]'
    assert hparams["tracking.wandb"] is False


class _FakeRun:
    def __init__(self, calls, **kwargs):
        self.calls, self.config = calls, {}
        calls.append(("init", kwargs))

    def log(self, data, step):
        self.calls.append(("log", step, data))

    def finish(self):
        self.calls.append(("finish",))


def test_wandb_is_used_when_enabled_and_installed(tmp_path, monkeypatch):
    calls, runs = [], []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: runs.append(_FakeRun(calls, **kwargs)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = quickstart.get_config("runlocal")
    config.tracking.wandb = True
    config.tracking.wandb_project = "my-project"
    tracker = tracking.Tracker(tmp_path, config, {("ring", "dsgd")})
    tracker.log_history("ring", "dsgd", HISTORY)
    assert calls[0] == (
        "init",
        {"project": "my-project", "entity": None, "name": "ring/dsgd", "group": str(tmp_path)},
    )
    assert calls[1:3] == [
        ("log", 0, {"loss": 0.7, "dist_to_opt": 0.5, "bytes_sent": 0.0}),
        ("log", 1, {"loss": 0.6, "dist_to_opt": 0.25, "bytes_sent": 260.0}),
    ]
    (_, step, last) = calls[3]
    assert step == 2 and math.isnan(last["loss"]) and last["dist_to_opt"] == math.inf
    assert calls[4:] == [("finish",)]
    assert runs[0].config == tracking.hparams(config)


def test_wandb_enabled_but_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    config = quickstart.get_config("runlocal")
    config.tracking.wandb = True
    tracker = tracking.Tracker(tmp_path, config, set())
    with pytest.raises(ImportError, match="pip install wandb"):
        tracker.log_history("ring", "dsgd", HISTORY)
