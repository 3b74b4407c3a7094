"""Host-side checks and static shapes of a cohort federated round (see :mod:`algos.cohort`)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from decentjax.core import cohort
from decentjax.core.mesh import AGENT_AXIS
from decentjax.core.tree import scale

PyTree = Any
StepSize = float | optax.Schedule


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def _check_step(value: Any, name: str) -> StepSize:
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number or an optax schedule, got {value!r}.")
    return float(value)


def _at(step: StepSize, index: jax.Array) -> jax.Array | float:
    return step(index) if callable(step) else step


class _Plan:
    """Host-side checks and the static shapes of a round, shared by the methods."""

    def __init__(
        self,
        n_clients: int,
        cohort_size: Any,
        batch_size: Any,
        local_steps: Any,
        local_epochs: Any,
        weights: Any,
        aggregation: Any,
    ):
        self.n = _check_positive_int(n_clients, "n_clients")
        self.size = _check_positive_int(cohort_size, "cohort_size")
        if self.size > self.n:
            raise ValueError(
                f"cohort_size={self.size} is larger than the number of clients n_clients="
                f"{self.n}; a cohort is drawn without replacement."
            )
        self.batch = _check_positive_int(batch_size, "batch_size")
        if (local_steps is None) == (local_epochs is None):
            raise ValueError(
                "give exactly one of local_steps (K steps of batch_size) or local_epochs (E "
                f"passes over each client's data); got local_steps={local_steps!r}, "
                f"local_epochs={local_epochs!r}."
            )
        self.local_steps = (
            None if local_steps is None else _check_positive_int(local_steps, "local_steps")
        )
        self.local_epochs = (
            None if local_epochs is None else _check_positive_int(local_epochs, "local_epochs")
        )
        if aggregation not in ("unbiased", "self_normalized"):
            raise ValueError(
                f"aggregation must be 'unbiased' or 'self_normalized', got {aggregation!r}."
            )
        self.aggregation = aggregation
        if isinstance(weights, str):
            if weights not in ("samples", "uniform"):
                raise ValueError(
                    f"weights must be 'samples', 'uniform' or {self.n} positive numbers, got "
                    f"{weights!r}."
                )
            self.weights = weights
        else:
            w = np.asarray(weights, np.float64)
            if w.shape != (self.n,) or not np.all(np.isfinite(w)) or not np.all(w > 0):
                raise ValueError(
                    f"weights must be {self.n} finite positive numbers (one per client), got "
                    f"shape {w.shape}"
                    + (f" with minimum {w.min()!r}." if w.size and w.ndim == 1 else ".")
                )
            self.weights = w / w.sum()

    def steps(self, m_max: int) -> int:
        """Local steps per round (the most any client takes)."""
        if self.local_steps is not None:
            return self.local_steps
        return self.local_epochs * math.ceil(m_max / self.batch)

    def sample_orders(
        self, keys: jax.Array, counts: jax.Array, m_max: int, min_count: int
    ) -> tuple[jax.Array, jax.Array]:
        """Each member's ``(steps, batch)`` sample indices and mask for a round, from its
        key and count (:func:`core.cohort.sample_order`, vmapped over the members)."""

        def one(key, count):
            return cohort.sample_order(
                key,
                count,
                m_max,
                self.batch,
                local_steps=self.local_steps,
                local_epochs=self.local_epochs,
                min_count=min_count,
            )

        return jax.vmap(one)(keys, counts)

    def check_store(self, store: cohort.ClientStore) -> tuple[int, int]:
        """``(block, m_max)`` of this device's store; errors on a wrong client count."""
        block, m_max = jax.tree.leaves(store.data)[0].shape[:2]
        n = block * jax.lax.axis_size(AGENT_AXIS)
        if n != self.n:
            raise ValueError(
                f"the method was built for n_clients={self.n} but the store holds {n} clients."
            )
        return block, m_max

    def probabilities(
        self, store: cohort.ClientStore, members: jax.Array, mine: jax.Array, dtype
    ) -> jax.Array:
        """:math:`p_i` of this device's cohort members ``mine`` (0 for dummy members);
        ``members`` is the whole cohort (for the gather of the counts)."""
        live = mine >= 0
        if isinstance(self.weights, np.ndarray):
            p = jnp.asarray(self.weights, dtype)[jnp.where(live, mine, 0)]
        elif self.weights == "uniform":
            p = jnp.full(mine.shape, 1.0 / self.n, dtype)
        else:
            total = cohort.total_count(store).astype(dtype)
            counts = cohort.gather(store.counts, members)  # cheap: |S| ints
            return counts.astype(dtype) / total  # dummies have count 0
        return jnp.where(live, p, jnp.zeros_like(p))

    def aggregate(self, deltas: PyTree, p: jax.Array) -> PyTree:
        """The server's :math:`\\Delta^r` from this device's members (replicated)."""
        return self.finish(cohort.local_member_sum(scale(p, deltas)), p)

    def finish(self, local_sum: PyTree, p: jax.Array) -> PyTree:
        """:math:`\\Delta^r` from this device's :math:`\\sum_i p_i \\Delta_i` (one
        all-reduce per leaf; ``p``: this device's members' weights)."""
        total = cohort.devices_sum(local_sum)
        if self.aggregation == "unbiased":
            factor = self.n / self.size
            return jax.tree.map(lambda t: t * jnp.asarray(factor, t.dtype), total)
        mass = cohort.cohort_sum(p)
        return jax.tree.map(lambda t: t / mass.astype(t.dtype), total)
