r"""Per-agent (per-client) evaluation: how the agents' own iterates fare, agent by agent.

The metrics of :mod:`core.metrics` are taken at the average :math:`\bar x`. In a
decentralized or federated run each agent (client) holds its own iterate
:math:`x_i`, and what a deployment sees is the spread of those: the mean agent, the
worst agent and the standard deviation over agents. :func:`with_agent_metrics` adds,
next to the metrics at :math:`\bar x`,

* ``agent_loss_{mean,worst,std}`` of :math:`f_i(x_i)`, agent ``i``'s objective on its
  own local (training) data at its own iterate (worst: the largest);
* ``agent_accuracy_{mean,worst,std}`` of agent ``i``'s accuracy on its local data
  (worst: the smallest), when the objective has an accuracy;
* ``agent_test_loss_*`` / ``agent_test_accuracy_*``: the same on agent ``i``'s shard
  of the test set (sharded over the agents like the data), when there is one.

The standard deviation is the population one, :math:`\sqrt{\frac1n\sum_i (v_i-\bar v)^2}`.
All of it runs in local view inside ``jax.shard_map``, as :mod:`core.metrics` does:
one ``pmean`` / ``pmax`` / ``pmin`` per statistic over the agent axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from decentjax.core.comm import Gossip
from decentjax.core.conv_lowering import lowered_on_cpu
from decentjax.core.mesh import AGENT_AXIS
from decentjax.core.metrics import Evaluator

PyTree = Any


def distribution(values: jax.Array, comm: Gossip, *, worst: str) -> dict[str, jax.Array]:
    """Mean, worst and standard deviation over all agents of a per-agent vector (local view).

    Args:
      values: this device's block of per-agent values, shape ``(b,)``.
      comm: the communication operator; its server ``mean`` averages over agents.
      worst: ``"max"`` (e.g. a loss) or ``"min"`` (e.g. an accuracy).

    Returns:
      ``{"mean", "worst", "std"}``: scalars, the same on every device.
    """
    if worst not in ("max", "min"):
        raise ValueError(f"worst must be 'max' or 'min', got {worst!r}.")
    mean = comm.mean(values)
    reduce, collective = (jnp.max, jax.lax.pmax) if worst == "max" else (jnp.min, jax.lax.pmin)
    return {
        "mean": mean,
        "worst": collective(reduce(values), AGENT_AXIS),
        "std": jnp.sqrt(comm.mean((values - mean) ** 2)),
    }


def with_agent_metrics(
    evaluate: Evaluator,
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    comm: Gossip,
    *,
    accuracy_fn: Callable[[PyTree, PyTree], jax.Array] | None = None,
) -> Evaluator:
    """``evaluate`` with the per-agent distributions of the module docstring added.

    Args:
      evaluate: an evaluator from :func:`core.metrics.make_evaluator`.
      loss_fn: per-agent objective ``(params, batch) -> scalar``.
      comm: the communication operator (its server ``mean``).
      accuracy_fn: optional ``(params, batch) -> fraction correct``.

    Returns:
      ``evaluate(params, data, test_data) -> metrics`` (local view), the metrics of
      ``evaluate`` plus ``agent_*`` ones.

    Each agent is evaluated at its own parameters, so on XLA:CPU ``loss_fn`` and
    ``accuracy_fn`` run with their 2-D convolutions as patches times a matrix
    (:func:`core.conv_lowering.lowered_on_cpu`, as the gradients do): per-agent weights
    make native convolutions grouped ones, which XLA:CPU runs slowly (a loss marked
    :func:`core.conv_lowering.native_convs` stays native).
    """
    per_agent = {"loss": (jax.vmap(lowered_on_cpu(loss_fn)), "max")}
    if accuracy_fn is not None:
        per_agent["accuracy"] = (jax.vmap(lowered_on_cpu(accuracy_fn)), "min")

    def evaluate_with_agents(params: PyTree, data: PyTree, test_data: PyTree | None = None):
        metrics = evaluate(params, data, test_data)
        splits = {"": data} if test_data is None else {"": data, "test_": test_data}
        for split, split_data in splits.items():
            for name, (fn, worst) in per_agent.items():
                stats = distribution(fn(params, split_data), comm, worst=worst)
                metrics.update({f"agent_{split}{name}_{k}": v for k, v in stats.items()})
        return metrics

    return evaluate_with_agents
