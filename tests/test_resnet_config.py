"""The ResNet-20 / CIFAR-10 reproduction config: runlocal end to end, augmentation, errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decentjax.core.loss_inputs import LossInputs
from decentjax.launch import experiment, model_tasks, train
from decentjax.launch.configs import resnet_cifar


def test_runlocal_trains_batchnorm_resnet_over_seeds_on_the_stand_in(tmp_path, capsys):
    # BatchNorm (per-agent state through from_nnx), Dirichlet(0.1) split, augmentation from
    # the step keys, 2 seeds as one program. One method and graph keep it to about half a minute.
    config = resnet_cifar.get_config("split=dirichlet,norm=batch,runlocal")
    config.topologies = ("ring",)
    config.algorithms = ("dsgd_momentum",)
    out = train.train_and_evaluate(config, str(tmp_path))
    history = out["histories"][("ring", "dsgd_momentum")]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    for row in history:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and np.isfinite(row["loss"])
    # One params vector per step (the BatchNorm statistics stay local): bytes grow.
    assert 0 < history[1]["bytes_sent"] < history[2]["bytes_sent"]
    with open(out["files"]["bands"]) as f:
        bands = [json.loads(line) for line in f]
    assert bands and all(b["seeds"] == 2 and "test_accuracy_std" in b for b in bands)
    printed = capsys.readouterr().out
    assert "synthetic stand-in, not cifar10" in printed and "mean +- std over seeds" in printed
    assert os.path.getsize(out["files"]["plot_bytes"]) > 5_000


def _tiny_task(augment):
    config = resnet_cifar.get_config("norm=batch,runlocal")
    config.model.augment = augment
    config.model.lower_convs = "false"  # a str field: "auto" | "true" | "false"
    net, task, _ = model_tasks.build(config, (8, 8, 3), 10)
    variables = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3), jnp.float32)
    batch = {"x": x, "y": jnp.arange(4) % 10}
    return task, variables, batch


def test_augmentation_is_drawn_from_the_agents_key():
    task, variables, batch = _tiny_task(augment=True)
    plain, *_ = _tiny_task(augment=False)

    def loss(t, key):
        inputs = LossInputs(batch, key, variables.state)
        return float(t.value_and_state(variables.params, inputs)[0])

    k0, k1 = jax.random.key(3), jax.random.key(4)
    assert loss(task, k0) == loss(task, k0)  # deterministic given the key
    assert loss(task, k0) != loss(task, k1)  # another agent / step: other crops and flips
    assert loss(task, k0) != loss(plain, k0)  # the images are augmented
    # Evaluation sees the images as they are.
    assert float(task.eval_loss(variables, batch)) == float(plain.eval_loss(variables, batch))


def test_bad_arguments_and_model_options_are_rejected_before_loading():
    with pytest.raises(ValueError, match="split must be one of"):
        resnet_cifar.get_config("split=pathological")
    with pytest.raises(ValueError, match="unknown config arguments"):
        resnet_cifar.get_config("depth=56")
    config = resnet_cifar.get_config("split=dirichlet,norm=batch")
    experiment.validate(config)  # the full config's names are valid
    config.model.norm = "layer"
    with pytest.raises(ValueError, match="model.norm must be one of"):
        experiment.validate(config)
