"""The launch's asynchronous methods and simulated clock (:mod:`core.asynchrony`).

A config with an ``asynchrony`` section runs its asynchronous methods (``ad_psgd``;
``async_push_sum`` and ``b_cpp_async`` among the directed ones) in ticks of the execution model it
describes, and every other method in synchronous rounds that wait for the slowest
agent, so that all report ``sim_time`` and can be compared against simulated time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections

from decentjax import algos
from decentjax.core import asynchrony, weights
from decentjax.core.algorithm import Algorithm

# Asynchronous methods on undirected graphs: (loss, gossip operator, lr, AsyncModel); they
# run in ticks of config.asynchrony (see asynchrony_model) with config.async_sampler.
ASYNC_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "ad_psgd": lambda loss, op, lr, model: algos.ad_psgd(
        loss, weights.support(op.matrix), model, lr
    ),
}
ASYNC_METHODS = frozenset({*ASYNC_ALGORITHMS, "async_push_sum", "b_cpp_async"})


def asynchrony_model(config: ml_collections.ConfigDict) -> asynchrony.AsyncModel:
    """The execution model of ``config.asynchrony`` (stragglers and message delays).

    ``straggler_fraction`` of the agents (drawn with ``straggler_seed``) are
    ``straggler_slowdown`` times slower (:func:`core.asynchrony.stragglers`); the others
    take one tick per local step; messages are delayed by up to ``max_delay`` ticks.
    Asynchronous methods run in these ticks; every other method of the config runs in
    synchronous rounds that wait for the slowest agent (:func:`core.asynchrony.synchronous`).
    """
    spec = config.get("asynchrony")
    if not spec:
        raise ValueError(
            "asynchronous methods need a config.asynchrony section (straggler_fraction, "
            "straggler_slowdown, straggler_seed, max_delay)."
        )
    times = asynchrony.stragglers(
        config.n_agents,
        spec.straggler_fraction,
        spec.straggler_slowdown,
        seed=spec.get("straggler_seed", 0),
    )
    return asynchrony.async_model(
        config.n_agents, compute_time=times, max_delay=spec.get("max_delay", 0)
    )


def timed(config: ml_collections.ConfigDict, name: str, algorithm: Algorithm) -> Algorithm:
    """``algorithm`` with the simulated clock of ``config.asynchrony`` when it has one.

    Asynchronous methods keep their own clock; a synchronous method is wrapped in
    :func:`core.asynchrony.synchronous` (each round waits for every agent). Without a
    ``config.asynchrony`` section the method is returned unchanged.
    """
    if not config.get("asynchrony") or name.partition("@")[0] in ASYNC_METHODS:
        return algorithm
    return asynchrony.synchronous(algorithm, asynchrony_model(config))
