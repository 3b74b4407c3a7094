"""The interface every decentralized or federated method implements.

An :class:`Algorithm` is a pair of pure functions built by a factory that closes
over the hyperparameters, the per-agent objective and a communication operator,
in the manner of ``optax.GradientTransformation``. Both functions run in local
view, inside ``jax.shard_map`` over the agent axis: every leaf of ``params``,
``data``, ``state`` and ``batch.data`` has a leading axis holding this device's
block of agents.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from decentjax.core.conv_lowering import lowered_on_cpu

PyTree = Any
Params = PyTree
State = Any
Metrics = dict[str, Any]


class Batch(NamedTuple):
    """What an algorithm's step sees of the data at one inner iteration.

    Attributes:
      data: per-agent minibatch, leaves ``(b, batch_size, ...)``.
      epoch: int32 scalar, the epoch ``t`` this step belongs to.
      position: int32 scalar, the index ``l`` of this step inside the epoch
        (``0 .. steps_per_epoch - 1``); methods that restart every epoch, such as
        GT-RR and ED-RR, test ``position == 0``.
    """

    data: PyTree
    epoch: jax.Array
    position: jax.Array


class Algorithm(NamedTuple):
    """A method as pure functions of local-view pytrees.

    Attributes:
      init: ``(params, data, key) -> state``. ``params`` are the initial per-agent
        parameters, ``data`` the agents' full local datasets.
      step: ``(state, batch, key) -> (state, metrics)``: one inner iteration.
        ``key`` is the same on every device; per-agent randomness comes from
        :func:`core.mesh.agent_keys`. ``metrics`` must contain ``"bytes_sent"``,
        the bytes one agent sends in this step: a scalar, or a per-agent vector
        ``(b,)`` when agents send different amounts (the run loop averages it).
      params: ``state -> params``: the per-agent iterate that metrics evaluate.
      name: short name for logs and plots.

    Every leaf of a state has the leading agent axis, counters included, so the
    run loop can shard states without knowing their structure.
    """

    init: Callable[[Params, PyTree, jax.Array], State]
    step: Callable[[State, Batch, jax.Array], tuple[State, Metrics]]
    params: Callable[[State], Params] = operator.attrgetter("params")
    name: str = "algorithm"


def local_optimizer(
    learning_rate: float | optax.Schedule | None,
    optimizer: optax.GradientTransformation | None,
) -> optax.GradientTransformation:
    """The per-agent optimizer a method applies to its gradient direction.

    Exactly one of ``learning_rate`` (plain SGD steps ``-alpha_k g``, with ``alpha``
    a float or an optax schedule of the step count) and ``optimizer`` (any optax
    transformation, e.g. ``optax.sgd(0.1, momentum=0.9)``) must be given.

    Raises:
      ValueError: if both or neither are given, or a constant step is not positive.
    """
    if (learning_rate is None) == (optimizer is None):
        raise ValueError(
            "give exactly one of learning_rate (a float or optax schedule) or optimizer "
            f"(an optax GradientTransformation); got learning_rate={learning_rate!r}, "
            f"optimizer={optimizer!r}."
        )
    if optimizer is not None:
        return optimizer
    if not callable(learning_rate) and not float(learning_rate) > 0.0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
    return optax.sgd(learning_rate)


@dataclasses.dataclass(frozen=True)
class AgentMapped:
    """A per-agent loss marked to be differentiated agent by agent (see :func:`map_over_agents`).

    Calling it calls ``loss_fn``. :func:`agent_grad` maps its gradients over the agents,
    the cohort methods of :mod:`algos.cohort` train their members in sequence with it,
    and :func:`algos.with_model` maps the model-state forward pass.

    Attributes:
      loss_fn: ``(params, batch) -> scalar`` for one agent.
      batch_size: agents per iteration of the ``lax.map`` (``None``: one at a time).
    """

    loss_fn: Callable[[Params, PyTree], jax.Array]
    batch_size: int | None = None

    def __call__(self, params: Params, batch: PyTree) -> jax.Array:
        """The wrapped loss of one agent."""
        return self.loss_fn(params, batch)


def map_over_agents(
    loss_fn: Callable[[Params, PyTree], jax.Array], batch_size: int | None = None
) -> AgentMapped:
    """Marks a loss so that every method computes its per-agent gradients with ``lax.map``.

    By default a method lifts ``jax.grad(loss_fn)`` over the agents of a device block
    with ``jax.vmap``: one batched program, the fastest choice for small per-agent
    models (logistic regression, MLPs: on this project's CPU benchmark the MLP
    784-256-10 step for 64 agents is 27 ms vmapped vs 34 ms mapped). For models whose
    batched form XLA compiles poorly, a loop over the agents of the block with
    ``jax.lax.map`` can be much faster: the small CNN of :func:`models.nets.cnn`, 16
    clients, batch 32, runs a FedAvg step in 51 ms mapped vs 86 ms vmapped on 2 CPU
    cores. Results are the same up to rounding; only the schedule changes. The cohort
    methods of :mod:`algos.cohort` go further with such a loss: each member runs its
    whole local training before the next starts.

    Args:
      loss_fn: ``(params, batch) -> scalar`` for one agent.
      batch_size: agents per ``lax.map`` iteration (vmapped within it); ``None`` maps
        one agent at a time; it need not divide the block size.

    Returns:
      An :class:`AgentMapped` that can be passed wherever a method takes ``loss_fn``.

    Raises:
      ValueError: if ``loss_fn`` is not callable or ``batch_size`` is not a positive int.
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}.")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}.")
    return AgentMapped(loss_fn, batch_size)


def agent_grad(
    loss_fn: Callable[[Params, PyTree], jax.Array], *, has_aux: bool = False
) -> Callable[[Params, PyTree], Params]:
    """Per-agent gradients over a device block: ``(params, data) -> grads`` (local view).

    ``params`` and ``data`` have a leading block axis of ``b`` agents; the result has
    the leaves of ``params``. Agent ``i`` gets ``grad(loss_fn)(params[i], data[i])``,
    computed with ``jax.vmap`` unless ``loss_fn`` came from :func:`map_over_agents`,
    in which case with ``jax.lax.map``. On XLA:CPU a loss with 2-D convolutions is
    differentiated in the patch form (:func:`core.conv_lowering.lowered_on_cpu`; opt
    out with :func:`core.conv_lowering.native_convs`), in its ``reverse_only`` form (a
    first layer's kernel gradient patches-first; the gradients can still be
    differentiated again, in either mode). With ``has_aux`` the loss returns
    ``(value, aux)`` and the result is ``(grads, aux)``, both per agent (e.g. the model
    state a forward pass leaves, :mod:`core.loss_inputs`).
    """
    if isinstance(loss_fn, AgentMapped):
        grad = jax.grad(lowered_on_cpu(loss_fn.loss_fn, reverse_only=True), has_aux=has_aux)
        return lambda params, data: jax.lax.map(
            lambda args: grad(*args), (params, data), batch_size=loss_fn.batch_size
        )
    return jax.vmap(jax.grad(lowered_on_cpu(loss_fn, reverse_only=True), has_aux=has_aux))
