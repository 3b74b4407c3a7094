"""The run loop: a chunk of epochs is one compiled ``jit(shard_map(scan(step)))``.

:class:`Runner` compiles, for an algorithm, a sampler and a mesh,

* ``init``: the algorithm's state, created already sharded on the agent axis;
* ``run_epochs``: ``num_epochs`` epochs as one program: an outer ``lax.scan`` over
  epochs (each agent draws its epoch's sample order on device) around an inner
  ``lax.scan`` over the epoch's steps, with the metrics of :mod:`core.metrics`
  evaluated at the end of every epoch. The state is donated.

:func:`train` is the host loop: it calls ``run_epochs`` once per log chunk,
fetches the metrics with one ``jax.device_get``, checks them for NaN/Inf and
reports progress. There is no per-step host round trip and no Python loop over
agents.

Keys: epoch ``t`` uses ``k_t = fold_in(key, t)``; agent ``i`` samples with
``fold_in(fold_in(k_t, 0), i)`` and step ``l`` gets ``fold_in(fold_in(k_t, 1), l)``,
so a run is the same on any number of devices.
"""

from __future__ import annotations

import functools
import math
import time
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core import mesh as mesh_lib
from decentjax.core import relabel
from decentjax.core.algorithm import Algorithm, Batch
from decentjax.core.mesh import AGENT_AXIS, agent_keys, num_agents, replicate, user_agent_ids
from decentjax.core.metrics import Evaluator
from decentjax.core.operator_tables import AgentTable, TableProgram
from decentjax.core.sampling import Sampler

PyTree = Any
_AGENTS = jax.P(AGENT_AXIS)
_REPLICATED = jax.P()


def _block_average(value: Any, dtype: Any) -> jax.Array:
    """A per-step metric as a scalar: the mean over this device's agents.

    Accepts a Python number, a scalar, or a per-agent vector ``(b,)`` (e.g. the
    bytes of a method where only some agents send). The mean over devices is
    taken once per epoch, not per step, to keep collectives off the inner loop.
    """
    value = jnp.asarray(value, dtype)
    return jnp.mean(value) if value.ndim else value


def _gather(data: PyTree, idx: jax.Array) -> PyTree:
    """Rows ``idx[i]`` of every agent ``i``'s local data: leaves ``(b, batch, ...)``."""
    return jax.tree.map(lambda a: jax.vmap(lambda ai, ii: ai[ii])(a, idx), data)


