"""A user's algorithms, graphs, datasets and models run from configs without editing
``launch/experiment.py``: registered by name or given by import path."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from decentjax.launch import experiment, registry
from decentjax.launch.configs import quickstart

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

USER_MODULE = '''
"""A researcher's own methods, outside the library."""
import numpy as np

from decentjax import algos
from decentjax.core import topology
from decentjax.launch import registry
from decentjax.models import nets


def plain_dsgd(loss_fn, comm_op, learning_rate):
    return algos.dsgd(loss_fn, comm_op, learning_rate, name="plain-dsgd")


def my_ring(n_agents, seed):
    del seed
    return topology.ring(n_agents)


def blobs(data_config, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(data_config.get("num_samples", 64), 3)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}


def tiny(input_shape, num_classes, dtype, model_config):
    del model_config
    return nets.linear(int(np.prod(input_shape)), num_classes, param_dtype=dtype)


registry.register_algorithm("my_dsgd", plain_dsgd)
registry.register_topology("my_ring", my_ring)
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """``<pkg>.methods`` importable from a folder outside the repository."""
    name = f"userpkg_{tmp_path.name}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "methods.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = {kind: dict(table) for kind, table in registry._TABLES.items()}
    yield name
    for kind, table in registry._TABLES.items():
        table.clear()
        table.update(saved[kind])


def test_import_paths_resolve_every_kind(user_package):
    config = quickstart.get_config("runlocal")
    config.n_agents = 4
    config.algorithms = (f"{user_package}.methods:plain_dsgd",)
    config.topologies = (f"{user_package}.methods:my_ring",)
    config.data.source = f"{user_package}.methods:blobs"
    config.data.positive_classes = ()
    config.data.bias = False
    experiment.validate(config)
    data, description = experiment.load_data(config)
    assert data["x"].shape == (64, 3) and description.startswith(f"{user_package}.methods:blobs")
    op, gap = experiment.mixing_operator(config, config.topologies[0])
    assert op.matrix.shape == (4, 4) and 0 < gap < 1
    assert experiment.sampler_of(config, config.algorithms[0]) == ("iid", True)
    loss = experiment.objective(config).loss
    algorithm = experiment.build_algorithm(config, config.algorithms[0], loss, op, 0.1)
    assert algorithm.name == "plain-dsgd"

    config.objective.name = "softmax"
    config.model = {"name": f"{user_package}.methods:tiny"}
    experiment.validate(config)
    model = experiment.model(config, (3,), 2)
    params = model.init(jax.random.key(0))
    assert model.apply(params, np.ones((5, 3), np.float32)).shape == (5, 2)


def test_registered_names_and_their_errors(user_package):
    importlib.import_module(f"{user_package}.methods")  # Registers my_dsgd and my_ring.
    config = quickstart.get_config("runlocal")
    config.algorithms = ("my_dsgd", "dsgd")
    config.topologies = ("my_ring",)
    experiment.validate(config)
    with pytest.raises(ValueError, match="algorithm 'my_dsgd' is registered already"):
        registry.register_algorithm("my_dsgd", print)
    with pytest.raises(ValueError, match="sampler must be one of"):
        registry.register_algorithm("other", print, sampler="shuffled")
    config.algorithms = ("my_dsg",)
    with pytest.raises(ValueError, match=r"unknown algorithm 'my_dsg'.*registered: \['my_dsgd'\]"):
        experiment.validate(config)
    config.algorithms = (f"{user_package}.methods:missing",)
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        experiment.validate(config)
    config.algorithms = (f"{user_package}.methds:plain_dsgd",)
    with pytest.raises(ValueError, match=f"cannot import '{user_package}.methds'"):
        experiment.validate(config)
    config.algorithms = ("no_such_pkg_h17b.methods:f",)
    with pytest.raises(ValueError, match=r"unknown algorithm .*'package.module:function'"):
        experiment.validate(config)


def final_start(rows):
    """The error at epoch 0 (the same start for every method)."""
    return max(r["dist_to_opt"] for r in rows if r["epoch"] == 0)


def test_registered_and_imported_methods_run_from_the_cli(user_package, tmp_path):
    config_file = tmp_path / "my_config.py"
    config_file.write_text(
        textwrap.dedent(f"""
        import {user_package}.methods  # registers my_dsgd and my_ring
        from decentjax.launch.configs import quickstart


        def get_config(arg=None):
            config = quickstart.get_config("runlocal")
            config.num_epochs = 2
            config.checkpoint_every = 0
            config.topologies = ("my_ring",)
            config.algorithms = ("my_dsgd", "{user_package}.methods:plain_dsgd")
            return config
        """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), REPO])}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "decentjax.launch.main",
            f"--config={config_file}",
            f"--workdir={tmp_path}/w",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [
        json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    ]
    final = {r["algorithm"]: r["dist_to_opt"] for r in rows if r["epoch"] == 2}
    assert {r["topology"] for r in rows} == {"my_ring"}
    # One function, registered or imported: the same run, to the bit.
    assert final["my_dsgd"] == final[f"{user_package}.methods:plain_dsgd"] < final_start(rows)
    assert (tmp_path / "w" / "checkpoints").exists() is False
    assert (tmp_path / "w" / "tensorboard" / f"my_ring__{user_package}.methods_plain_dsgd").is_dir()
