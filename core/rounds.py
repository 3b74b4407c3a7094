r"""The run loop of cohort federated methods: a chunk of rounds is one compiled program.

A :class:`RoundAlgorithm` is the cross-device counterpart of
:class:`core.algorithm.Algorithm`: one call of ``round`` is one whole federated
round (draw the cohort, gather it, local training, aggregation, write back), and
its state is a :class:`CohortState` whose server part is held *once*, replicated
on every device, while the per-client part keeps one row per client, sharded over
the agent axis (which here indexes clients). :class:`RoundRunner` compiles
``jit(shard_map(lax.scan(round)))`` over a chunk of rounds, with the state donated,
and :func:`train_rounds` is the host loop (one device round trip per log chunk).

Keys: round ``r`` uses ``fold_in(key, r)``; what a method derives from it (the
cohort draw, each member's sample order) folds in global client indices, so a
run is the same on any number of devices.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core import cohort
from decentjax.core.mesh import AGENT_AXIS, replicate, shard_agents

PyTree = Any
_AGENTS = jax.P(AGENT_AXIS)
_REPLICATED = jax.P()


class CohortState(NamedTuple):
    """State of a cohort federated method.

    Attributes:
      server: what the server holds (model, server optimizer state, control
        variate), replicated on every device, no client axis.
      clients: per-client state (e.g. SCAFFOLD's :math:`c_i`, a persistent local
        optimizer state), leaves ``(N, ...)`` sharded over the devices; ``()``
        when the method keeps none.
      round: int32 scalar, the index of the next round.
    """

    server: PyTree
    clients: PyTree
    round: jax.Array


STATE_SPECS = CohortState(_REPLICATED, _AGENTS, _REPLICATED)


class RoundAlgorithm(NamedTuple):
    """A federated method that runs one round per call, on the sampled cohort.

    Attributes:
      init: ``(params, store, key) -> CohortState`` in local view: ``params`` is the
        model (replicated), ``store`` this device's block of the
        :class:`core.cohort.ClientStore`.
      round: ``(state, store, key) -> (state, metrics)`` in local view; ``key`` is
        the round's key. Metrics are replicated (``bytes_sent``: bytes one client
        uploaded on average, i.e. ``|S|/N`` times a member's upload; ``cohort``:
        the round's members, ``-1`` for padding).
      params: ``state -> the server model``.
      name: short name for logs.
    """

    init: Callable[..., CohortState]
    round: Callable[..., tuple[CohortState, dict[str, jax.Array]]]
    params: Callable[[CohortState], PyTree]
    name: str


def make_evaluator(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    *,
    accuracy_fn: Callable[[PyTree, PyTree], jax.Array] | None = None,
) -> Callable[[PyTree, cohort.ClientStore], dict[str, jax.Array]]:
    r"""``evaluate(params, store) -> metrics`` at the server model (local view).

    ``loss`` is :math:`\frac{1}{\sum_i m_i}\sum_i\sum_{\ell < m_i} f(x; \xi_{i\ell})`,
    the pooled objective over every client's real samples (padding excluded),
    i.e. :math:`\sum_i p_i f_i` with :math:`p_i \propto m_i`; ``accuracy`` likewise.
    Per-sample values come from ``loss_fn`` on batches of one sample, so the
    objective must be a mean over its batch (every objective in :mod:`models` is).
    """

    def per_sample(fn, params, data):
        def one(sample):
            return fn(params, jax.tree.map(lambda a: a[None], sample))

        return jax.vmap(jax.vmap(one))(data)  # (b, m_max)

    def evaluate(params: PyTree, store: cohort.ClientStore) -> dict[str, jax.Array]:
        m_max = jax.tree.leaves(store.data)[0].shape[1]
        mask = jnp.arange(m_max, dtype=store.counts.dtype)[None, :] < store.counts[:, None]
        total = jax.lax.psum(jnp.sum(store.counts), AGENT_AXIS)

        def pooled(fn):
            values = per_sample(fn, params, store.data)
            s = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
            return jax.lax.psum(s, AGENT_AXIS) / total.astype(values.dtype)

        out = {"loss": pooled(loss_fn)}
        if accuracy_fn is not None:
            out["accuracy"] = pooled(accuracy_fn)
        return out

    return evaluate


class RoundRunner:
    """Compiled init / evaluation / multi-round run of one :class:`RoundAlgorithm`.

    Args:
      algorithm: the method.
      mesh: a 1-D agent mesh over which the clients are sharded
        (:func:`core.mesh.make_agent_mesh` with ``n_agents = N``).
      evaluate: optional metrics at the server model (:func:`make_evaluator`),
        computed after every chunk of rounds.
    """

    def __init__(self, algorithm: RoundAlgorithm, mesh: jax.sharding.Mesh, evaluate=None):
        self.algorithm = algorithm
        self.mesh = mesh
        self._evaluate = evaluate
        smap = functools.partial(jax.shard_map, mesh=mesh)
        self._init = jax.jit(
            smap(
                algorithm.init,
                in_specs=(_REPLICATED, _AGENTS, _REPLICATED),
                out_specs=STATE_SPECS,
            )
        )
        if evaluate is not None:
            self._eval = jax.jit(
                smap(
                    lambda state, store: evaluate(algorithm.params(state), store),
                    in_specs=(STATE_SPECS, _AGENTS),
                    out_specs=_REPLICATED,
                )
            )
        self._chunks: dict[int, Callable] = {}

    def place(self, store: cohort.ClientStore) -> cohort.ClientStore:
        """Shards a host :class:`~core.cohort.ClientStore` over the mesh's devices."""
        return shard_agents(store, self.mesh)

    def init(self, params: PyTree, store: cohort.ClientStore, key: jax.Array) -> CohortState:
        """The initial state: the server model ``params`` (one copy, replicated)."""
        return self._init(replicate(params, self.mesh), store, replicate(key, self.mesh))

    def evaluate(self, state: CohortState, store: cohort.ClientStore) -> dict[str, jax.Array]:
        """Metrics at the server model (needs ``evaluate`` at construction)."""
        return self._eval(state, store)

    def _chunk_fn(self, num_rounds: int) -> Callable:
        if num_rounds not in self._chunks:

            def body(state, store, key):
                def one(state, _):
                    return self.algorithm.round(state, store, jax.random.fold_in(key, state.round))

                return jax.lax.scan(one, state, None, length=num_rounds)

            self._chunks[num_rounds] = jax.jit(
                jax.shard_map(
                    body,
                    mesh=self.mesh,
                    in_specs=(STATE_SPECS, _AGENTS, _REPLICATED),
                    out_specs=(STATE_SPECS, _REPLICATED),
                ),
                donate_argnums=(0,),
            )
        return self._chunks[num_rounds]

    def run_rounds(
        self, state: CohortState, store: cohort.ClientStore, key: jax.Array, num_rounds: int
    ) -> tuple[CohortState, dict[str, jax.Array]]:
        """Runs ``num_rounds`` rounds from ``state.round`` on device (state donated).

        Returns:
          The new state and the per-round metrics, each with a leading axis of
          ``num_rounds``.
        """
        return self._chunk_fn(num_rounds)(state, store, replicate(key, self.mesh))

    def lower_rounds(self, state, store, key, num_rounds: int) -> jax.stages.Lowered:
        """The program of :meth:`run_rounds`, lowered (HLO, memory analysis)."""
        return self._chunk_fn(num_rounds).lower(state, store, replicate(key, self.mesh))


