"""The decentjax workloads the comparisons time, built from the library's public pieces.

Every workload is a :class:`core.loop.Runner` over synthetic data (timings do not depend
on the values; nothing downloads), with a no-op evaluator so that only the steps are
timed, and a fresh-state factory so every repetition starts from the same point:

* :func:`mlp_workload`: the MLP 784-256-10 softmax classifier of the equal-work and the
  PyTorch comparisons, for DSGD, gradient tracking or the centralized baseline;
* :func:`logistic_workload`: ℓ2 logistic regression (d = 785) for D-RR / DSGD, as in the
  D-RR experiments, used by the NumPy and the scaling comparisons;
* :func:`cnn_fedavg_workload`: FedAvg with the small CNN of :func:`models.nets.cnn`.

:func:`mixing_matrix` builds the Metropolis–Hastings matrices of the graphs by name, so the
peers are handed exactly the ``W`` decentjax uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from decentjax import algos
from decentjax.core import algorithm as algorithm_lib
from decentjax.core import comm, loop, mesh, sampling, topology, weights
from decentjax.models import nets, objectives

PyTree = Any
GRAPHS = ("ring", "exponential")


def no_metrics(params: PyTree, data: PyTree, test: PyTree) -> dict:
    """An evaluator that computes nothing, so a timed chunk holds only the steps."""
    del params, data, test
    return {}


def mixing_matrix(graph: str, n: int, *, lazy: bool = False) -> np.ndarray:
    """Metropolis–Hastings mixing matrix (optionally lazy, ``(I + W) / 2``) of a graph.

    Args:
      graph: ``"ring"`` or ``"exponential"``; ``"complete"`` gives ``W = 11^T / n``.
      n: number of agents.
      lazy: return the lazy matrix, as the D-RR authors' code does.
    """
    if graph == "complete":
        w = weights.averaging(n)
    elif graph in GRAPHS:
        w = weights.metropolis_hastings(getattr(topology, graph)(n))
    else:
        raise ValueError(f"unknown graph {graph!r}; valid: {[*GRAPHS, 'complete']}.")
    return weights.lazy(w) if lazy else w


@dataclasses.dataclass
class Workload:
    """A runner with its data and a factory of fresh (sharded) initial states.

    Attributes:
      runner: the compiled run of one algorithm.
      data: the agents' sharded data.
      fresh_state: ``() -> state``, a new initial state (states are donated by a run).
      steps_per_epoch: inner steps in one epoch of ``runner``.
      n_agents: agents in the run.
      gossip: the gossip operator (``None`` for federated/centralized runs).
    """

    runner: loop.Runner
    data: PyTree
    fresh_state: Callable[[], Any]
    steps_per_epoch: int
    n_agents: int
    gossip: comm.Gossip | None = None


def _build(
    algorithm, sampler, n: int, n_devices: int, data: dict, params0: PyTree, gossip=None
) -> Workload:
    agent_mesh = mesh.make_agent_mesh(n, n_devices)
    order = None if gossip is None else gossip.order
    runner = loop.Runner(algorithm, sampler, agent_mesh, no_metrics, order=order)
    shard = runner.shard_agents(data)  # in the user's order; the runner permutes
    key = jax.random.key(0)

    def fresh_state():
        return runner.init(runner.shard_agents(params0, what="params"), shard, key)

    return Workload(runner, shard, fresh_state, sampler.steps_per_epoch, n, gossip)


def classification_data(n: int, m: int, shape: tuple[int, ...], classes: int, seed: int = 0):
    """Synthetic per-agent images/features ``(n, m, *shape)`` float32 and labels ``(n, m)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, m, *shape), dtype=np.float32)
    y = rng.integers(0, classes, (n, m)).astype(np.int32)
    return {"x": x, "y": y}


def _zero_loss(params: PyTree, batch: PyTree) -> jax.Array:
    """A loss whose gradient is zero (the data are not read): DSGD on it only gossips."""
    del batch
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(params)) * 0.0


def _stacked_init(model: nets.Model, n: int) -> PyTree:
    """One initial point repeated for every agent (a common start, as the papers use)."""
    params = jax.jit(model.init)(jax.random.key(1))
    return jax.tree.map(lambda p: np.broadcast_to(np.asarray(p), (n, *p.shape)).copy(), params)


