r"""Compressed gossip: a drop-in ``mix`` that sends compressed messages.

:class:`CompressedGossip` has the interface of :class:`core.comm.Gossip`, so any
method that communicates only through ``mix`` (DSGD, gradient tracking, exact
diffusion, ...) runs compressed without changing its code: build the method with
the compressed operator, then wrap it with :func:`compress_communication`, which
threads the operator's per-call memory through the method's state.

Two ways to gossip a vector :math:`x` (rows = agents) with compressor
:math:`\mathcal C`, consensus step :math:`\gamma` and mixing matrix :math:`W`:

* ``"ef21"`` (CHOCO-gossip, Koloskova, Stich, Jaggi 2019; the estimate update is
  EF21's, Richtárik, Sokolov, Fatkhullin 2021): every agent keeps a public copy
  :math:`\hat x_i` that all its neighbours also hold, and sends only the compressed
  innovation,

  .. math::

    q = \mathcal C(x - \hat x), \quad \hat x \leftarrow \hat x + q, \quad
    \widehat{Wx} \leftarrow \widehat{Wx} + W q, \quad
    \operatorname{mix}(x) = x + \gamma(\widehat{Wx} - \hat x),

  with :math:`\hat x^0 = 0`; :math:`\widehat{Wx} = W\hat x` is maintained from the
  received :math:`q` only. Suited to contractive (biased) compressors.
* ``"ef"`` (classic error feedback, Seide et al. 2014; Stich, Cordonnier, Jaggi
  2018): every agent sends :math:`m = \mathcal C(x + e)` and keeps the residual
  :math:`e \leftarrow x + e - m`; :math:`\operatorname{mix}(x) = x + \gamma(Wm - m)`.

With the identity compressor and :math:`\gamma = 1` both equal ``W x`` exactly.
``bytes_per_mix`` reports the compressor's exact message size (bits / 8).

**Where the memories live.** The operator is a frozen dataclass and is never
modified. The memories (one per ``mix`` call of a step) are part of the wrapped
method's state (:class:`CompressedState`); :func:`compress_communication` builds a
per-step context from that state and the step key, binds it to the operator for the
call to the wrapped step (:func:`core.operator_context.bind`, which states the
design), and returns the memories the calls wrote as the next state. A wrapped step
is thus a function of its arguments: it nests (another compressed run may be traced
inside it, with this operator or another), composes with
:func:`core.time_varying.time_varying` in either order, and may be traced any number
of times. A call whose result the method would discard goes through ``mix_if``
(:func:`core.comm.mix_if`): inside ``lax.cond``, so when it is skipped nothing is
sent and its memory passes through unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from decentjax.core import comm as comm_lib
from decentjax.core import compressed_defaults, compression, operator_context
from decentjax.core.algorithm import Algorithm, Batch
from decentjax.core.comm import Gossip
from decentjax.core.mesh import as_varying
from decentjax.core.tree import combine, select

PyTree = Any
Mode = Literal["ef21", "ef"]
_COMPRESSION_KEY_TAG = 0x636F6D70  # Separates the compressors' randomness from the method's.


def message_bytes(op: Any, compressor: compression.Compressor, tree: PyTree) -> float:
    """Bytes of one compressed broadcast of ``tree`` (local view): the exact bits / 8.

    Zero when ``op``'s graph has no edges (nothing is sent).
    """
    return compression.message_bits(compressor, tree) / 8 if op.max_out_degree else 0.0


def reference_exchange(
    op: Any,
    compressor: compression.Compressor,
    key: jax.Array,
    value: PyTree,
    h: PyTree,
    h_mixed: PyTree,
    beta: float,
    active: jax.Array | None = None,
) -> tuple[PyTree, PyTree, PyTree]:
    r"""One LEAD-style compressed exchange of ``value`` against reference points over ``op``.

    Sender and receivers share the reference :math:`H` (receivers hold its mix
    :math:`H^W = W H`, kept up to date from the same messages):
    :math:`Q = \mathcal C(V - H)` (zero for agents not ``active``),
    :math:`\hat V = H + Q`, :math:`\hat V^W = H^W + W Q`, and the references move
    :math:`H \leftarrow (1-\beta) H + \beta \hat V`, :math:`H^W \leftarrow
    (1-\beta) H^W + \beta \hat V^W`, which keeps :math:`H^W = W H` in exact
    arithmetic. Used by LEAD/CEDAS (:mod:`algos.compressed`) and CPP/B-CPP
    (:mod:`algos.push_compressed`); Liu et al., ICLR 2021,
    https://arxiv.org/abs/2007.00232.

    Args:
      op: the (uncompressed) operator applying :math:`W`, e.g. a
        :class:`~core.comm.Gossip`.
      compressor: the message compressor.
      key: the step's key for this channel; agents compress with independent folds.
      value: :math:`V`, leaves ``(b, ...)``.
      h: the reference :math:`H`.
      h_mixed: :math:`H^W`.
      beta: reference step :math:`\beta`, a Python number; 1 sets the references to the
        estimates (EF21 / CHOCO-gossip public copies, :func:`compressed_gossip`).
      active: optional per-agent bool ``(b,)``: agents that send (the others send a
        zero message).

    Returns:
      :math:`(\hat V - \hat V^W, H^+, H^{W,+})`.
    """
    q = compression.compress_block(compressor, key, optax.tree.sub(value, h))
    if active is not None:
        q = select(active, q, jax.tree.map(jnp.zeros_like, q))
    v_hat = optax.tree.add(h, q)
    v_hat_mixed = optax.tree.add(h_mixed, op.mix(q))
    if beta == 1.0:  # EF21 / CHOCO-gossip's public copies (exact, no 0 * H term).
        return optax.tree.sub(v_hat, v_hat_mixed), v_hat, v_hat_mixed
    h = combine(1.0 - beta, h, beta, v_hat)
    h_mixed = combine(1.0 - beta, h_mixed, beta, v_hat_mixed)
    return optax.tree.sub(v_hat, v_hat_mixed), h, h_mixed


class _Session:
    """The context of one compressed step: the memories it reads, those it writes.

    Created by :func:`compress_communication` inside its traced step from the step's
    arguments (the state's memories and the step key) and bound to the operator for
    the call to the wrapped step (:func:`core.operator_context.bind`); the ``k``-th
    ``mix`` of the step reads ``inputs[k]`` and appends its new memory to ``outputs``,
    which the wrapper returns as the next state. It lives only as long as that call.
    """

    def __init__(self, op: CompressedGossip, memories: tuple | None, key: jax.Array | None):
        self.op, self.inputs, self.key = op, memories, key
        self.outputs: list[Any] = []

    def _memory(self, x: PyTree) -> Any:
        """The next call's memory: from the step's inputs, or zeros while discovering."""
        k = len(self.outputs)
        if self.inputs is None:  # Discovering the call sites and their shapes.
            zeros = jax.tree.map(jnp.zeros_like, x)
            return (zeros, zeros) if self.op.mode == "ef21" else zeros
        if k >= len(self.inputs):
            raise RuntimeError(
                f"the step called mix {k + 1} times but its first trace called it "
                f"{len(self.inputs)} times; compressed gossip needs a fixed number of calls."
            )
        return self.inputs[k]

    def _exchange(self, x: PyTree, memory: Any, key: jax.Array) -> tuple[PyTree, Any]:
        """One compressed mix of ``x`` from ``memory``: ``(mixed, new memory)``."""
        op, gamma = self.op, self.op.step_for(x)
        if op.mode == "ef21":  # The public copies are references moved all the way.
            diff, hat, hat_mixed = reference_exchange(op.base, op.compressor, key, x, *memory, 1.0)
            return combine(1.0, x, -gamma, diff), (hat, hat_mixed)
        target = optax.tree.add(x, memory)
        sent = compression.compress_block(op.compressor, key, target)
        memory = optax.tree.sub(target, sent)
        correction = optax.tree.sub(op.base.mix(sent), sent)
        return optax.tree.add(x, optax.tree.scale(gamma, correction)), memory

    def mix(self, x: PyTree) -> PyTree:
        """The compressed mix of the step's next call (uncompressed while discovering)."""
        memory = self._memory(x)
        if self.inputs is None:
            self.outputs.append(memory)
            return self.op.base.mix(x)
        mixed, memory = self._exchange(x, memory, jax.random.fold_in(self.key, len(self.outputs)))
        self.outputs.append(memory)
        return mixed

    def mix_if(self, send: jax.Array, x: PyTree) -> PyTree:
        """:meth:`mix` inside ``lax.cond``: skipped, it sends nothing and keeps its memory."""
        memory = self._memory(x)
        if self.inputs is None:
            self.outputs.append(memory)
            return comm_lib.mix_if(self.op.base.mix, send, x)
        key = jax.random.fold_in(self.key, len(self.outputs))
        mixed, memory = jax.lax.cond(
            send, lambda x, m: self._exchange(x, m, key), lambda x, m: (x, m), x, memory
        )
        self.outputs.append(memory)
        return mixed


@dataclasses.dataclass(frozen=True, eq=False)
class CompressedGossip:
    """Gossip that sends compressed messages (see the module docstring).

    Build with :func:`compressed_gossip`; use only inside a method wrapped by
    :func:`compress_communication`, which provides the per-call memories.

    Attributes:
      base: the uncompressed operator (its ``W`` and server ``mean``).
      compressor: the message compressor.
      consensus_step: :math:`\\gamma`, or ``None`` for the default rule (:meth:`step_for`).
      mode: ``"ef21"`` (CHOCO-gossip) or ``"ef"`` (error feedback).
      spread: :math:`\\|I - W\\|_2`, largest over the base's rounds
        (:func:`core.compressed_defaults.operator_spread`), for the default step.
    """

    base: Gossip
    compressor: compression.Compressor
    consensus_step: float | None
    mode: Mode
    spread: float = 2.0

    def step_for(self, tree: PyTree) -> float:
        """:math:`\\gamma` for messages of ``tree`` (local view, leaves ``(b, ...)``).

        The given ``consensus_step``, or the default
        :math:`\\min(1, 1/(c\\,\\omega\\,\\|I - W\\|_2))` with :math:`\\omega = 1/\\delta - 1`
        of the compressor at the message dimension and :math:`c` of
        :data:`core.compressed_defaults.CHOCO` (``"ef21"``) or
        :data:`~core.compressed_defaults.ERROR_FEEDBACK` (``"ef"``). At trace time.

        Raises:
          ValueError: for the default with an unbiased compressor of :math:`\\omega \\ge 1`:
            its memory then grows by :math:`\\omega` per step whatever :math:`\\gamma`.
        """
        if self.consensus_step is not None:
            return self.consensus_step
        dim = sum(math.prod(leaf.shape[1:]) for leaf in jax.tree.leaves(tree))
        omega = 1.0 / self.compressor.delta(dim) - 1.0
        if self.compressor.unbiased and omega >= 1.0:
            raise ValueError(
                f"compressed gossip ({self.mode!r}) with the unbiased {self.compressor.name} "
                f"(omega = {omega:.3g} >= 1 at d = {dim}) diverges for every consensus step: "
                f"E||e - C(e)||^2 = omega ||e||^2 grows the memory. Pass "
                f"core.compression.contractive({self.compressor.name}) (C / (1 + omega), "
                "CHOCO's scaling), or a compressor with omega < 1."
            )
        rule = (
            compressed_defaults.CHOCO if self.mode == "ef21" else compressed_defaults.ERROR_FEEDBACK
        )
        return compressed_defaults.consensus_step(omega, self.spread, rule)

    @property
    def matrix(self):
        """The mixing matrix ``W``."""
        return self.base.matrix

    @property
    def n_agents(self) -> int:
        """Number of agents."""
        return self.base.n_agents

    def _session(self) -> _Session:
        session = operator_context.bound(self)
        if session is None:
            raise RuntimeError(
                "CompressedGossip.mix was called outside a compressed step: wrap the method "
                "with core.compressed_gossip.compress_communication(algorithm, comm)."
            )
        return session

    def mix(self, tree: PyTree) -> PyTree:
        """Compressed ``W @ tree`` (local view); see the module docstring."""
        return self._session().mix(tree)

    def mix_if(self, send: jax.Array, tree: PyTree) -> PyTree:
        """:meth:`mix` where ``send`` is true; else ``tree``, nothing sent, memory unchanged.

        The call keeps its place in the step's call order (its memory slot), so the
        number of calls per step stays fixed whichever branch runs.

        Args:
          send: bool scalar, the same on every device.
          tree: pytree of this device's block, leaves ``(b, ...)``.
        """
        return self._session().mix_if(send, tree)

    def mean(self, tree: PyTree) -> PyTree:
        """Uncompressed server mean (delegates to the base operator)."""
        return self.base.mean(tree)

    def average(self, tree: PyTree) -> PyTree:
        """Uncompressed all-agent average kept per agent (delegates)."""
        return self.base.average(tree)

    def bytes_per_mix(self, tree: PyTree) -> float:
        """Bytes of one compressed message of ``tree`` (local-view shapes): bits / 8."""
        return message_bytes(self.base, self.compressor, tree)

    def bytes_per_mean(self, tree: PyTree) -> int:
        """Bytes of one uncompressed upload (delegates)."""
        return self.base.bytes_per_mean(tree)


def check_consensus_step(consensus_step: Any) -> Any:
    """A consensus step :math:`\\gamma \\in (0, 1]` as a float, ``None`` as it is.

    A traced value (a step swept over the runs of one program, :mod:`core.runs`) is
    returned as it is: its values are checked on the host by whoever sweeps them.

    Raises:
      ValueError: for a number outside (0, 1].
    """
    if consensus_step is None or isinstance(consensus_step, jax.core.Tracer):
        return consensus_step
    if not 0.0 < consensus_step <= 1.0:
        raise ValueError(f"consensus_step must be in (0, 1], got {consensus_step}.")
    return float(consensus_step)


def compressed_gossip(
    base: Gossip,
    compressor: compression.Compressor,
    *,
    consensus_step: float | None = None,
    mode: Mode = "ef21",
) -> CompressedGossip:
    """Builds a compressed gossip operator.

    Args:
      base: the uncompressed operator from :func:`core.comm.gossip`.
      compressor: from :mod:`core.compression`.
      consensus_step: :math:`\\gamma \\in (0, 1]`; default ``None``: the rule of
        :meth:`CompressedGossip.step_for` (1 for the identity; see
        :mod:`core.compressed_defaults` for its constants). CHOCO's theory asks
        :math:`\\gamma = O(\\delta^2 \\rho)`, far smaller. The old default 1 diverges
        under compression (GT, 8-agent ring, contractive rand-2 of d = 20).
      mode: ``"ef21"`` (CHOCO-gossip public copies) or ``"ef"`` (error feedback).

    Raises:
      ValueError: for a step outside (0, 1] or an unknown mode.
    """
    step = check_consensus_step(consensus_step)
    if mode not in ("ef21", "ef"):
        raise ValueError(f"mode must be 'ef21' or 'ef', got {mode!r}.")
    if mode == "ef21" and not isinstance(base, Gossip):
        # ef21 keeps W x_hat as a running sum of W q, which is only W x_hat for a fixed W.
        raise ValueError(
            f"mode='ef21' needs a fixed mixing matrix, got a {type(base).__name__}; use "
            "mode='ef' with time-varying graphs."
        )
    spread = compressed_defaults.operator_spread(base) if step is None else 2.0
    return CompressedGossip(base, compressor, step, mode, spread)


class CompressedState(NamedTuple):
    """State of a method run with compressed gossip.

    Attributes:
      inner: the method's own state.
      memory: one entry per ``mix`` call of a step: ``(x_hat, W x_hat)`` in
        ``"ef21"`` mode, the residual ``e`` in ``"ef"`` mode; leaves ``(b, ...)``.
    """

    inner: Any
    memory: tuple


def compress_communication(algorithm: Algorithm, comm: CompressedGossip) -> Algorithm:
    """Runs ``algorithm`` (built with ``comm``) with compressed gossip.

    The first trace of ``init`` discovers how many times a step calls ``mix`` and
    on which shapes, and allocates one zero memory per call; every step then reads
    and writes them in call order. Keys: each call compresses with
    ``fold_in(fold_in(step_key, tag), call_index)`` per agent.

    Args:
      algorithm: a method built with the compressed operator ``comm``.
      comm: the :class:`CompressedGossip` it was built with.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`CompressedState`.
    """

    def run_step(state: Any, batch: Batch, key: jax.Array, session: _Session):
        with operator_context.bind(comm, session):
            return algorithm.step(state, batch, key)

    def init(params: PyTree, data: PyTree, key: jax.Array) -> CompressedState:
        # Any mix in init runs uncompressed.
        with operator_context.bind(comm, _Session(comm, None, None)):
            inner = algorithm.init(params, data, key)
        batch = Batch(jax.tree.map(lambda a: a[:, :1], data), jnp.int32(0), jnp.int32(0))
        discovery = _Session(comm, None, None)

        def memories(state, batch, key):
            run_step(state, batch, key, discovery)
            return tuple(discovery.outputs)

        shapes = jax.eval_shape(memories, inner, batch, key)
        # Per-agent state, typed varying so it can be a lax.scan carry inside shard_map.
        memory = jax.tree.map(lambda s: as_varying(jnp.zeros(s.shape, s.dtype)), shapes)
        return CompressedState(inner, memory)

    def step(state: CompressedState, batch: Batch, key: jax.Array):
        session = _Session(comm, state.memory, jax.random.fold_in(key, _COMPRESSION_KEY_TAG))
        inner, metrics = run_step(state.inner, batch, key, session)
        if len(session.outputs) != len(state.memory):
            raise RuntimeError(
                f"the step called mix {len(session.outputs)} times, its first trace "
                f"{len(state.memory)} times."
            )
        return CompressedState(inner, tuple(session.outputs)), metrics

    def params(state: CompressedState) -> PyTree:
        return algorithm.params(state.inner)

    return Algorithm(init=init, step=step, params=params, name=algorithm.name)
