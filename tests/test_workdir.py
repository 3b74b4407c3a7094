"""Workdirs: a changed config is refused, metrics of methods not rerun are kept, remote
(``gs://``) workdirs work, and a run through ``launch.main`` is quiet."""

import json
import os
import re
import subprocess
import sys

import fsspec
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from decentjax.core import loop
from decentjax.launch import train, workdir
from decentjax.launch.configs import quickstart

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**changes):
    config = quickstart.get_config("runlocal")
    config.num_epochs = 2
    config.topologies = ("ring",)
    config.algorithms = ("dsgd", "centralized_rr")
    config.checkpoint_every = 0
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def _rows(path):
    rows = [json.loads(line) for line in epath.Path(path).read_text().splitlines()]
    timings = ("seconds", "compile_seconds")
    return [{k: v for k, v in row.items() if k not in timings} for row in rows]


def test_changed_config_is_refused_new_or_overwrite_on_request(tmp_path, monkeypatch):
    work = tmp_path / "w"
    first = train.train_and_evaluate(_config(checkpoint_every=2), str(work))
    record = json.loads((work / "config.json").read_text())
    assert record["config"]["step"]["c"] == 200.0
    assert set(record) == {"decentjax", "git_commit", "config"}
    before = _rows(work / "metrics.jsonl")

    # The command: one method again with another step size. Refused before
    # anything is built, naming the key and both values; the workdir is untouched.
    changed = _config(checkpoint_every=2, algorithms=("dsgd",), **{"step.c": 20.0})
    with monkeypatch.context() as patch:
        patch.setattr(loop, "Runner", None)
        with pytest.raises(workdir.ConfigMismatchError, match=r"step\.c: 200\.0 -> 20\.0"):
            train.train_and_evaluate(changed, str(work))
    assert _rows(work / "metrics.jsonl") == before

    fresh = train.train_and_evaluate(changed, str(work), on_mismatch="new")
    assert fresh["files"]["metrics"] == str(tmp_path / "w-1" / "metrics.jsonl")
    old_dsgd = first["histories"][("ring", "dsgd")][-1]["dist_to_opt"]
    new_dsgd = fresh["histories"][("ring", "dsgd")][-1]["dist_to_opt"]
    assert new_dsgd != old_dsgd  # Not the old run's result, as the issue saw.
    assert _rows(work / "metrics.jsonl") == before

    # Overwrite: the old runs go, the same new result comes out in the workdir itself.
    again = train.train_and_evaluate(changed, str(work), on_mismatch="overwrite")
    assert again["histories"][("ring", "dsgd")][-1]["dist_to_opt"] == new_dsgd
    assert {r["algorithm"] for r in _rows(work / "metrics.jsonl")} == {"dsgd"}
    assert json.loads((work / "config.json").read_text())["config"]["step"]["c"] == 20.0


def test_workdir_without_a_record_is_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")  # Left by a run of an unknown config.
    with pytest.raises(workdir.ConfigMismatchError, match="config.json"):
        workdir.prepare(_config(), str(tmp_path))
    with pytest.raises(ValueError, match=r"on_mismatch must be one of .*got 'keep'"):
        workdir.prepare(_config(), str(tmp_path), "keep")


class _FakeGcs(MemoryFileSystem):
    """An in-memory bucket behind fsspec's ``gs``/``gcs`` protocols.

    epath sends ``gs://`` paths to fsspec's GCS filesystem when TensorFlow is absent
    (what a pod without TF runs), so with this class registered the run goes through
    exactly epath's remote code path, offline. Orbax's array writes go through
    TensorStore's own GCS driver, which cannot be faked here, so this run keeps no
    checkpoints; resuming is tested on local workdirs (test_reliability).
    """

    protocol = ("gs", "gcs")
    store: dict = {}  # fsspec keeps the files on the class; reset per test.
    pseudo_dirs = [""]

    def __init__(self, *args, finalize_on_close=True, **kwargs):
        del finalize_on_close  # epath passes gcsfs's option.
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path).removeprefix("gs://").removeprefix("gcs://")
        return "/" + path.strip("/")


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, _FakeGcs, clobber=True)
    _FakeGcs.store.clear()
    _FakeGcs.pseudo_dirs[:] = [""]
    monkeypatch.chdir(tmp_path)  # A local folder named "gs:" would appear here.
    yield _FakeGcs
    _FakeGcs.store.clear()


def test_gs_workdir_round_trip(fake_gcs, tmp_path):
    uri = "gs://bucket/run"
    out = train.train_and_evaluate(_config(), uri)
    bucket = epath.Path(uri)
    names = {p.name for p in bucket.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.txt", "tensorboard"} <= names
    assert {"dist_to_opt_vs_epochs.png", "dist_to_opt_vs_bytes.png"} <= names
    assert bucket.joinpath("dist_to_opt_vs_epochs.png").read_bytes()[:4] == b"\x89PNG"
    rows = _rows(out["files"]["metrics"])
    assert {(r["topology"], r["algorithm"]) for r in rows} == {
        ("ring", "dsgd"),
        ("centralized", "centralized_rr"),
    }
    assert "dsgd" in bucket.joinpath("summary.txt").read_text()
    assert list(bucket.glob("tensorboard/ring__dsgd/events.out.tfevents.*"))
    # A rerun reads the record back from the bucket: a changed config is refused there too.
    with pytest.raises(workdir.ConfigMismatchError, match=r"objective\.reg: 0\.2 -> 0\.3"):
        train.train_and_evaluate(_config(**{"objective.reg": 0.3}), uri)
    # Same config, one method again (the method list is not compared): the other
    # method's rows are kept, the rerun one's replaced, none duplicated.
    train.train_and_evaluate(_config(algorithms=("dsgd",)), uri)
    assert sorted(map(json.dumps, _rows(out["files"]["metrics"]))) == sorted(map(json.dumps, rows))
    assert os.listdir(tmp_path) == []  # Nothing local: no "gs:" folder.


def test_main_is_quiet_and_refuses_a_changed_config(tmp_path):
    args = [
        sys.executable,
        "-m",
        "decentjax.launch.main",
        "--config=launch/configs/quickstart.py:runlocal",
        f"--workdir={tmp_path}",
        "--config.num_epochs=2",
        "--config.checkpoint_every=1",
        "--config.topologies=('ring',)",
        "--config.algorithms=('dsgd',)",
    ]
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    output = (run.stdout + run.stderr).splitlines()
    # absl INFO lines start "I<mmdd> <time>"; orbax logs dozens per checkpoint.
    assert not [line for line in output if re.match(r"I\d{4} ", line) or "orbax" in line]
    assert len(output) <= 15, output
    refused = subprocess.run(
        [*args, "--config.step.c=20"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode != 0
    assert "step.c: 200.0 -> 20.0" in refused.stderr
    assert "Traceback" not in refused.stderr