def mlp_workload(
    method: str,
    n: int,
    *,
    graph: str = "ring",
    path: str = "auto",
    batch: int = 32,
    hidden: int = 256,
    steps_per_epoch: int = 10,
    samples: int = 256,
    n_devices: int = 1,
) -> Workload:
    """The MLP 784-``hidden``-10 workload: DSGD, gradient tracking or centralized.

    Args:
      method: ``"dsgd"``, ``"gt"`` (DSGT), ``"gossip"`` (DSGD with a zero gradient:
        the mix alone) or ``"centralized"`` (server-averaged gradients; with ``n = 1``
        it is plain minibatch SGD on one model).
      n: number of agents.
      graph: gossip graph of the decentralized methods.
      path: gossip path, ``"auto"``, ``"shift"`` or ``"dense"``.
      batch: samples per agent per step.
      hidden: width of the hidden layer.
      steps_per_epoch: steps in one epoch (i.i.d. sampling).
      samples: samples each agent holds.
      n_devices: devices of the agent mesh.
    """
    model = nets.mlp(784, [hidden], 10)
    loss = objectives.softmax_cross_entropy(model.apply).loss
    data = classification_data(n, samples, (784,), 10)
    sampler = sampling.iid(samples, batch, steps_per_epoch)
    lr = 0.05
    if method == "centralized":
        op = comm.gossip(weights.averaging(n), path="shift")
        algorithm = algos.centralized(loss, op, lr)
    else:
        op = comm.gossip(mixing_matrix(graph, n), path=path)
        if method == "dsgd":
            algorithm = algos.dsgd(loss, op, lr)
        elif method == "gt":
            algorithm = algos.gradient_tracking(loss, op, lr)
        elif method == "gossip":  # DSGD with a zero gradient: x <- W x only.
            algorithm = algos.dsgd(_zero_loss, op, lr)
        else:
            raise ValueError(f"unknown method {method!r}; valid: dsgd, gt, gossip, centralized.")
    return _build(algorithm, sampler, n, n_devices, data, _stacked_init(model, n), op)


def logistic_data(n: int, m: int, d: int = 785, seed: int = 0) -> dict:
    """Unit-norm features with a bias column (the D-RR preprocessing) and 0/1 labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, m, d), dtype=np.float32)
    x[..., -1] = 1.0
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = rng.integers(0, 2, (n, m)).astype(np.int32)
    return {"x": x, "y": y}


def logistic_workload(
    method: str,
    data: dict,
    w: np.ndarray,
    *,
    path: str = "auto",
    alpha: float = 0.01,
    reg: float = 0.2,
    n_devices: int = 1,
    order: str | np.ndarray | None = None,
) -> Workload:
    """D-RR (random reshuffling) or DSGD (i.i.d.) on ℓ2 logistic regression, batch 1.

    Args:
      method: ``"d_rr"`` or ``"dsgd"``.
      data: from :func:`logistic_data`, leaves ``(n, m, ...)``.
      w: the ``(n, n)`` mixing matrix, dense or ``scipy.sparse``, or a built
        :class:`core.comm.Gossip` (then ``path`` and ``order`` are its own).
      path: gossip path.
      alpha: constant step size.
      reg: the ℓ2 weight λ.
      n_devices: devices of the agent mesh.
      order: relabel the agents (``comm.gossip``'s ``order``); the data are laid out
        to match.
    """
    n, m, d = data["x"].shape
    loss = objectives.logistic_regression(reg=reg).loss
    # Validated at every size: the mixing check is O(nnz) above 1024 agents.
    op = w if isinstance(w, comm.Gossip) else comm.gossip(w, path=path, order=order)
    if method == "d_rr":
        algorithm, sampler = algos.d_rr(loss, op, alpha), sampling.reshuffle(m)
    elif method == "dsgd":
        algorithm, sampler = algos.dsgd(loss, op, alpha), sampling.iid(m)
    else:
        raise ValueError(f"unknown method {method!r}; valid: d_rr, dsgd.")
    params0 = np.zeros((n, d), np.float32)
    return _build(algorithm, sampler, n, n_devices, data, params0, op)


def epoch_indices(workload: Workload, epoch: int = 0, key: jax.Array | None = None) -> np.ndarray:
    """The sample indices each agent visits in ``epoch``: int ``(n, steps, batch)``.

    The same draws as :class:`core.loop.Runner` (its documented key scheme:
    ``fold_in(fold_in(fold_in(key, epoch), 0), agent)``), so a peer can do equal work.
    """
    key = jax.random.key(0) if key is None else key
    epoch_key = jax.random.fold_in(jax.random.fold_in(key, epoch), 0)
    agents = jnp.arange(workload.n_agents, dtype=jnp.int32)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(epoch_key, agents)
    return np.asarray(jax.jit(jax.vmap(workload.runner.sampler.indices))(keys))


def cnn_fedavg_workload(
    clients: int,
    *,
    local_steps: int,
    batch: int,
    image: tuple[int, int, int] = (28, 28, 1),
    lr: float = 0.05,
    n_devices: int = 1,
    agent_map: str = "map",
) -> Workload:
    """FedAvg with :func:`models.nets.cnn` (two 3x3 convs 16/32, avg-pool, dense).

    One epoch is one round: every client holds ``local_steps * batch`` samples and takes
    ``local_steps`` i.i.d. minibatch steps, then the server averages (full participation).
    ``agent_map`` is ``"map"`` (client gradients one client at a time, see
    :func:`core.algorithm.map_over_agents`) or ``"vmap"``.
    """
    model = nets.cnn(image, 10)
    loss = objectives.softmax_cross_entropy(model.apply).loss
    if agent_map == "map":
        loss = algorithm_lib.map_over_agents(loss)
    elif agent_map != "vmap":
        raise ValueError(f"agent_map must be 'map' or 'vmap', got {agent_map!r}.")
    samples = local_steps * batch
    data = classification_data(clients, samples, image, 10)
    server = comm.gossip(weights.averaging(clients), path="shift")
    algorithm = algos.fedavg(loss, server, lr, local_steps=local_steps)
    sampler = sampling.iid(samples, batch, local_steps)
    return _build(algorithm, sampler, clients, n_devices, data, _stacked_init(model, clients))