class Runner:
    """Compiled init / evaluate / multi-epoch run of one algorithm on one mesh.

    Args:
      algorithm: the method (see :class:`core.algorithm.Algorithm`).
      sampler: how agents walk through their local data each epoch.
      mesh: a 1-D agent mesh from :func:`core.mesh.make_agent_mesh`.
      evaluate: metrics function from :func:`core.metrics.make_evaluator`.
      order: ``None``, or the order of a relabelled gossip operator (``op.order``, see
        :mod:`core.relabel`): position ``k`` of the agent axis holds the user's agent
        ``order[k]``. Then per-agent inputs (data, initial params, test data) must
        come in the user's order through :meth:`shard_agents`, which permutes them on
        the host before sharding (arrays placed otherwise are refused), and
        :meth:`params` / :meth:`to_user` return per-agent outputs in the user's
        order. Every gossip operator the program traces must have this order
        (checked while tracing, before compiling).
    """

    def __init__(
        self,
        algorithm: Algorithm,
        sampler: Sampler,
        mesh: jax.sharding.Mesh,
        evaluate: Evaluator,
        *,
        order: np.ndarray | None = None,
    ):
        self.algorithm = algorithm
        self.sampler = sampler
        self.mesh = mesh
        self._evaluate = evaluate
        # Position k of the agent axis holds the user's agent order[k] (a relabelled
        # gossip operator, see core.relabel): per-agent keys fold in that id, so a run
        # is the same, in the user's order, with and without relabelling.
        self.order = None if order is None else relabel.check_order(order, len(order))
        self._labels = None if order is None else AgentTable(self.order.astype(np.int32), "order")
        # The per-agent arrays shard_agents placed (by id), for a relabelled runner's check.
        self._placed: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._init = TableProgram(
            self._labelled(algorithm.init), mesh, (_AGENTS, _AGENTS, _REPLICATED), _AGENTS
        )
        self._eval = TableProgram(
            self._labelled(lambda state, data, test: evaluate(algorithm.params(state), data, test)),
            mesh,
            (_AGENTS, _AGENTS, _AGENTS),
            _REPLICATED,
        )
        self._chunks: dict[int, TableProgram] = {}
        self._executables: dict[Any, jax.stages.Compiled] = {}

    def _labelled(self, fn: Callable) -> Callable:
        """``fn`` (local view) with this runner's layout and agent labels bound."""
        labels, order = self._labels, self.order

        def local(*args):
            with relabel.layout(order):
                if labels is None:
                    return fn(*args)
                block = jax.tree.leaves(args[1])[0].shape[0]
                with user_agent_ids(labels.local(block)):
                    return fn(*args)

        return local

    def shard_agents(self, tree: PyTree, *, what: str = "data") -> PyTree:
        """Per-agent leaves ``(n, ...)`` given in the user's order, sharded in this runner's.

        Permutes on the host (:func:`core.relabel.to_internal`) when the runner is
        relabelled, then places as :func:`core.mesh.shard_agents` (finite check
        included). Use it for data, initial params and test data.

        Args:
          tree: per-agent pytree in the user's agent order (host or device leaves).
          what: what it holds, for error messages (``"data"``, ``"params"``).
        """
        if self.order is not None:
            tree = relabel.to_internal(jax.device_get(tree), self.order)
        placed = mesh_lib.shard_agents(tree, self.mesh, what=what)
        for leaf in jax.tree.leaves(placed):
            self._placed[id(leaf)] = leaf
        return placed

    def to_user(self, tree: PyTree) -> PyTree:
        """Per-agent leaves ``(n, ...)`` of this runner's layout, on the host, in user order."""
        return relabel.to_user(jax.device_get(tree), self.order)

    def params(self, state: Any) -> PyTree:
        """``algorithm.params(state)`` on the host, agents in the user's order."""
        return self.to_user(self.algorithm.params(state))

    def _check_placed(self, tree: PyTree, what: str) -> None:
        """Raises if a relabelled runner gets arrays that :meth:`shard_agents` did not place."""
        if self.order is None or tree is None:
            return
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            if self._placed.get(id(leaf)) is not leaf:
                raise ValueError(
                    f"{what} leaf {jax.tree_util.keystr(path)!r} was not placed by this "
                    "Runner, which is relabelled (order=...): its agents may be in the "
                    "user's order rather than the runner's. Pass per-agent inputs in the "
                    f"user's order through runner.shard_agents({what})."
                )

    def _check_data(self, data: PyTree) -> None:
        m = jax.tree.leaves(data)[0].shape[1]
        if m != self.sampler.num_samples:
            raise ValueError(
                f"the sampler was built for {self.sampler.num_samples} samples per agent but "
                f"the data holds {m}; build it with num_samples={m}."
            )

    def init(self, params: PyTree, data: PyTree, key: jax.Array) -> Any:
        """The algorithm's initial state, sharded on the agent axis.

        Args:
          params: initial per-agent parameters, leaves ``(n_agents, ...)``, sharded
            (by :meth:`shard_agents` when the runner is relabelled).
          data: per-agent datasets, leaves ``(n_agents, m, ...)``, sharded (likewise).
          key: PRNG key.
        """
        if num_agents(params) != num_agents(data):
            raise ValueError(
                f"params hold {num_agents(params)} agents but data holds {num_agents(data)}."
            )
        self._check_data(data)
        self._check_placed(params, "params")
        self._check_placed(data, "data")
        return self._init(params, data, replicate(key, self.mesh))

    def evaluate(self, state: Any, data: PyTree, test_data: PyTree | None = None) -> dict:
        """Metrics of ``state`` (on device; see :mod:`core.metrics`)."""
        self._check_placed(data, "data")
        self._check_placed(test_data, "test_data")
        return self._eval(state, data, test_data)

    def _chunk_fn(self, num_epochs: int) -> TableProgram:
        if num_epochs not in self._chunks:
            body = functools.partial(self._local_run, num_epochs=num_epochs)
            self._chunks[num_epochs] = TableProgram(
                self._labelled(body),
                self.mesh,
                (_AGENTS, _AGENTS, _AGENTS, _REPLICATED, _REPLICATED),
                (_AGENTS, _REPLICATED),
                donate_argnums=(0,),
            )
        return self._chunks[num_epochs]

    def _check_state_block(self, state: Any, block: int) -> None:
        """Raises ``ValueError`` if a state leaf's leading size is not the data's agent block.

        At trace time (local view): a state of another agent count (e.g. restored from
        another run) fails here, naming the leaf, instead of deep inside the vmapped step.
        """
        n_devices = self.mesh.shape[AGENT_AXIS]
        for path, leaf in jax.tree_util.tree_leaves_with_path(state):
            shape = jnp.shape(leaf)
            if not shape or shape[0] != block:
                size = shape[0] if shape else "none (a scalar)"
                raise ValueError(
                    f"state leaf {jax.tree_util.keystr(path)!r} (shape {shape}) has leading "
                    f"size {size} per device, but the data holds a block of {block} agents "
                    f"per device ({block * n_devices} agents on {n_devices} devices); every "
                    "state leaf must lead with the agent axis: build the state with "
                    "Runner.init for this data, or restore one saved with this agent count."
                )

    def _local_epoch(self, state, data, key, epoch, *, keep_states):
        """One epoch in local view: draw the agents' sample orders, scan the steps.

        Returns the new state and the per-step outputs: the bytes sent, and the
        state after every step when ``keep_states`` (for :meth:`trace_epoch`).
        """
        algorithm, sampler = self.algorithm, self.sampler
        block = jax.tree.leaves(data)[0].shape[0]
        self._check_state_block(state, block)
        float_dtype = jnp.result_type(float)
        epoch_key = jax.random.fold_in(key, epoch)
        keys = agent_keys(jax.random.fold_in(epoch_key, 0), block)
        order = jnp.swapaxes(jax.vmap(sampler.indices)(keys), 0, 1)  # (steps, b, batch)
        step_key = jax.random.fold_in(epoch_key, 1)

        def one_step(state, xs):
            position, idx = xs
            batch = Batch(_gather(data, idx), epoch, position)
            state, metrics = algorithm.step(state, batch, jax.random.fold_in(step_key, position))
            sent = _block_average(metrics["bytes_sent"], float_dtype)
            # An asynchronous method's simulated clock (core.asynchrony), if it keeps one.
            clock = metrics.get("sim_time")
            clock = None if clock is None else jnp.max(jnp.asarray(clock, float_dtype))
            return state, ((sent, clock), state if keep_states else None)

        steps = jnp.arange(sampler.steps_per_epoch, dtype=jnp.int32)
        return jax.lax.scan(one_step, state, (steps, order))

    def _local_run(self, state, data, test_data, key, first_epoch, *, num_epochs):
        def one_epoch(state, t):
            state, ((sent, clock), _) = self._local_epoch(
                state, data, key, first_epoch + t, keep_states=False
            )
            metrics = self._evaluate(self.algorithm.params(state), data, test_data)
            # pmean also makes a device-varying count (per-agent bytes) replicated.
            metrics["bytes_sent"] = jax.lax.pmean(jnp.sum(sent), AGENT_AXIS)
            if clock is not None:  # the simulated wall-clock at the epoch's end: latest agent
                metrics["sim_time"] = jax.lax.pmax(clock[-1], AGENT_AXIS)
            return state, metrics

        return jax.lax.scan(one_epoch, state, jnp.arange(num_epochs, dtype=jnp.int32))

    def trace_epoch(self, state: Any, data: PyTree, key: jax.Array, epoch: int) -> Any:
        """The state after every step of epoch ``epoch`` (for tests and debugging).

        Uses the same sample orders and keys as :meth:`run_epochs`. ``state`` is
        not donated.

        Returns:
          A state pytree whose leaves have a leading step axis:
          ``(steps_per_epoch, n_agents, ...)``.
        """
        self._check_data(data)
        self._check_placed(data, "data")

        def body(state, data, key, epoch):
            _, (_, states) = self._local_epoch(state, data, key, epoch, keep_states=True)
            return states

        traced = TableProgram(
            self._labelled(body),
            self.mesh,
            (_AGENTS, _AGENTS, _REPLICATED, _REPLICATED),
            jax.P(None, AGENT_AXIS),
        )
        return traced(state, data, replicate(key, self.mesh), replicate(np.int32(epoch), self.mesh))

    def run_epochs(
        self,
        state: Any,
        data: PyTree,
        key: jax.Array,
        first_epoch: int,
        num_epochs: int,
        test_data: PyTree | None = None,
    ) -> tuple[Any, dict[str, jax.Array]]:
        """Runs epochs ``first_epoch .. first_epoch + num_epochs - 1`` on device.

        ``state`` is donated: do not use it after the call.

        Returns:
          The new state and a dict of per-epoch metric arrays of shape
          ``(num_epochs,)``; ``bytes_sent`` is what one agent sent in each epoch.
        """
        num_epochs, args = self._chunk_call(state, data, key, num_epochs, test_data, first_epoch)
        compiled = self._executable(num_epochs, args)[0]
        return compiled(*self._chunk_fn(num_epochs).arguments(*args))

    def compile_epochs(self, *args: Any, **kwargs: Any) -> float:
        """Compiles (ahead of time) what :meth:`run_epochs` runs for these arguments.

        Args:
          *args: ``state, data, key, num_epochs, test_data=None``, as for
            :meth:`lower_epochs`; ``state`` is not donated.
          **kwargs: the same by name.

        Returns:
          The seconds spent compiling: 0.0 when an executable for the same epoch
          count and argument types is already cached (:meth:`run_epochs` uses it).
        """
        return self._executable(*self._chunk_call(*args, **kwargs))[1]

    def _executable(self, num_epochs: int, args: tuple) -> tuple[jax.stages.Compiled, float]:
        """The compiled chunk for ``args``' types (AOT, cached) and its compile seconds."""
        leaves, structure = jax.tree.flatten(args)
        signature = (num_epochs, structure, tuple(map(jax.typeof, leaves)))
        if signature in self._executables:
            return self._executables[signature], 0.0
        start = time.perf_counter()
        compiled = self._chunk_fn(num_epochs).lower(*args).compile()
        self._executables[signature] = compiled
        return compiled, time.perf_counter() - start

    def _chunk_call(self, state, data, key, num_epochs, test_data=None, first_epoch=0):
        """``(num_epochs, args)`` of a chunk, after checking the data."""
        self._check_data(data)
        self._check_placed(data, "data")
        self._check_placed(test_data, "test_data")
        return num_epochs, self._chunk_args(state, data, key, first_epoch, test_data)

    def _chunk_args(self, state, data, key, first_epoch, test_data) -> tuple:
        return (
            state,
            data,
            test_data,
            replicate(key, self.mesh),
            replicate(np.int32(first_epoch), self.mesh),
        )

    def lower_epochs(
        self,
        state: Any,
        data: PyTree,
        key: jax.Array,
        num_epochs: int,
        test_data: PyTree | None = None,
    ) -> jax.stages.Lowered:
        """The program :meth:`run_epochs` runs for ``num_epochs`` epochs, lowered.

        For inspection and profiling: ``.as_text()`` (StableHLO), ``.compile()`` and
        then ``.as_text()`` (optimized HLO), ``.cost_analysis()`` or
        ``.memory_analysis()`` (peak bytes). Nothing runs and ``state`` is not donated.
        """
        num_epochs, args = self._chunk_call(state, data, key, num_epochs, test_data)
        return self._chunk_fn(num_epochs).lower(*args)


