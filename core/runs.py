r"""Many runs of one method in one compiled program: seeds and hyperparameter sweeps.

A run of :class:`core.loop.Runner` is ``jit(shard_map(scan))`` over the agent axis.
:class:`RunsRunner` adds a leading **runs** axis of size ``R``: every state leaf is
``(R, n_agents, ...)`` (sharded on the agent axis, the runs axis whole on every
device), and the body of the same ``jit(shard_map(scan))`` is ``jax.vmap``-ed over
it. Run ``r`` has its own PRNG key (a seed) and its own values of the swept
hyperparameters, which enter as traced per-run scalars, so ``R`` seeds or a grid of
step sizes cost one compilation, and on an accelerator run at nearly the speed of one
run (the work is batched, not looped).

The method is given as ``build(hyper) -> Algorithm``, where ``hyper`` maps names to
the run's scalars (e.g. ``{"lr_scale": s}`` with the step
:math:`\alpha^{(r)}_k = s_r\,\alpha_k`, :func:`core.schedules.scaled`). ``build`` is
called inside the trace, once per compiled program, with the traced values; the
factories stay unchanged as long as the swept value enters the update as an array
(a schedule does; the step of NIDS / EXTRA, which enters their mixing matrix
on the host, cannot be swept this way and raises when the runner is built).

Run ``r`` is the run :class:`~core.loop.Runner` makes with ``build(hyper[r])`` and key
``keys[r]``, up to floating-point rounding (``tests/test_runs.py`` checks it in
float64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax.core import loop
from decentjax.core.algorithm import Algorithm
from decentjax.core.mesh import AGENT_AXIS, agent_block, as_varying, replicate
from decentjax.core.metrics import Evaluator
from decentjax.core.operator_tables import TableProgram
from decentjax.core.sampling import Sampler

PyTree = Any
Hyper = dict[str, Any]
_RUNS_AGENTS = jax.P(None, AGENT_AXIS)
_AGENTS = jax.P(AGENT_AXIS)
_REPLICATED = jax.P()


def runs_init(
    init: Callable[[jax.Array], PyTree], mesh: jax.sharding.Mesh, n_agents: int
) -> Callable[[jax.Array], PyTree]:
    """Compiles ``keys (R,) -> params`` with leaves ``(R, n_agents, ...)``, built on device.

    Run ``r``'s agents all start at ``init(keys[r])`` (as :func:`core.mesh.agent_init`
    does for one run); the result is sharded on the agent axis (second).

    Args:
      init: ``init(key) -> params`` of one agent; traced.
      mesh: an agent mesh from :func:`core.mesh.make_agent_mesh`.
      n_agents: number of agents, divisible by the mesh's device count.
    """
    block = agent_block(mesh, n_agents)

    def one(key: jax.Array) -> PyTree:
        return jax.tree.map(lambda p: as_varying(jnp.broadcast_to(p, (block, *p.shape))), init(key))

    build = jax.jit(
        jax.shard_map(jax.vmap(one), mesh=mesh, in_specs=_REPLICATED, out_specs=_RUNS_AGENTS)
    )
    return lambda keys: build(replicate(keys, mesh))


def _check_hyper(hyper: Hyper, num_runs: int) -> dict[str, np.ndarray]:
    out = {}
    for name, values in hyper.items():
        values = np.asarray(values)
        if values.shape != (num_runs,) or not np.all(np.isfinite(values)):
            raise ValueError(
                f"hyperparameter {name!r} must hold one finite value per run, shape "
                f"({num_runs},); got {values!r}."
            )
        out[name] = values
    return out


class RunsRunner(loop.Runner):
    """Compiled init / evaluate / multi-epoch run of ``num_runs`` runs of one method.

    The same interface as :class:`core.loop.Runner` (so :func:`core.loop.train` and
    :func:`train_runs` drive it), with a leading runs axis: ``key`` is an array of
    ``R`` PRNG keys, states have leaves ``(R, n_agents, ...)``, and :meth:`evaluate`
    and :meth:`run_epochs` return metrics with a leading axis ``R``.

    Args:
      build: ``hyper -> Algorithm``: the method for one run's hyperparameters
        (scalars, traced inside the program). Called once on the host with run 0's
        values, which checks them and names the method.
      sampler: how agents walk through their local data each epoch.
      mesh: a 1-D agent mesh from :func:`core.mesh.make_agent_mesh`.
      evaluate: metrics function from :func:`core.metrics.make_evaluator` (built with
        ``lower_convs=True`` for a model with convolutions: vmapped over runs, native
        convolutions become grouped ones, slow on XLA:CPU).
      hyper: name -> ``R`` values of the swept hyperparameters (may be empty).
      num_runs: ``R``.

    Raises:
      ValueError: if ``num_runs < 1`` or a hyperparameter does not hold ``R`` finite
        values; what ``build`` raises for run 0's values.
    """

    def __init__(
        self,
        build: Callable[[Hyper], Algorithm],
        sampler: Sampler,
        mesh: jax.sharding.Mesh,
        evaluate: Evaluator,
        hyper: Hyper,
        num_runs: int,
    ):
        if not (isinstance(num_runs, int) and num_runs >= 1):
            raise ValueError(f"num_runs must be a positive int, got {num_runs!r}.")
        host_hyper = _check_hyper(hyper, num_runs)
        super().__init__(build({k: v[0] for k, v in host_hyper.items()}), sampler, mesh, evaluate)
        self.num_runs = num_runs
        self._build = build
        self._hyper = replicate(host_hyper, mesh)
        # TableProgram: an operator's per-agent tables are sharded program arguments.
        self._init = TableProgram(
            jax.vmap(lambda p, d, k, h: build(h).init(p, d, k), in_axes=(0, None, 0, 0)),
            mesh,
            (_RUNS_AGENTS, _AGENTS, _REPLICATED, _REPLICATED),
            _RUNS_AGENTS,
        )
        self._eval = TableProgram(
            jax.vmap(
                lambda s, d, t, h: evaluate(build(h).params(s), d, t),
                in_axes=(0, None, None, 0),
            ),
            mesh,
            (_RUNS_AGENTS, _AGENTS, _AGENTS, _REPLICATED),
            _REPLICATED,
        )

    def _runner(self, hyper: Hyper) -> loop.Runner:
        """The one-run program's pieces for one run's (traced) hyperparameters."""
        return loop.Runner(self._build(hyper), self.sampler, self.mesh, self._evaluate)

    def init(self, params: PyTree, data: PyTree, key: jax.Array) -> Any:
        """The runs' initial states, leaves ``(R, n_agents, ...)``.

        Args:
          params: per-run, per-agent parameters, leaves ``(R, n_agents, ...)``
            (from :func:`runs_init`).
          data: per-agent datasets, leaves ``(n_agents, m, ...)``, sharded.
          key: ``R`` PRNG keys, one per run.
        """
        self._check_runs(params, key)
        self._check_data(data)
        return self._init(params, data, replicate(key, self.mesh), self._hyper)

    def _check_runs(self, state: PyTree, key: jax.Array) -> None:
        sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(state)}
        if sizes != {self.num_runs} or jnp.shape(key) != (self.num_runs,):
            raise ValueError(
                f"a runner of {self.num_runs} runs needs state/params leaves "
                f"(R={self.num_runs}, n_agents, ...) and {self.num_runs} keys; got leading "
                f"sizes {sorted(map(str, sizes))} and keys of shape {jnp.shape(key)}."
            )

    def evaluate(self, state: Any, data: PyTree, test_data: PyTree | None = None) -> dict:
        """Metrics of every run, arrays ``(R,)`` (on device)."""
        return self._eval(state, data, test_data, self._hyper)

    def _chunk_fn(self, num_epochs: int) -> Callable:
        if num_epochs not in self._chunks:

            def body(state, data, test_data, keys, hyper, first_epoch):
                def one(state, key, hyper):
                    return self._runner(hyper)._local_run(
                        state, data, test_data, key, first_epoch, num_epochs=num_epochs
                    )

                return jax.vmap(one)(state, keys, hyper)

            self._chunks[num_epochs] = TableProgram(
                body,
                self.mesh,
                (_RUNS_AGENTS, _AGENTS, _AGENTS, _REPLICATED, _REPLICATED, _REPLICATED),
                (_RUNS_AGENTS, _REPLICATED),
                donate_argnums=(0,),
            )
        return self._chunks[num_epochs]

    def _chunk_args(self, state, data, key, first_epoch, test_data) -> tuple:
        self._check_runs(state, key)
        state, data, test_data, key, first = super()._chunk_args(
            state, data, key, first_epoch, test_data
        )
        return state, data, test_data, key, self._hyper, first

    def trace_epoch(self, state: Any, data: PyTree, key: jax.Array, epoch: int) -> Any:
        """The runs' states after every step of epoch ``epoch``: leaves ``(R, steps, n, ...)``."""
        self._check_runs(state, key)
        self._check_data(data)

        def body(state, data, keys, hyper, epoch):
            def one(state, key, hyper):
                runner = self._runner(hyper)
                return runner._local_epoch(state, data, key, epoch, keep_states=True)[1][1]

            return jax.vmap(one)(state, keys, hyper)

        traced = TableProgram(
            body,
            self.mesh,
            (_RUNS_AGENTS, _AGENTS, _REPLICATED, _REPLICATED, _REPLICATED),
            jax.P(None, None, AGENT_AXIS),
        )
        args = (replicate(key, self.mesh), self._hyper, replicate(np.int32(epoch), self.mesh))
        return traced(state, data, *args)


