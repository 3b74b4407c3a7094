r"""Asynchrony simulated inside the compiled loop: ticks, wake-ups, stragglers, a clock.

Time advances in **ticks** of ``tick`` simulated time units; one step of an
asynchronous method (one ``Algorithm.step``, one iteration of the run loop's
``lax.scan``) is one tick. In each tick every agent independently **wakes** with its
own probability :math:`p_i \in (0, 1]` (:class:`AsyncModel`):

* Bernoulli wake-ups: ``async_model(n, wake_prob=p)``;
* Poisson clocks with per-agent rates :math:`\lambda_i`: an agent wakes in a tick when
  its clock rings at least once in it, :math:`p_i = 1 - e^{-\lambda_i\,\text{tick}}`
  (``async_model(n, rates=...)``);
* compute speeds: agent :math:`i` finishes a local step in :math:`\tau_i` time units
  on average (``async_model(n, compute_time=tau)``), :math:`p_i = \text{tick}/\tau_i`
  with ``tick`` defaulting to :math:`\min_i \tau_i`, so the fastest agents wake every
  tick and an agent :math:`k\times` slower every :math:`k`-th tick on average. The
  time an agent needs for one local step is then Geometric(:math:`p_i`) ticks.

:func:`stragglers` draws the straggler model (a fraction of agents ``k×`` slower,
chosen reproducibly from a seed) as such a ``compute_time`` vector.

**Simulated wall-clock** (metric ``"sim_time"``, time units since the start): for an
asynchronous method, ticks × ``tick`` (every agent's clock is the global clock; the
metric is the per-agent maximum, which equals it). A synchronous method run under the
same model with :func:`synchronous` waits for the slowest agent every round: its round
takes :math:`\max_i T_i` ticks with :math:`T_i \sim \text{Geometric}(p_i)` drawn per
agent and round, the same completion process the asynchronous methods see.

Every draw is per agent from ``fold_in(key, global_agent_index)``
(:func:`core.mesh.agent_keys`), so results do not depend on the device count. The
messages in flight between agents live in per-edge ring buffers of fixed shape
(:mod:`core.async_links`).

References:
  * S. Boyd, A. Ghosh, B. Prabhakar, D. Shah. "Randomized gossip algorithms." IEEE
    Trans. Inf. Theory 2006 (Poisson clocks per agent).
  * M. Assran, M. Rabbat. "Asynchronous Gradient-Push." IEEE TAC 2021,
    https://arxiv.org/abs/1803.08950 (bounded delays, per-agent compute speeds).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from decentjax.core.algorithm import Algorithm, Batch
from decentjax.core.mesh import AGENT_AXIS, agent_axis_relabelled, agent_keys, as_varying
from decentjax.core.operator_tables import AgentTable

PyTree = Any

# Key streams: each draw folds its own constant into the step key first.
WAKE_STREAM = 0x5741
DELAY_STREAM = 0x444C
ROUND_STREAM = 0x524E


@dataclasses.dataclass(frozen=True, eq=False)
class AsyncModel:
    """When agents wake and how long messages take, for a run of ``n`` agents (host).

    Build it with :func:`async_model`.

    Attributes:
      wake_prob: per-agent wake probability per tick, ``(n,)`` float64 in (0, 1].
      max_delay: messages arrive ``0 .. max_delay`` ticks after they are sent
        (uniform, drawn per edge and tick); 0 = no delay.
      tick: simulated time units per tick.
      buffer: ticks each edge's ring buffer of in-flight messages holds (> ``max_delay``).
      table: ``wake_prob`` as an :class:`~core.operator_tables.AgentTable`.
    """

    wake_prob: np.ndarray
    max_delay: int
    tick: float
    buffer: int
    table: AgentTable

    @property
    def n_agents(self) -> int:
        """Number of agents ``n``."""
        return self.wake_prob.shape[0]

    @property
    def all_awake(self) -> bool:
        """Every agent wakes every tick (the synchronous limit)."""
        return bool(np.all(self.wake_prob == 1.0))


def _per_agent(name: str, value: Any, n: int) -> npt.NDArray[np.float64]:
    """``value`` (a scalar or an ``(n,)`` array) as a finite float64 ``(n,)`` array."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be a finite scalar or an array of shape ({n},) (one per agent), "
            f"got {value!r}."
        )
    return arr


