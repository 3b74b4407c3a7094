r"""Time-varying graphs: random link failures and fixed periodic sequences of graphs.

:class:`TimeVaryingGossip` has the interface of :class:`core.comm.Gossip`, but its
``mix`` at round :math:`k` applies a matrix :math:`W_k` that changes from round to
round, inside the compiled step. Build a method with the operator, then wrap it
with :func:`time_varying`, which keeps a round counter in the state and, during each
traced step, binds the round index :math:`k` and the round's key to the operator.
The operator itself is a frozen dataclass and is never modified: the round is a
per-step context bound with :func:`core.operator_context.bind` for the duration of
the wrapped step and looked up by ``mix`` (the design, and why it makes a wrapped
step a function of its arguments that nests, composes with
:func:`core.compressed_gossip.compress_communication` in either order, and is
thread-safe, is stated in :mod:`core.operator_context`).
Every ``mix`` inside one step uses the same :math:`W_k` (one round = one step: a
link that is down is down for all messages of that step, and all operators
wrapped together see the same draws, so a pull operator ``R`` and a push operator
``C`` on the same graph lose the same physical links).

**O(nnz) per round.** Every :math:`W_k` lives on the union support of the rounds,
so only its weights change per round; each device computes its own agents' weights
on device from the round's key or index and per-agent tables
(:mod:`core.time_varying_tables`), then exchanges as :class:`~core.comm.Gossip` does,
on one of three paths (:func:`time_varying_path`): **shift** for few offsets
(:math:`W_k = \sum_{s \in S} \operatorname{diag}(c^{(k)}_s) P_s`, block
``ppermute``\ s per offset), **halo** for a graph relabelled to a band
(``comm.gossip(w, order="rcm")``: the ``lo + hi`` boundary rows of the two adjacent
devices), or **dense** (all-gather) for expanders. The halo and dense paths read the
union's nonzeros grouped by device, O(nnz) in all; no ``n x n`` or ``b x n`` matrix
and no ``|S| n`` table is built for a graph with many offsets.

**Link failures** (:func:`link_failures`). Each round every edge of the base graph
fails independently with probability :math:`p`; the weight of a failed edge moves
to a diagonal, so :math:`W_k` keeps the base's stochasticity:

.. math::

  \text{symmetric:}\ & w^{(k)}_{ij} = 0,\ w^{(k)}_{ii} \mathrel{+}= w_{ij},\
    w^{(k)}_{jj} \mathrel{+}= w_{ji} = w_{ij}
    \quad (\text{one draw per undirected edge } \{i, j\}), \\
  \text{pull:}\ & w^{(k)}_{ij} = 0,\ w^{(k)}_{ii} \mathrel{+}= w_{ij}
    \quad (\text{the receiver keeps the mass: } W_k \mathbf 1 = \mathbf 1), \\
  \text{push:}\ & w^{(k)}_{ij} = 0,\ w^{(k)}_{jj} \mathrel{+}= w_{ij}
    \quad (\text{the sender keeps it: } \mathbf 1^\top W_k = \mathbf 1^\top).

``symmetric`` keeps a symmetric doubly stochastic :math:`W` symmetric doubly
stochastic (and positive semidefinite if :math:`W` is, since a failure adds
:math:`w_{ij}(e_i - e_j)(e_i - e_j)^\top`); ``pull`` keeps a row-stochastic ``R``
row-stochastic, ``push`` a column-stochastic ``C`` column-stochastic. The failure of
edge :math:`j \to i` is the bit ``bits(fold_in(fold_in(key_k, i), j)) < p 2^32``
(for ``symmetric``, with ``(min(i, j), max(i, j))`` so both endpoints agree), where
``i`` and ``j`` are the agents' **user ids** (their labels before any relabelling):
every agent that needs a draw computes it itself, so the result depends neither on
the device count nor on the relabelling (a relabelled run is the plain run in
another agent order). Under ``push`` the sender :math:`j` needs :math:`w_{ij}` of its
out-edges, which its tables hold. The union of the graphs over rounds
is the base graph, so a base graph that is (strongly) connected meets the usual
"B-connected" condition of time-varying methods with probability one.

**Sequences** (:func:`sequence`). :math:`W_k = W_{k \bmod T}` for a fixed list, e.g.
the one-peer exponential graph :func:`core.directed.one_peer_exponential`, whose
product over one period is exactly the average when ``n`` is a power of two. The
matrices may have different supports: :math:`S` is the union of their offsets, with
zero coefficients where a matrix lacks an offset.

**Bytes.** ``bytes_per_mix`` counts one broadcast of the agent's vector per round,
as :class:`~core.comm.Gossip` does, whether or not links fail: the sender does not
know in advance which links will drop its message, so it still transmits, and the
count stays a static number that plots runs with and without failures on the same
axis. For a sequence it is one vector per round whenever some matrix of the
sequence has an off-diagonal entry; ``max_out_degree`` is the largest out-degree of
any single round (1 for the one-peer exponential graph).

References:
  * A. Nedić, A. Olshevsky, W. Shi. "Achieving Geometric Convergence for Distributed
    Optimization over Time-Varying Graphs." SIAM J. Optim. 2017.
    https://arxiv.org/abs/1607.03218
  * F. Saadatniaki, R. Xin, U. A. Khan. "Decentralized Optimization over Time-Varying
    Directed Graphs with Row and Column-Stochastic Matrices." IEEE TAC 2020.
    https://arxiv.org/abs/1810.07393
  * B. Ying, K. Yuan, Y. Chen, H. Hu, P. Pan, W. Yin. "Exponential Graph is Provably
    Efficient for Decentralized Deep Training." NeurIPS 2021.
    https://arxiv.org/abs/2110.13363
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from decentjax.core import comm, directed, relabel, weights
from decentjax.core import sparse as sparse_lib
from decentjax.core.algorithm import Algorithm, Batch
from decentjax.core.comm import Gossip
from decentjax.core.time_varying_gossip import TimeVaryingGossip, round_key
from decentjax.core.time_varying_tables import round_matrix
from decentjax.core.tree import block_size

__all__ = [
    "TimeVaryingGossip",
    "TimeVaryingState",
    "link_failures",
    "round_key",
    "round_matrix",
    "sequence",
    "time_varying",
]

PyTree = Any
FailureKind = Literal["symmetric", "pull", "push"]
_ATOL = 1e-10  # The tolerance of the host checks, as in core.weights / core.directed.


# --------------------------------------------------------------------------------------
# Host-side construction and validation.
# --------------------------------------------------------------------------------------


def _check_stochastic(w: np.ndarray, what: str, axis: int, where: str) -> None:
    """Nonnegative, finite, and every row (``axis=1``) or column (0) summing to 1."""
    weights._check_entries(w, where, f"{what} matrix", _ATOL)
    weights._check_sums(w, where, f"{what} matrix", axis, _ATOL)


def _nnz(w: Any) -> int:
    """Nonzero entries of a dense or sparse matrix, O(nnz)."""
    return int(np.count_nonzero(sparse_lib.as_csr(w).data))


def _check_path(path: str) -> None:
    if path not in ("auto", "shift", "halo", "dense"):
        raise ValueError(f"path must be 'auto', 'shift', 'halo' or 'dense', got {path!r}.")


SHIFT_TABLE_RATIO = 2
"""``"auto"`` keeps the shift path only while its tables (``|S| n``) are within this
factor of ``nnz`` (or ``|S| <=`` :data:`core.comm.AUTO_SHIFT_MIN_OFFSETS`)."""


def time_varying_path(
    path: comm.Path, n_offsets: int, n_agents: int, band: tuple[int, int], nnz: int
) -> Literal["shift", "halo", "dense"]:
    """The path of a time-varying operator; ``"auto"`` keeps every table O(nnz).

    :func:`core.comm.auto_path`, except that its shift path for many offsets is taken
    only while the per-offset tables (``|S| n`` weights) stay within
    :data:`SHIFT_TABLE_RATIO` of ``nnz`` (circulant graphs such as the exponential
    graph); otherwise (a hub, an unrelabelled geometric graph: ``|S| n`` is O(n^2))
    the dense path, an all-gather with the O(nnz) entry tables of
    :mod:`core.time_varying_tables` (no ``b x n`` matrix is built).

    Args:
      path: the requested path; anything but ``"auto"`` is returned as is.
      n_offsets: ``|S|``, the offsets of the union support (0 included).
      n_agents: ``n``.
      band: the halo widths of the union support.
      nnz: stored nonzeros of the union support.
    """
    if path != "auto":
        return path
    choice = comm.auto_path(n_offsets, n_agents, band)
    many = n_offsets > comm.AUTO_SHIFT_MIN_OFFSETS
    if choice == "shift" and many and n_offsets * n_agents > SHIFT_TABLE_RATIO * nnz:
        return "dense"
    return choice


def link_failures(
    base: Gossip, p: float, *, kind: FailureKind = "symmetric", path: comm.Path = "auto"
) -> TimeVaryingGossip:
    r"""Random link failures: every edge of ``base`` fails with probability ``p`` per round.

    See the module docstring for the update of :math:`W_k` and how draws are shared.

    Args:
      base: the failure-free operator from :func:`core.comm.gossip` (any path), in the
        user's labels or relabelled (``order=``): draws are keyed by user ids, so a
        relabelled run equals the plain one in the user's order.
      p: failure probability per edge and round, in ``[0, 1)`` (0 gives ``base``).
      kind: ``"symmetric"`` (one draw per undirected edge, failed weight to both
        diagonals; needs a symmetric doubly stochastic ``W``), ``"pull"`` (one draw
        per directed edge, the receiver keeps the weight; needs a row-stochastic
        ``R``) or ``"push"`` (the sender keeps it; needs a column-stochastic ``C``).
      path: ``"auto"`` (:func:`time_varying_path`; a base built with an explicit path
        keeps it), ``"shift"``, ``"halo"`` or ``"dense"``.

    Returns:
      A :class:`TimeVaryingGossip`; wrap the method built with it in
      :func:`time_varying`.

    Raises:
      ValueError: if ``p`` is not in ``[0, 1)``, ``kind`` is unknown, or ``base``'s
        matrix lacks the stochasticity ``kind`` must preserve.

    Examples:
      >>> from core import comm, topology, weights
      >>> w = weights.metropolis_hastings(topology.ring(8))
      >>> link_failures(comm.gossip(w), 0.2).offsets
      (0, 1, 7)
    """
    if kind not in ("symmetric", "pull", "push"):
        raise ValueError(f"kind must be 'symmetric', 'pull' or 'push', got {kind!r}.")
    if (
        isinstance(p, bool)
        or not isinstance(p, (int, float, np.floating))
        or not 0.0 <= float(p) < 1.0
    ):
        raise ValueError(
            f"the link failure probability p must be a number in [0, 1), got p={p!r} "
            "(p = 1 would disconnect every round)."
        )
    if not isinstance(base, Gossip):
        raise ValueError(f"base must be a core.comm.Gossip, got {type(base).__name__}.")
    _check_path(path)
    w = base.matrix
    if kind == "symmetric":
        asym = weights.largest_asymmetry(w)[0]
        if asym > _ATOL:
            raise ValueError(
                f"kind='symmetric' needs a symmetric W (one failure draw per undirected "
                f"edge), but |W - W^T| reaches {asym:.3g}; use kind='pull' (row-stochastic "
                "R) or kind='push' (column-stochastic C) for a directed graph."
            )
        _check_stochastic(w, "symmetric doubly stochastic", 1, "W")
    elif kind == "pull":
        _check_stochastic(w, "row-stochastic (kind='pull')", 1, "R")
    else:
        _check_stochastic(w, "column-stochastic (kind='push')", 0, "C")
    offsets = tuple(sorted({0, *base.offsets}))  # failed weight goes to the diagonal
    if path == "auto" and not base.auto:
        path = base.path  # the path the base was built with, explicitly
    return TimeVaryingGossip(
        kind=kind,
        base=base,
        path=time_varying_path(path, len(offsets), base.n_agents, base.band, _nnz(w)),
        offsets=offsets,
        p=float(p),
        matrices=(w,),
        band=base.band,
    )


def sequence(
    matrices: Sequence[npt.ArrayLike],
    *,
    path: comm.Path = "auto",
    symmetric: bool = False,
    doubly_stochastic: bool = True,
    order: Literal["rcm"] | npt.ArrayLike | None = None,
) -> TimeVaryingGossip:
    r"""A fixed periodic sequence of graphs: round ``k`` mixes with ``matrices[k % T]``.

    Each matrix is validated like :func:`core.comm.gossip` validates one, except for
    connectivity, which only the sequence as a whole needs (the one-peer exponential
    graph's single rounds are disconnected): the **period average**
    :math:`\bar W = \frac1T \sum_k W_k`, whose support is the union graph, must pass
    :func:`core.weights.check_mixing_matrix` (doubly stochastic) or
    :func:`core.directed.check_row_stochastic` / ``check_column_stochastic`` (strongly
    connected, aperiodic union). :math:`\bar W` is also the operator's nominal
    ``matrix``, so the directed methods' host checks apply to the union graph.

    Args:
      matrices: ``T >= 1`` matrices of the same shape ``(n, n)``; they may have
        different supports.
      path: ``"shift"``, ``"halo"``, ``"dense"`` or ``"auto"`` (by the offsets and
        band of the union, :func:`time_varying_path`).
      symmetric: require every matrix to be symmetric. Unlike
        :func:`core.comm.gossip` the default is ``False``, because the typical
        sequence (one-peer exponential) is doubly stochastic but not symmetric.
      doubly_stochastic: require rows and columns to sum to one. With ``False``
        every matrix must be row-stochastic (a pull sequence) or every matrix
        column-stochastic (a push sequence).
      order: relabel the agents (:mod:`core.relabel`): ``"rcm"`` (reverse
        Cuthill–McKee of the union support) or a permutation; then build the Runner
        with ``order=op.order``, as for :func:`core.comm.gossip`.

    Returns:
      A :class:`TimeVaryingGossip`; wrap the method built with it in
      :func:`time_varying`.

    Raises:
      ValueError: for an empty list, matrices of different shapes, a matrix that is
        not stochastic as required (the message names the matrix and its row or
        column), or a union graph that does not mix.

    Examples:
      >>> from core import directed
      >>> op = sequence(directed.one_peer_exponential(8))
      >>> op.period, op.offsets, op.max_out_degree
      (3, (0, 1, 2, 4), 1)
    """
    _check_path(path)
    mats = [
        weights._as_square_float(m, f"matrix {k} of the sequence") for k, m in enumerate(matrices)
    ]
    if not mats:
        raise ValueError("sequence needs at least one matrix, got an empty list.")
    shapes = [m.shape for m in mats]
    if len(set(shapes)) > 1:
        k = next(k for k, s in enumerate(shapes) if s != shapes[0])
        raise ValueError(
            f"every matrix of the sequence must have the same shape (n, n): matrix 0 has "
            f"shape {shapes[0]} but matrix {k} has shape {shapes[k]}."
        )
    if doubly_stochastic:
        axes = (1, 0)
        what = "symmetric doubly stochastic" if symmetric else "doubly stochastic"
    else:
        # A pull sequence (rows) or a push sequence (columns), never a mixture.
        rows_ok = all(np.allclose(m.sum(axis=1), 1.0, rtol=0, atol=_ATOL) for m in mats)
        axes = (1,) if rows_ok else (0,)
        what = "row-stochastic" if rows_ok else "column-stochastic (or all row-stochastic)"
    for k, m in enumerate(mats):
        for axis in axes:
            _check_stochastic(m, what, axis, f"matrix {k} of the sequence")
        if symmetric:
            asym, i, j = weights.largest_asymmetry(m)
            if asym > _ATOL:
                raise ValueError(
                    f"matrix {k} of the sequence is not symmetric: |W - W^T| = "
                    f"{asym:.6g} at ({i}, {j}); pass symmetric=False for doubly "
                    "stochastic but non-symmetric matrices."
                )
    average = functools.reduce(operator.add, mats) / len(mats)
    try:
        if doubly_stochastic:
            weights.check_mixing_matrix(average, symmetric=symmetric)
        elif axes == (1,):
            directed.check_row_stochastic(average)
        else:
            directed.check_column_stochastic(average)
    except ValueError as err:
        raise ValueError(
            f"the sequence does not mix: its period average (1/T) sum_k W_k, whose support "
            f"is the union graph of the {len(mats)} rounds, fails its check: {err}"
        ) from None
    nominal = comm.gossip(average, path="dense", doubly_stochastic=False, order=order)
    if nominal.order is not None:
        mats = [relabel.permute(m, nominal.order) for m in mats]
    offsets = tuple(sorted({0, *nominal.offsets}))
    path = time_varying_path(path, len(offsets), nominal.n_agents, nominal.band, _nnz(average))
    return TimeVaryingGossip(
        kind="sequence",
        base=nominal,
        path=path,
        offsets=offsets,
        p=0.0,
        matrices=tuple(mats),
        band=nominal.band,
    )


# --------------------------------------------------------------------------------------
# The wrapper.
# --------------------------------------------------------------------------------------


class TimeVaryingState(NamedTuple):
    """State of a method run over a time-varying graph.

    Attributes:
      inner: the method's own state.
      round: int32 ``(b,)``: the round :math:`k` of the next step, per agent (all
        equal; kept per agent so every leaf has the agent axis).
    """

    inner: Any
    round: jax.Array


def time_varying(
    algorithm: Algorithm, op: TimeVaryingGossip | Sequence[TimeVaryingGossip]
) -> Algorithm:
    r"""Runs ``algorithm`` (built with ``op``) over the time-varying graph of ``op``.

    During step :math:`k` (the state's round counter) every ``mix`` of every operator
    in ``op`` applies :math:`W_k`, drawn from ``round_key(step_key)`` (link failures)
    or chosen as :math:`W_{k \bmod T}` (sequence); the same :math:`W_k` for every
    call within the step. Mixes inside ``init`` use round 0 drawn from
    ``round_key(init_key)``. Steps must receive different keys, as the run loop's
    do, for link failures to be redrawn every round. The method's metrics, its
    ``params`` and its name pass through unchanged.

    Args:
      algorithm: a method built with the operator(s).
      op: the :class:`TimeVaryingGossip` it was built with, or several (e.g.
        Push-Pull's pull ``R`` and push ``C``), which then share each round's key.

    Returns:
      An :class:`~core.algorithm.Algorithm` with state :class:`TimeVaryingState`.

    Raises:
      ValueError: if an operator is not a :class:`TimeVaryingGossip` or the operators
        are for different numbers of agents.
    """
    ops = tuple(op) if isinstance(op, (list, tuple)) else (op,)
    if not ops or not all(isinstance(o, TimeVaryingGossip) for o in ops):
        raise ValueError(
            "time_varying needs the TimeVaryingGossip operator(s) the method was built "
            f"with (from link_failures or sequence), got {op!r}."
        )
    if len({o.n_agents for o in ops}) > 1:
        raise ValueError(
            f"the operators are for different numbers of agents: {[o.n_agents for o in ops]}."
        )
    ops = tuple({id(o): o for o in ops}.values())  # The same operator passed twice.

    def in_round(fn, round_index, key):
        with contextlib.ExitStack() as stack:
            for o in ops:
                stack.enter_context(o.in_round(round_index, key))
            return fn()

    def init(params: PyTree, data: PyTree, key: jax.Array) -> TimeVaryingState:
        block = block_size(params)
        start = jnp.zeros((block,), jnp.int32)
        inner = in_round(lambda: algorithm.init(params, data, key), start, round_key(key))
        return TimeVaryingState(inner, start)

    def step(state: TimeVaryingState, batch: Batch, key: jax.Array):
        inner, metrics = in_round(
            lambda: algorithm.step(state.inner, batch, key), state.round, round_key(key)
        )
        return TimeVaryingState(inner, state.round + 1), metrics

    def params(state: TimeVaryingState) -> PyTree:
        return algorithm.params(state.inner)

    return Algorithm(init=init, step=step, params=params, name=algorithm.name)