class _PerRunColumns:
    """A :class:`RunsRunner` seen by :func:`core.loop.train` as one run with scalar metrics.

    Metric ``k`` of run ``r`` becomes the column ``"k@r"``; ``bytes_sent`` (which
    ``loop.train`` accumulates) is the mean over runs, and each run's own bytes per
    epoch are the column ``"bytes_sent@r"``.
    """

    def __init__(self, runner: RunsRunner):
        self.runner, self.algorithm = runner, runner.algorithm

    @staticmethod
    def _columns(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
        out = {f"{k}@{r}": v[r] for k, v in metrics.items() for r in range(v.shape[0])}
        if "bytes_sent" in metrics:
            out["bytes_sent"] = jnp.mean(metrics["bytes_sent"], axis=0)
        return out

    def evaluate(self, state, data, test_data=None):
        return self._columns(self.runner.evaluate(state, data, test_data))

    def compile_epochs(self, *args, **kwargs) -> float:
        return self.runner.compile_epochs(*args, **kwargs)

    def run_epochs(self, *args, **kwargs):
        state, metrics = self.runner.run_epochs(*args, **kwargs)
        return state, self._columns(metrics)


def split_history(history: list[dict[str, float]], num_runs: int) -> list[list[dict[str, float]]]:
    """The per-run histories of a :func:`train_runs` column history.

    Every run's rows hold ``epoch``, its own metrics, its cumulative ``bytes_sent``,
    and the shared ``seconds`` / ``compile_seconds`` of the one program.
    """
    runs = []
    for r in range(num_runs):
        suffix, sent, rows = f"@{r}", 0.0, []
        for row in history:
            own = {k[: -len(suffix)]: v for k, v in row.items() if k.endswith(suffix)}
            sent += own.pop("bytes_sent", 0.0)
            shared = {k: row[k] for k in ("epoch", "seconds", "compile_seconds") if k in row}
            rows.append({**shared, **own, "bytes_sent": sent})
        runs.append(rows)
    return runs


def train_runs(
    runner: RunsRunner, state: Any, data: PyTree, keys: jax.Array, num_epochs: int, **kwargs: Any
) -> tuple[Any, list[list[dict[str, float]]], list[dict[str, float]]]:
    """:func:`core.loop.train` for all runs at once.

    Args:
      runner: the compiled runs.
      state: their initial states (donated), or a restored one with ``history``.
      data: sharded per-agent data.
      keys: ``R`` PRNG keys, one per run.
      num_epochs: the epoch to run up to.
      **kwargs: as for :func:`core.loop.train` (``log_every``, ``test_data``,
        ``progress``, ``history`` (a column history as returned here), ``on_chunk``).

    Returns:
      ``(state, histories, columns)``: the final states, one history per run (as
      :func:`core.loop.train` returns for one run) and the column history (metric
      ``k`` of run ``r`` as ``"k@r"``, what ``on_chunk`` saw and a resume needs).

    Raises:
      FloatingPointError: if a run's metric becomes NaN or Inf; the message names
        the columns (``"loss@3"``: run 3).
    """
    state, columns = loop.train(_PerRunColumns(runner), state, data, keys, num_epochs, **kwargs)
    return state, split_history(columns, runner.num_runs), columns
