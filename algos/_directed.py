r"""Host-side checks shared by the directed-graph methods (push-sum, Push-Pull, APD, CPP).

Over a directed graph no doubly stochastic matrix need exist, so these methods use a
row-stochastic pull matrix :math:`R` (:math:`R\mathbf 1 = \mathbf 1`), a
column-stochastic push matrix :math:`C` (:math:`\mathbf 1^\top C = \mathbf 1^\top`),
or both (ALGORITHMS.md §0). Pulling with :math:`R` alone converges to the
:math:`u`-weighted average (:math:`u` the left Perron vector of :math:`R`), not the
mean; pushing with :math:`C` preserves sums, so trackers stay exact, and push-sum
divides by the pushed mass :math:`v^k = C^k\mathbf 1` to de-bias. Each factory takes
the :class:`~core.comm.Gossip` operators it needs (built with
``comm.gossip(M, doubly_stochastic=False)`` from :func:`core.directed.row_stochastic`
/ :func:`core.directed.column_stochastic`) and validates them on the host with the
checks below (:func:`core.requirements.check_operator`) before anything is compiled.

The methods live in :mod:`algos.push_sum` (push-sum / SGP),
:mod:`algos.push_tracking` (Push-Pull / AB, Push-DIGing), :mod:`algos.push_accelerated`
(APD, APD-SC) and :mod:`algos.push_compressed` (CPP, B-CPP). Like
:mod:`algos.tracking`, the tracking methods evaluate :math:`\nabla F` at the current
iterate, *then* form the tracker from the cached previous tracker and gradient, so
:math:`Y^0 = G^0` is the first step's local gradient and the tracker's first step
sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax

from decentjax.algos import _checks
from decentjax.core import directed, requirements
from decentjax.core.comm import Gossip

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]
Variant = Literal["push_pull", "ab"]


def check_pull(pull: Gossip, method: str) -> None:
    """Raises ``ValueError`` (naming ``method``) unless ``pull`` holds a row-stochastic R."""
    requirements.check_operator(pull, method, "pull")


def check_push(push: Gossip, method: str) -> None:
    """Raises ``ValueError`` (naming ``method``) unless ``push`` holds a column-stochastic C."""
    requirements.check_operator(push, method, "push")


def check_pair(pull: Gossip, push: Gossip, method: str) -> None:
    """Checks ``pull`` (R) and ``push`` (C) and that they are for the same agents."""
    if pull.n_agents != push.n_agents:
        raise ValueError(
            f"{method}: pull and push operators must be for the same agents, got R for "
            f"{pull.n_agents} agents and C for {push.n_agents}."
        )
    check_pull(pull, method)
    check_push(push, method)
    try:  # u^T v > 0; always true for two validated matrices, kept as a numerical guard.
        directed.check_push_pull_pair(pull.matrix, push.matrix)
    except ValueError as err:
        raise ValueError(f"{method}: {err}") from None


def check_variant(variant: str) -> None:
    """Raises ``ValueError`` unless ``variant`` is ``"push_pull"`` or ``"ab"``."""
    if variant not in ("push_pull", "ab"):
        raise ValueError(f"variant must be 'push_pull' or 'ab', got {variant!r}.")


def check_unit_interval(name: str, value: Any, method: str) -> float | None:
    """``None`` (use the default) or a float in ``(0, 1]``."""
    if value is None:
        return None
    return _checks.real(name, value, low=0, high=1, low_open=True, method=method)


def check_positive(name: str, value: Any, method: str) -> float:
    """``value`` as a float if it is a finite positive number; raises otherwise."""
    return _checks.real(name, value, low=0, low_open=True, method=method)
