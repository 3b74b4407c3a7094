"""Any Flax NNX module as pure functions, with model state and random streams.

:func:`from_nnx` turns a module constructor ``ctor(rngs=...)`` into an
:class:`NnxModel`:

* ``init(key) -> Variables(params, state)``: the ``nnx.Param`` leaves (trained,
  mixed and averaged by the methods) and every other variable the module holds
  (BatchNorm ``batch_stats``: its running ``mean`` and ``var``), both as plain
  nested dicts. ``jax.vmap(model.init)(keys)`` gives per-agent variables with the
  leading agent axis on params and state alike.
* ``apply(params, state, x, key, train) -> (outputs, new_state)``: ``nnx.merge`` of
  the graphdef captured once (from an abstract module) with ``params`` and
  ``state``. In train mode BatchNorm normalises with the batch statistics and
  updates its running averages, and dropout draws from ``key``; in eval mode
  (``train=False``) BatchNorm uses the running averages and dropout is off.
  Train/eval is set with ``nnx.view`` on the module's ``deterministic`` /
  ``use_running_average`` flags.

RNG streams (``nnx.Rngs`` held by ``nnx.Dropout``) are not carried between steps:
every call reseeds each stream from ``key`` (the agent's step key, see
:mod:`core.loss_inputs`), so the model is a pure function of its arguments and a run
is the same on any number of devices.

:meth:`NnxModel.objective` builds the :class:`core.loss_inputs.Task` the methods
train: any objective factory of :mod:`models.objectives` that takes the model's
``apply_fn`` (e.g. :func:`models.objectives.softmax_cross_entropy`). Run it with
:func:`algos.with_model` (decentralized and federated methods) or pass it to
:func:`algos.cohort_fedavg` directly.

**Evaluation at x̄ uses the average of the agents' statistics.** The metrics of
:mod:`core.metrics` evaluate at :math:`\\bar x = \\frac1n\\sum_i x_i`; the point is a
:class:`Variables`, so the same mean averages the running ``mean`` and ``var`` of
BatchNorm. That is the statistics of the averaged model in the same sense as the
averaged weights, it does not depend on the device count or on agent 0's data (in
local mode with label-skewed data agent 0's statistics describe agent 0's classes
only), and it is what FedAvg does to every variable. (The average of per-agent
variances omits the spread of the per-agent means, so in local mode with
heterogeneous data it slightly underestimates the pooled variance.) The objective's
``name`` says so, e.g. ``softmax_cross_entropy[eval: mean of agents' state]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from decentjax.core.loss_inputs import LossInputs, StateMixing, Task, Variables, check_state_mixing

PyTree = Any
_MODE_FLAGS = ("deterministic", "use_running_average")
EVAL_NOTE = "eval: mean of agents' state"


class NnxModel(NamedTuple):
    """A Flax NNX module as pure functions of its :class:`Variables`.

    Attributes:
      init: ``init(key) -> Variables``; vmap it over keys for per-agent variables.
      apply: ``apply(params, state, x, key, train) -> (outputs, new_state)``.
      state_mixing: ``"local"`` or ``"gossip"`` (see :func:`from_nnx`).
      name: a short name for logs.
    """

    init: Callable[[jax.Array], Variables]
    apply: Callable[..., tuple[jax.Array, PyTree]]
    state_mixing: StateMixing
    name: str

    def objective(self, factory: Callable[..., Any], /, **kwargs: Any) -> Task:
        """The training :class:`~core.loss_inputs.Task` of an objective of this model.

        Args:
          factory: an objective factory taking the model's ``apply_fn(params, x)`` as its
            first argument and returning an :class:`models.objectives.Objective`, e.g.
            :func:`models.objectives.softmax_cross_entropy`.
          **kwargs: passed to ``factory`` (``num_classes=``, ``reg=``).

        Returns:
          A task whose training loss runs the model in train mode (batch statistics,
          dropout from the agent's key) and returns the updated state, and whose
          ``eval_loss`` / ``accuracy`` take :class:`Variables` and run it in eval mode
          with the state they are given (at x̄: the agents' average statistics).
        """
        apply = self.apply

        def value_and_state(params: PyTree, inputs: LossInputs) -> tuple[jax.Array, PyTree]:
            new_state = []

            def train_apply(p: PyTree, x: jax.Array) -> jax.Array:
                out, state = apply(p, inputs.state, x, inputs.key, True)
                new_state.append(state)
                return out

            # The objective is rebuilt per trace (cheap host checks) so that the state the
            # forward pass leaves comes back beside the value, as a has_aux output.
            value = factory(train_apply, **kwargs).loss(params, inputs.data)
            if not new_state:
                raise ValueError(f"the objective {factory.__name__} never called the model.")
            return value, new_state[-1]

        def eval_fn(which: str) -> Callable[[Variables, PyTree], jax.Array]:
            def fn(variables: Variables, batch: PyTree) -> jax.Array:
                # Statistics are not trained: no gradient flows into them at x̄.
                state = jax.lax.stop_gradient(variables.state)

                def eval_apply(p: PyTree, x: jax.Array) -> jax.Array:
                    return apply(p, state, x, None, False)[0]

                return getattr(factory(eval_apply, **kwargs), which)(variables.params, batch)

            return fn

        template = factory(lambda p, x: x, **kwargs)
        return Task(
            value_and_state=value_and_state,
            eval_loss=eval_fn("loss"),
            accuracy=None if template.accuracy is None else eval_fn("accuracy"),
            stateful=True,
            state_mixing=self.state_mixing,
            name=f"{template.name}[{EVAL_NOTE}]",
            check_data=template.check_data,
        )


def _split(module: nnx.Module) -> tuple[Any, Any, Any, Any]:
    """``(graphdef, params, rng_state, state)``: ``state`` is everything but params and RNGs."""
    return nnx.split(module, nnx.Param, nnx.RngState, ...)


def _check_call(module: nnx.Module, name: str) -> None:
    """Raises ``ValueError`` unless the module is called as ``module(x)``."""
    try:
        signature = inspect.signature(module.__call__)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot read the signature of __call__ ({err}).") from err
    params = list(signature.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in params if p.default is inspect.Parameter.empty]
    fits = (
        positional
        and required[:1] == positional[:1]
        and all(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in required[1:])
        and len(required) == 1
    )
    if not fits:
        raise ValueError(
            f"{name}: the module must be called as module(x) (one required argument, the "
            f"batch), got __call__{signature}; wrap it in a module whose __call__ takes x only."
        )


def _check_state(state: Any, state_mixing: str, name: str) -> None:
    """Raises ``ValueError`` for state a method cannot carry: non-arrays, or gossip of ints."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        where = jax.tree_util.keystr(path)
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise ValueError(f"{name}: state leaf {where} is {type(leaf).__name__}, not an array.")
        if state_mixing == "gossip" and not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise ValueError(
                f"{name}: state_mixing='gossip' averages the model state with the mixing "
                f"weights, but state leaf {where} has dtype {leaf.dtype}; use "
                "state_mixing='local', or keep only floating-point state."
            )


def _fresh_rngs(rng_template: Any, key: jax.Array | None) -> Any:
    """RNG streams reseeded from ``key``: stream ``j`` gets ``fold_in(key, j)``, counts 0."""
    leaves, treedef = jax.tree.flatten(rng_template)
    base = jax.random.key(0) if key is None else key
    fresh = [
        jax.random.fold_in(base, j)
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        else jnp.zeros(leaf.shape, leaf.dtype)
        for j, leaf in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, fresh)


def from_nnx(
    ctor: Callable[..., nnx.Module],
    *,
    state_mixing: StateMixing = "local",
    name: str | None = None,
) -> NnxModel:
    """Wraps any Flax NNX module constructor as a model with state and random streams.

    Non-``Param`` variables (BatchNorm ``batch_stats``) become per-agent model state
    beside the params; ``nnx.Rngs`` streams (dropout) are fed from the agent's step
    key. The methods train the params; the state is updated by each agent's forward
    pass and then either kept by the agent (``"local"``: each agent its own
    statistics, the usual choice, as in FedBN) or mixed with the method's operator
    after every step like the params (``"gossip"``: :math:`S \\leftarrow W S`; for the
    cohort methods: averaged by the server). Evaluation at x̄ uses the average of the
    agents' statistics (module docstring).

    Args:
      ctor: ``ctor(rngs=nnx.Rngs(...)) -> nnx.Module``; the module is called as
        ``module(x)`` on a batch ``x``.
      state_mixing: ``"local"`` or ``"gossip"``.
      name: a name for logs; default the module's class name.

    Returns:
      An :class:`NnxModel`.

    Raises:
      ValueError: if ``state_mixing`` is unknown, ``ctor`` does not accept ``rngs=``,
        the module is not called as ``module(x)``, or its state is not arrays
        (``"gossip"``: not floating-point arrays). All on the host, before compiling.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.dense = nnx.Linear(4, 3, rngs=rngs)
      ...         self.norm = nnx.BatchNorm(3, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.norm(self.dense(x))
      >>> model = from_nnx(lambda rngs: Net(rngs))
      >>> v = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 8))
      >>> v.params["dense"]["kernel"].shape, v.state["norm"]["mean"].shape
      ((8, 4, 3), (8, 3))
    """
    state_mixing = check_state_mixing(state_mixing)
    if not callable(ctor):
        raise ValueError(f"ctor must be a module constructor ctor(rngs=...), got {ctor!r}.")
    try:
        abstract = nnx.eval_shape(lambda: ctor(rngs=nnx.Rngs(0)))
    except TypeError as err:
        raise ValueError(
            f"ctor must accept rngs= (ctor(rngs=nnx.Rngs(key)) -> nnx.Module); calling it "
            f"failed with: {err}"
        ) from err
    if not isinstance(abstract, nnx.Module):
        raise ValueError(f"ctor(rngs=...) must return an nnx.Module, got {type(abstract)!r}.")
    name = name or type(abstract).__name__
    _check_call(abstract, name)
    graphdef, _, rng_template, state_template = _split(abstract)
    _check_state(nnx.to_pure_dict(state_template), state_mixing, name)
    rng_template = nnx.to_pure_dict(rng_template)
    flags = {
        flag
        for _, node in nnx.iter_graph(abstract)
        if isinstance(node, nnx.Module)
        for flag in _MODE_FLAGS
        if hasattr(node, flag)
    }

    def init(key: jax.Array) -> Variables:
        _, params, _, state = _split(ctor(rngs=nnx.Rngs(key)))
        return Variables(nnx.to_pure_dict(params), nnx.to_pure_dict(state))

    def apply(
        params: PyTree, state: PyTree, x: jax.Array, key: jax.Array | None, train: bool
    ) -> tuple[jax.Array, PyTree]:
        module = nnx.merge(graphdef, params, _fresh_rngs(rng_template, key), state)
        if flags:
            module = nnx.view(module, **{flag: not train for flag in flags})
        out = module(x)
        return out, nnx.to_pure_dict(_split(module)[3])

    return NnxModel(init=init, apply=apply, state_mixing=state_mixing, name=name)