def train_rounds(
    runner: RoundRunner,
    state: CohortState,
    store: cohort.ClientStore,
    key: jax.Array,
    num_rounds: int,
    *,
    log_every: int = 1,
) -> tuple[CohortState, list[dict[str, Any]]]:
    """Runs ``num_rounds`` rounds in chunks of ``log_every``; returns the history.

    The history has one row per chunk end (and one for the start when the runner
    evaluates): ``round``, the evaluator's metrics and the cumulative
    ``bytes_sent`` (per client, averaged over all clients).

    Raises:
      ValueError: if ``log_every < 1``.
      FloatingPointError: if a metric becomes NaN or infinite.
    """
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}.")
    start = int(jax.device_get(state.round))
    sent = 0.0
    history = []

    def row(state, r):
        out = {"round": r, "bytes_sent": sent}
        if runner._evaluate is not None:
            out |= {k: float(v) for k, v in jax.device_get(runner.evaluate(state, store)).items()}
        if not all(math.isfinite(v) for v in out.values()):
            raise FloatingPointError(f"{runner.algorithm.name}: non-finite metrics {out}.")
        return out

    history.append(row(state, start))
    done = 0
    while done < num_rounds:
        chunk = min(log_every, num_rounds - done)
        state, metrics = runner.run_rounds(state, store, key, chunk)
        sent += float(np.sum(jax.device_get(metrics["bytes_sent"])))
        done += chunk
        history.append(row(state, start + done))
    return state, history
