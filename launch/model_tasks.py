r"""Configs' networks with state and randomness: ResNet-20 and LeNet-5 through ``from_nnx``.

``config.model.name`` ``"resnet20"`` (:class:`models.ResNet`) or ``"lenet5"``
(:class:`models.LeNet5`) builds the module with :func:`models.from_nnx`, so BatchNorm
statistics are per-agent model state (``config.model.state_mixing``: ``"local"`` or
``"gossip"``) and every method runs through :func:`algos.with_model`. Fields of
``config.model`` (all optional):

* ``norm``: ``"group"`` (default) or ``"batch"`` (ResNet only);
* ``blocks``: basic blocks per stage (3: ResNet-20; 1 for a tiny test network);
* ``compute_dtype``: ``"bfloat16"`` for mixed precision (params stay ``config.dtype``);
* ``augment``: per-agent random crop (``padding``, default 4) and horizontal flip;
* ``lower_convs``: ``"auto"`` (default: the per-agent gradients, the per-agent metrics and
  the evaluation of runs vmapped as one program (seeds, sweeps) run the convolutions as
  patches x matrix on XLA:CPU, which runs per-agent or per-run convolutions slowly, and
  natively elsewhere; :func:`core.conv_lowering.lowered_on_cpu`), ``"true"`` (patches x matrix
  everywhere, evaluation included: :func:`models.convs_as_matmuls`) or ``"false"``
  (native everywhere: :func:`models.native_convs`); booleans are accepted too.

Augmentation is part of the agent's training loss: agent :math:`i` at step :math:`k`
with key :math:`k_i` (:func:`core.loss_inputs.loss_keys`, ``fold_in(epoch, agent,
step)``) minimises :math:`f_i(x; A(\xi_i^k, \kappa^{aug}_i))` where
:math:`\kappa^{aug}_i = \mathrm{fold\_in}(k_i, 0)` draws the crops and flips
(:func:`models.random_crop_flip`) and :math:`\mathrm{fold\_in}(k_i, 1)` feeds the
model's own streams (dropout), so the augmentation is per agent, deterministic given the
run's seed and the same on any number of devices. Evaluation sees the images as they are.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from decentjax.core.algorithm import AgentMapped
from decentjax.core.loss_inputs import LossInputs, Task
from decentjax.models import (
    LeNet5,
    NnxModel,
    ResNet,
    convs_as_matmuls,
    from_nnx,
    native_convs,
    objectives,
)
from decentjax.models.augment import random_crop_flip

PyTree = Any
NNX_MODELS = ("resnet20", "lenet5")
NORMS = ("group", "batch")
COMPUTE_DTYPES = ("float32", "bfloat16")


def uses_nnx(config: ml_collections.ConfigDict) -> bool:
    """Whether ``config.model.name`` is one of :data:`NNX_MODELS`."""
    return config.get("model", {}).get("name") in NNX_MODELS


def is_task(loss: Any) -> bool:
    """Whether a (possibly ``map_over_agents``-marked) loss is a :class:`Task`."""
    return isinstance(loss.loss_fn if isinstance(loss, AgentMapped) else loss, Task)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.model``'s options (module docstring) before any data is loaded."""
    model = config.model
    if model.get("norm", "group") not in NORMS:
        raise ValueError(f"model.norm must be one of {list(NORMS)}, got {model.get('norm')!r}.")
    if model.get("compute_dtype", "float32") not in COMPUTE_DTYPES:
        raise ValueError(
            f"model.compute_dtype must be one of {list(COMPUTE_DTYPES)}, got "
            f"{model.get('compute_dtype')!r}."
        )
    blocks, padding = model.get("blocks", 3), model.get("padding", 4)
    if not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"model.blocks must be an int >= 1, got {blocks!r}.")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"model.padding must be an int >= 0, got {padding!r}.")
    if model.get("state_mixing", "local") not in ("local", "gossip"):
        raise ValueError(
            f"model.state_mixing must be 'local' or 'gossip', got {model.get('state_mixing')!r}."
        )


def network(
    config: ml_collections.ConfigDict, input_shape: tuple[int, ...], num_classes: int
) -> NnxModel:
    """The configured module as an :class:`models.NnxModel` (params in ``config.dtype``)."""
    validate(config)
    model, param_dtype = config.model, np.dtype(config.dtype)
    compute = np.dtype(jax.numpy.bfloat16) if model.get("compute_dtype") == "bfloat16" else None
    if model.name == "lenet5":
        return from_nnx(
            lambda rngs: LeNet5(
                tuple(input_shape), num_classes, dtype=compute, param_dtype=param_dtype,
                rngs=rngs,
            ),
            state_mixing=model.get("state_mixing", "local"),
        )  # fmt: skip
    norm = model.get("norm", "group")
    return from_nnx(
        lambda rngs: ResNet(
            num_classes, blocks=model.get("blocks", 3), in_channels=input_shape[-1], norm=norm,
            dtype=compute, param_dtype=param_dtype, rngs=rngs,
        ),
        state_mixing=model.get("state_mixing", "local"),
        name=f"resnet{6 * model.get('blocks', 3) + 2}-{'bn' if norm == 'batch' else 'gn'}",
    )  # fmt: skip


def augmented(task: Task, *, padding: int = 4, flip: bool = True) -> Task:
    """``task`` whose training loss first augments the agent's images (module docstring).

    Args:
      task: a task whose batches hold images ``{"x": (B, H, W, C), ...}``.
      padding: zero padding before the random crop.
      flip: random horizontal flips.

    Returns:
      The task with the augmented training loss; evaluation is unchanged.
    """

    def value_and_state(params: PyTree, inputs: LossInputs) -> tuple[jax.Array, PyTree]:
        aug_key, model_key = (jax.random.fold_in(inputs.key, j) for j in range(2))
        x = random_crop_flip(inputs.data["x"], aug_key, padding=padding, flip=flip)
        data = {**inputs.data, "x": x}
        return task.value_and_state(params, LossInputs(data, model_key, inputs.state))

    return task._replace(value_and_state=value_and_state)


def build(
    config: ml_collections.ConfigDict, input_shape: tuple[int, ...], num_classes: int
) -> tuple[NnxModel, Task, objectives.Objective]:
    """``(model, training task, evaluation objective)`` of an NNX model config.

    The objective is softmax cross-entropy (``config.objective.reg``); its ``loss`` and
    ``accuracy`` take :class:`models.Variables` (the metrics at x̄ use the agents'
    average state), the task is what :func:`algos.with_model` trains.
    """
    net = network(config, input_shape, num_classes)
    task = net.objective(
        objectives.softmax_cross_entropy, reg=config.objective.reg, num_classes=num_classes
    )
    lower = config.model.get("lower_convs", "auto")
    if isinstance(lower, str):  # a command-line override of the "auto" string field
        lower = {"true": True, "false": False}.get(lower.lower(), lower)
    if lower not in ("auto", True, False):
        raise ValueError(f"config.model.lower_convs must be 'auto', True or False, got {lower!r}.")
    if lower != "auto":
        wrap = convs_as_matmuls if lower else native_convs
        task = task._replace(
            value_and_state=wrap(task.value_and_state),
            eval_loss=wrap(task.eval_loss),
            accuracy=wrap(task.accuracy),
        )
    if config.model.get("augment", False):
        task = augmented(task, padding=config.model.get("padding", 4))
    evaluation = objectives.Objective(task.eval_loss, task.accuracy, task.name, task.check_data)
    return net, task, evaluation