def async_model(
    n_agents: int,
    *,
    wake_prob: Any = None,
    rates: Any = None,
    compute_time: Any = None,
    max_delay: int = 0,
    tick: float | None = None,
    buffer: int | None = None,
) -> AsyncModel:
    r"""An asynchronous execution model: per-agent wake-ups per tick and message delays.

    Give exactly one of ``wake_prob``, ``rates`` or ``compute_time`` (see the module
    docstring for the three models); with none of them every agent wakes every tick.

    Args:
      n_agents: number of agents ``n``.
      wake_prob: Bernoulli wake probability per tick, a scalar or ``(n,)``, in (0, 1].
      rates: Poisson clock rates per time unit, a scalar or ``(n,)``, > 0;
        :math:`p_i = 1 - e^{-\lambda_i \text{tick}}`.
      compute_time: mean time units per local step, ``(n,)`` or a scalar, > 0 (e.g.
        :func:`stragglers`); :math:`p_i = \text{tick} / \tau_i`.
      max_delay: bound on message delays in ticks, an int >= 0.
      tick: time units per tick, > 0; default 1, or :math:`\min_i \tau_i` with
        ``compute_time`` (which must not be below ``tick``).
      buffer: ticks of in-flight messages each edge's ring buffer holds; default
        ``max_delay + 1``, and it must exceed ``max_delay`` (a message delayed by
        ``buffer`` ticks or more would overwrite one not yet delivered).

    Returns:
      An :class:`AsyncModel`.

    Raises:
      ValueError: naming the bad value: more than one model given, a probability
        outside (0, 1], a rate or compute time <= 0, a ``tick`` <= 0 or above the
        fastest compute time, a negative or non-integer ``max_delay``.
    """
    if not (isinstance(n_agents, (int, np.integer)) and n_agents >= 1):
        raise ValueError(f"n_agents must be a positive int, got {n_agents!r}.")
    models = (("wake_prob", wake_prob), ("rates", rates), ("compute_time", compute_time))
    given = [name for name, value in models if value is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of wake_prob, rates, compute_time; got {given}.")
    if not (isinstance(max_delay, (int, np.integer)) and not isinstance(max_delay, bool)):
        raise ValueError(f"max_delay must be an int >= 0 (ticks), got {max_delay!r}.")
    if max_delay < 0:
        raise ValueError(f"max_delay must be >= 0 (ticks), got {max_delay}.")
    if buffer is not None and not (
        isinstance(buffer, (int, np.integer))
        and not isinstance(buffer, bool)
        and buffer > max_delay
    ):
        raise ValueError(
            f"max_delay={max_delay} ticks does not fit a ring buffer of {buffer!r} ticks: "
            f"buffer must be an int > max_delay (at least {max_delay + 1})."
        )
    if tick is not None and not (np.isfinite(tick) and float(tick) > 0.0):
        raise ValueError(f"tick must be a positive number of time units, got {tick!r}.")
    n = int(n_agents)
    if compute_time is not None:
        tau = _per_agent("compute_time", compute_time, n)
        if np.any(tau <= 0.0):
            i = int(np.argmin(tau))
            raise ValueError(f"compute_time must be > 0, got {tau[i]} for agent {i}.")
        tick = float(tau.min()) if tick is None else float(tick)
        if tick > tau.min() * (1 + 1e-12):
            raise ValueError(
                f"tick={tick} is longer than the fastest compute time {tau.min()}: an agent "
                "would finish more than one local step per tick; use tick <= min(compute_time)."
            )
        p = np.minimum(tick / tau, 1.0)
    elif rates is not None:
        lam = _per_agent("rates", rates, n)
        if np.any(lam <= 0.0):
            i = int(np.argmin(lam))
            raise ValueError(f"rates must be > 0, got {lam[i]} for agent {i}.")
        tick = 1.0 if tick is None else float(tick)
        p = -np.expm1(-lam * tick)
    else:
        p = _per_agent("wake_prob", 1.0 if wake_prob is None else wake_prob, n)
        tick = 1.0 if tick is None else float(tick)
    bad = np.flatnonzero(~((p > 0.0) & (p <= 1.0)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"wake probabilities must lie in (0, 1], got {p[i]} for agent {i} "
            f"({bad.size} agents outside)."
        )
    length = int(max_delay) + 1 if buffer is None else int(buffer)
    return AsyncModel(p, int(max_delay), tick, length, AgentTable(p, "wake probabilities"))


def stragglers(
    n_agents: int,
    straggler_fraction: float,
    straggler_slowdown: float,
    *,
    seed: int = 0,
    base_time: float = 1.0,
) -> npt.NDArray[np.float64]:
    """Per-agent compute times of the straggler model: a fraction of agents ``k×`` slower.

    ``round(straggler_fraction * n)`` agents, drawn without replacement by
    ``numpy.random.default_rng(seed)``, take ``base_time * straggler_slowdown`` per
    local step; the others ``base_time``.

    Args:
      n_agents: number of agents.
      straggler_fraction: fraction of stragglers in [0, 1].
      straggler_slowdown: ``k >= 1``.
      seed: which agents straggle.
      base_time: compute time of a normal agent, > 0.

    Returns:
      ``(n,)`` float64 compute times, for :func:`async_model` ``(compute_time=...)``.

    Raises:
      ValueError: for a fraction outside [0, 1], a slowdown below 1 or a time <= 0.
    """
    if not 0.0 <= float(straggler_fraction) <= 1.0:
        raise ValueError(f"straggler_fraction must be in [0, 1], got {straggler_fraction!r}.")
    if not float(straggler_slowdown) >= 1.0:
        raise ValueError(f"straggler_slowdown must be >= 1, got {straggler_slowdown!r}.")
    if not float(base_time) > 0.0:
        raise ValueError(f"base_time must be > 0, got {base_time!r}.")
    times = np.full(int(n_agents), float(base_time))
    count = int(round(float(straggler_fraction) * n_agents))
    slow = np.random.default_rng(seed).choice(n_agents, size=count, replace=False)
    times[slow] *= float(straggler_slowdown)
    return times


def _local_probs(model: AsyncModel, block: int) -> jax.Array:
    """This block's wake probabilities, by position (local view).

    ``model.wake_prob`` is in the user's agent order; on a relabelled agent axis
    (:func:`core.mesh.agent_axis_relabelled`) position ``k`` is another agent, so
    unequal probabilities are refused there (equal ones do not depend on the order).
    """
    if agent_axis_relabelled() and np.ptp(model.wake_prob) > 0.0:
        raise ValueError(
            "agents with unequal wake probabilities (stragglers, rates or compute times) "
            "cannot run on a relabelled agent axis: the probabilities are in the user's "
            "order; run without relabelling (relabel='none')."
        )
    return model.table.local(block)


def wake(model: AsyncModel, key: jax.Array, block: int) -> jax.Array:
    """Which of this block's agents wake in the tick of ``key``: bool ``(b,)`` (local view).

    Agent ``i`` wakes iff ``uniform(fold_in(fold_in(key, WAKE_STREAM), i)) < p_i``.
    """
    keys = agent_keys(jax.random.fold_in(key, WAKE_STREAM), block)
    u = jax.vmap(jax.random.uniform)(keys)
    return u < _local_probs(model, block).astype(u.dtype)


def delays(model: AsyncModel, key: jax.Array, block: int, slots: int) -> jax.Array:
    """Delays ``(b, slots)`` int32 in ``0 .. max_delay`` of the messages this block receives.

    Drawn per receiving agent (its global index) and in-edge slot, uniformly.
    """
    keys = agent_keys(jax.random.fold_in(key, DELAY_STREAM), block)
    draw = lambda k: jax.random.randint(k, (slots,), 0, model.max_delay + 1, jnp.int32)  # noqa: E731
    return jax.vmap(draw)(keys)


def round_ticks(model: AsyncModel, key: jax.Array, block: int) -> jax.Array:
    """Ticks one synchronous round takes: the slowest agent's Geometric(p_i) draw.

    An int32 scalar, the same on every device (a ``pmax`` over the agent axis).
    """
    if model.all_awake:
        return jnp.int32(1)
    keys = agent_keys(jax.random.fold_in(key, ROUND_STREAM), block)
    p = _local_probs(model, block)
    # Geometric on {1, 2, ...}: the ticks until the agent's local step is done.
    ticks = jax.vmap(lambda k, q: jax.random.geometric(k, q, dtype=jnp.int32))(keys, p)
    return jax.lax.pmax(jnp.max(ticks), AGENT_AXIS)


class ClockedState(NamedTuple):
    """State of a synchronous method timed by :func:`synchronous`.

    Attributes:
      inner: the method's own state.
      clock: ``(b,)`` simulated time at the end of the last round (equal for all agents).
    """

    inner: Any
    clock: jax.Array


def synchronous(algorithm: Algorithm, model: AsyncModel) -> Algorithm:
    r"""A synchronous method with the simulated wall-clock of ``model``: rounds wait for all.

    Each step is one round in which every agent computes; it ends when the slowest
    agent is done, after :math:`\max_i T_i` ticks, :math:`T_i \sim
    \text{Geometric}(p_i)` (:func:`round_ticks`). The step's metrics gain
    ``"sim_time"``, the clock after the round (time units since the start).
    ``model.max_delay`` is not used: a synchronous round waits for its messages too.

    Args:
      algorithm: any method.
      model: the execution model whose wake probabilities set the compute speeds.

    Returns:
      The same method (same name and iterates) with state :class:`ClockedState`.
    """

    def init(params: PyTree, data: PyTree, key: jax.Array) -> ClockedState:
        inner = algorithm.init(params, data, key)
        block = jax.tree.leaves(params)[0].shape[0]
        n = block * jax.lax.axis_size(AGENT_AXIS)
        if n != model.n_agents:
            raise ValueError(
                f"the asynchrony model is for {model.n_agents} agents, the run has {n}; "
                "build it with async_model(n_agents, ...)."
            )
        return ClockedState(inner, as_varying(jnp.zeros((block,), jnp.result_type(float))))

    def step(state: ClockedState, batch: Batch, key: jax.Array):
        inner, metrics = algorithm.step(state.inner, batch, key)
        ticks = round_ticks(model, key, state.clock.shape[0])
        clock = state.clock + ticks.astype(state.clock.dtype) * model.tick
        return ClockedState(inner, clock), {**metrics, "sim_time": jnp.max(clock)}

    return Algorithm(
        init=init, step=step, params=lambda s: algorithm.params(s.inner), name=algorithm.name
    )


def tick_clock(model: AsyncModel, tick: jax.Array) -> jax.Array:
    """The ``"sim_time"`` after ticks ``0 .. tick`` (a per-agent counter ``(b,)``): a scalar."""
    return (jnp.max(tick) + 1).astype(jnp.result_type(float)) * model.tick
