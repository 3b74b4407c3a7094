"""Losses that take a per-agent key and carry model state (dropout, BatchNorm).

A plain per-agent objective is ``loss(params, batch) -> scalar``. Two kinds of
workload need more:

* **randomness in the loss** (dropout, on-device augmentation):
  ``loss(params, batch, key) -> scalar``, with ``key`` a per-agent PRNG key;
* **model state** that the forward pass updates (BatchNorm ``batch_stats``): the
  loss reads the agent's current state and returns the new one.

A :class:`Task` describes such a loss once, as ``value_and_state(params, inputs) ->
(value, new_state)`` on :class:`LossInputs` (the agent's minibatch, key and model
state). Every method still sees a loss ``(params, batch) -> scalar``: its ``batch``
is a :class:`LossInputs` (the run feeds it, see :func:`algos.with_model`), which
the methods pass through to ``jax.grad`` without looking inside.

Keys. The key of agent ``i`` at a step is ``fold_in(fold_in(step_key, LOSS_STREAM),
i)``, where ``step_key = fold_in(fold_in(fold_in(run_key, epoch), 1), step)`` is
the key the run loop hands every method (:mod:`core.loop`), so a run is the same on
any number of devices; ``LOSS_STREAM`` keeps it apart from the keys a method draws
from ``step_key`` itself (client sampling, compression).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax

from decentjax.core.mesh import agent_keys

PyTree = Any
StateMixing = Literal["local", "gossip"]
LOSS_STREAM = 0x10557  # folded into the step key before the agent index
STATE_MIXINGS = ("local", "gossip")


class LossInputs(NamedTuple):
    """What a :class:`Task`'s loss sees of one agent at one step.

    Attributes:
      data: the agent's minibatch (leaves ``(batch_size, ...)``).
      key: the agent's PRNG key for this step (typed key, shape ``()``).
      state: the agent's model state (e.g. ``{"bn": {"mean", "var"}}``); ``{}`` for a
        model without state.
    """

    data: PyTree
    key: jax.Array
    state: PyTree


class Variables(NamedTuple):
    """One model's variables: what a stateful model's methods carry per agent.

    Attributes:
      params: the trained leaves (``nnx.Param``), a nested dict.
      state: every other variable (BatchNorm ``mean``/``var``), a nested dict; ``{}``
        when the model has none.
    """

    params: PyTree
    state: PyTree


class Task(NamedTuple):
    """A per-agent loss with a key and model state, and how to evaluate it.

    Attributes:
      value_and_state: ``(params, LossInputs) -> (value, new_state)``: the training
        loss (train mode: batch statistics, dropout on) and the model state the
        forward pass leaves.
      eval_loss: ``(params, batch) -> scalar`` at the point metrics evaluate
        (:class:`Variables` for a stateful model), or ``None``.
      accuracy: ``(params, batch) -> fraction correct`` likewise, or ``None``.
      stateful: whether there is model state (the run then carries it per agent).
      state_mixing: ``"local"`` (each agent keeps its own statistics) or
        ``"gossip"`` (mixed with the method's operator after every step).
      name: a short name for logs; says which statistics evaluation uses.
      check_data: host-side data check of the objective, or ``None``.
    """

    value_and_state: Callable[[PyTree, LossInputs], tuple[jax.Array, PyTree]]
    eval_loss: Callable[[PyTree, PyTree], jax.Array] | None
    accuracy: Callable[[PyTree, PyTree], jax.Array] | None
    stateful: bool
    state_mixing: StateMixing
    name: str
    check_data: Callable[[Any], None] | None = None

    def loss(self, params: PyTree, inputs: LossInputs) -> jax.Array:
        """The training loss alone: what a method differentiates."""
        return self.value_and_state(params, inputs)[0]

    def __call__(self, params: PyTree, inputs: LossInputs) -> jax.Array:
        """The training loss (so a task can be marked by ``map_over_agents``)."""
        return self.loss(params, inputs)


def loss_arity(loss_fn: Callable) -> int:
    """How many positional arguments a loss takes: 2 ``(params, batch)`` or 3 ``(.., key)``.

    Raises:
      ValueError: if ``loss_fn`` is not callable, its signature cannot be read, or it
        does not take exactly two or three positional arguments (``*args`` is ambiguous
        and rejected too).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}.")
    try:
        signature = inspect.signature(loss_fn)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"cannot read the signature of loss_fn={loss_fn!r} ({err}); wrap it in a "
            "function loss(params, batch) or loss(params, batch, key)."
        ) from err
    kinds = [p.kind for p in signature.parameters.values()]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    n = sum(k in positional for k in kinds)
    required_kw = [
        p.name
        for p in signature.parameters.values()
        if p.kind == inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    if inspect.Parameter.VAR_POSITIONAL in kinds or n not in (2, 3) or required_kw:
        raise ValueError(
            f"loss_fn must take (params, batch) or (params, batch, key); got the signature "
            f"{signature} of {getattr(loss_fn, '__name__', loss_fn)!r}."
        )
    return n


def as_task(loss: Callable | Task) -> Task | None:
    """The :class:`Task` of a loss, or ``None`` for a plain ``(params, batch)`` loss.

    Decided once, when a method is built: a :class:`Task` is returned as it is; a
    three-argument ``loss(params, batch, key)`` becomes a stateless task whose key is
    the agent's step key; a two-argument loss needs nothing and gives ``None``, so
    the method runs exactly as before.

    Raises:
      ValueError: for a loss whose signature fits neither form (see :func:`loss_arity`).
    """
    if isinstance(loss, Task):
        return loss
    if loss_arity(loss) == 2:
        return None

    def value_and_state(params: PyTree, inputs: LossInputs) -> tuple[jax.Array, PyTree]:
        return loss(params, inputs.data, inputs.key), inputs.state

    return Task(
        value_and_state=value_and_state,
        eval_loss=None,
        accuracy=None,
        stateful=False,
        state_mixing="local",
        name=getattr(loss, "__name__", "loss"),
    )


def split_variables(variables: Any, method: str) -> tuple[PyTree, PyTree]:
    """``(params, state)`` of the initial :class:`Variables` of a stateful model.

    Raises:
      ValueError: if ``variables`` is not a :class:`Variables` (e.g. bare params).
    """
    if not isinstance(variables, Variables):
        raise ValueError(
            f"{method}: a model with state starts from Variables(params, state), e.g. "
            f"jax.vmap(model.init)(keys); got {type(variables).__name__}."
        )
    return variables.params, variables.state


def loss_keys(key: jax.Array, block: int) -> jax.Array:
    """The per-agent loss keys of a step (local view): see the module docstring."""
    return agent_keys(jax.random.fold_in(key, LOSS_STREAM), block)


def check_state_mixing(state_mixing: Any) -> StateMixing:
    """Returns ``state_mixing`` if it is ``"local"`` or ``"gossip"``; raises otherwise."""
    if state_mixing not in STATE_MIXINGS:
        raise ValueError(f"state_mixing must be 'local' or 'gossip', got {state_mixing!r}.")
    return state_mixing