def train(
    runner: Runner,
    state: Any,
    data: PyTree,
    key: jax.Array,
    num_epochs: int,
    *,
    log_every: int = 1,
    test_data: PyTree | None = None,
    progress: Callable[[int], None] | None = None,
    history: list[dict[str, float]] | None = None,
    on_chunk: Callable[[Any, int, list[dict[str, float]]], None] | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Runs the epochs up to ``num_epochs``, ``log_every`` epochs per compiled call.

    Args:
      runner: the compiled run.
      state: the state to start from (donated): fresh from ``runner.init``, or a
        restored checkpoint together with its ``history``.
      data: sharded per-agent data.
      key: PRNG key of the run.
      num_epochs: the epoch to run up to.
      log_every: epochs per compiled chunk (metrics are still kept per epoch).
      test_data: optional sharded test set.
      progress: called with the number of epochs done after each chunk.
      history: the history of a resumed run (its last row's epoch is where it
        resumes); ``None`` starts at epoch 0 and evaluates the initial point.
      on_chunk: called as ``on_chunk(state, epochs_done, history)`` after each
        chunk whose metrics are finite (e.g. to checkpoint). The state passed is
        still used afterwards: do not donate it.

    Returns:
      The final state and the history: one dict per epoch ``0..num_epochs``
      (epoch 0 is the initial point) with every metric as a Python float,
      ``bytes_sent`` cumulative per agent, ``seconds`` of wall time spent running
      (the compiled chunks and fetching their metrics) and ``compile_seconds``
      spent compiling them (ahead of time, :meth:`Runner.compile_epochs`), both
      cumulative.

    Raises:
      FloatingPointError: if a metric becomes NaN or Inf, naming the algorithm,
        the metrics and the epochs.
    """
    if num_epochs < 0 or log_every < 1:
        raise ValueError(f"need num_epochs >= 0 and log_every >= 1, got {num_epochs}, {log_every}.")
    if history is None:
        initial = jax.device_get(runner.evaluate(state, data, test_data))
        history = [{"epoch": 0, **{k: float(v) for k, v in initial.items()}, "bytes_sent": 0.0}]
        history[0].update(seconds=0.0, compile_seconds=0.0)
    else:
        history = list(history)
    done = int(history[-1]["epoch"])
    sent, seconds = history[-1]["bytes_sent"], history[-1]["seconds"]
    compile_seconds = history[-1].get("compile_seconds", 0.0)
    while done < num_epochs:
        chunk = min(log_every, num_epochs - done)
        compile_seconds += runner.compile_epochs(state, data, key, chunk, test_data)
        start = time.perf_counter()
        state, metrics = runner.run_epochs(state, data, key, done, chunk, test_data)
        metrics = jax.device_get(metrics)
        seconds += time.perf_counter() - start
        for name in metrics:  # the initial point is at simulated time 0 (every run's)
            if name == "sim_time" or name.startswith("sim_time@"):
                history[0].setdefault(name, 0.0)
        for t in range(chunk):
            row = {k: float(np.asarray(v)[t]) for k, v in metrics.items()}
            sent += row.pop("bytes_sent")
            history.append(
                {
                    "epoch": done + t + 1,
                    **row,
                    "bytes_sent": sent,
                    "seconds": seconds,
                    "compile_seconds": compile_seconds,
                }
            )
        bad = sorted(
            {k for row in history[-chunk:] for k, v in row.items() if not math.isfinite(v)}
        )
        if bad:
            raise FloatingPointError(
                f"{runner.algorithm.name}: metrics {bad} became non-finite in epochs "
                f"{done + 1}..{done + chunk}; lower the step size."
            )
        done += chunk
        if on_chunk is not None:
            on_chunk(state, done, history)
        if progress is not None:
            progress(done)
    return state, history
