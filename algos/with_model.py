r"""Any decentralized or federated method on a loss with a key and model state.

:func:`with_model` builds a method from its factory (``algos.dsgd``,
``algos.gradient_tracking``, ``algos.exact_diffusion``, ``algos.fedavg``, ...) for a
:class:`core.loss_inputs.Task` (e.g. from :meth:`models.nnx_model.NnxModel.objective`)
or a loss ``loss(params, batch, key)``, and wraps the resulting
:class:`~core.algorithm.Algorithm` so that at every step

* agent :math:`i` gets its key :math:`k_i` (:func:`core.loss_inputs.loss_keys`) and
  its model state :math:`s_i` beside its minibatch: the method, unchanged, hands
  :class:`~core.loss_inputs.LossInputs` to ``jax.grad`` of the task's loss;
* the state the agent's forward pass leaves, :math:`\tilde s_i = \mathrm{fwd}(x_i,
  \xi_i, s_i, k_i)`, becomes its new state: :math:`s_i^+ = \tilde s_i` (``"local"``)
  or :math:`S^+ = W \tilde S` (``"gossip"``, with the method's own operator,
  counted in ``bytes_sent``).

The wrapper evaluates :math:`\tilde s_i` at the method's iterate before the step,
``algorithm.params(state)``, on the same minibatch, key and state the gradient
sees, so for DSGD, D-RR, gradient tracking, exact diffusion and the compressed and
push methods it is the state of the very forward pass that gave the gradient (XLA
usually shares the two forward passes). For :func:`algos.fedavg` and
:func:`algos.scaffold` that iterate is the server model, so each client's
statistics follow the server model on its own minibatches rather than its local
iterate between aggregations, and with ``participation < 1`` the clients not
sampled update their statistics too (deviations from training BatchNorm inside the
local steps; the cohort methods, :func:`algos.cohort_fedavg`, update the state at
the local iterate, for the cohort only).

A plain ``loss(params, batch)`` needs none of this: :func:`with_model` then
returns the factory's method as it is, bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from decentjax.core import requirements
from decentjax.core.algorithm import AgentMapped, Algorithm, Batch, map_over_agents
from decentjax.core.comm import Gossip
from decentjax.core.conv_lowering import lowered_on_cpu
from decentjax.core.loss_inputs import (
    LossInputs,
    Task,
    Variables,
    as_task,
    loss_keys,
    split_variables,
)
from decentjax.core.tree import block_size

PyTree = Any


class WithModelState(NamedTuple):
    """State of a method run by :func:`with_model`.

    Attributes:
      inner: the method's own state.
      model_state: per-agent model state :math:`s_i`, leaves ``(b, ...)``; ``{}``
        without state.
    """

    inner: Any
    model_state: PyTree


def _map_forward(fn: Callable, batch_size: int | None, params: PyTree, inputs: LossInputs):
    """``fn`` agent by agent with ``lax.map`` (for losses marked by ``map_over_agents``)."""
    return jax.lax.map(lambda args: fn(*args), (params, inputs), batch_size=batch_size)


def _check_state_operator(comm: Any, method: str) -> None:
    """Raises unless ``comm`` can mix model state: an exact, row-stochastic :class:`Gossip`.

    Rows summing to one make every agent's new statistics a weighted average of
    statistics (a variance stays a variance). Compressed and time-varying operators
    keep memories or a round in the method's state, which a second exchange of the
    model state would have to share, so they are rejected rather than misused.
    """
    what = f"{method} with state_mixing='gossip'"
    if not isinstance(comm, Gossip):
        raise ValueError(
            f"{what}: mixing the model state needs an exact gossip operator "
            f"(core.comm.Gossip), got {type(comm).__name__}; use state_mixing='local'."
        )
    requirements.check_operator(comm, what, "pull")


def with_model(
    factory: Callable[..., Algorithm],
    loss: Task | Callable,
    comm: Any,
    /,
    *args: Any,
    **kwargs: Any,
) -> Algorithm:
    r"""``factory(loss, comm, *args, **kwargs)`` for a loss with a key and model state.

    Args:
      factory: a method factory whose first two arguments are the per-agent loss and
        the communication operator (every factory of :mod:`algos` except the cohort
        methods, which take a task directly).
      loss: a :class:`~core.loss_inputs.Task` (stateful model: initial params are
        :class:`~core.loss_inputs.Variables`), a ``loss(params, batch, key)``, or a
        plain ``loss(params, batch)``; any of them may be marked by
        :func:`core.algorithm.map_over_agents` (per-agent gradients and the state's
        forward pass then run agent by agent with ``lax.map``).
      comm: the method's communication operator; ``"gossip"`` state mixes with it.
      *args: further arguments of ``factory``.
      **kwargs: keyword arguments of ``factory`` (``learning_rate=``, ...).

    Returns:
      An :class:`~core.algorithm.Algorithm`. For a stateful task its ``init`` takes
      per-agent :class:`~core.loss_inputs.Variables`, its state is
      :class:`WithModelState` and ``params(state)`` is ``Variables(params, state)``
      (metrics at x̄ use the agents' average state; ``consensus`` counts the state's
      spread too, which in ``"local"`` mode does not vanish); for a keyed loss ``init`` and
      ``params`` are the method's; for a plain loss the method is returned unchanged.

    Raises:
      ValueError: if ``loss`` fits neither ``(params, batch)`` nor ``(params, batch,
        key)``; if the state is to be gossiped with an operator that is not an exact,
        row-stochastic :class:`~core.comm.Gossip` (push, compressed, time-varying);
        otherwise whatever ``factory`` raises. Before compiling.
    """
    mapped = loss if isinstance(loss, AgentMapped) else None
    task = as_task(loss if mapped is None else loss.loss_fn)
    if task is None:
        return factory(loss, comm, *args, **kwargs)
    if mapped is None:
        inner = factory(task.loss, comm, *args, **kwargs)
        forward = jax.vmap(lowered_on_cpu(task.value_and_state))
    else:
        inner = factory(map_over_agents(task.loss, mapped.batch_size), comm, *args, **kwargs)
        forward = functools.partial(
            _map_forward, lowered_on_cpu(task.value_and_state), mapped.batch_size
        )
    if task.stateful and task.state_mixing == "gossip":
        _check_state_operator(comm, inner.name)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> WithModelState:
        if task.stateful:
            params, model_state = split_variables(params, inner.name)
            return WithModelState(inner.init(params, data, key), model_state)
        return WithModelState(inner.init(params, data, key), {})

    def step(state: WithModelState, batch: Batch, key: jax.Array):
        keys = loss_keys(key, block_size(batch.data))
        inputs = LossInputs(batch.data, keys, state.model_state)
        new_inner, metrics = inner.step(state.inner, batch._replace(data=inputs), key)
        model_state = state.model_state
        if task.stateful and jax.tree.leaves(model_state):
            _, model_state = forward(inner.params(state.inner), inputs)
            if task.state_mixing == "gossip":
                model_state = comm.mix(model_state)
                sent = jnp.asarray(metrics["bytes_sent"]) + comm.bytes_per_mix(model_state)
                metrics = {**metrics, "bytes_sent": sent}
        return WithModelState(new_inner, model_state), metrics

    def params(state: WithModelState) -> PyTree:
        if task.stateful:
            return Variables(inner.params(state.inner), state.model_state)
        return inner.params(state.inner)

    return Algorithm(init=init, step=step, params=params, name=inner.name)
