"""The launch's name tables: algorithms, topologies, weight rules and objectives.

Each maps a name used in config files to a constructor; :mod:`launch.experiment`
resolves names against them (and :mod:`launch.registry` for names not here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

from decentjax import algos
from decentjax.core import comm, compression, directed, topology, weights
from decentjax.launch import async_methods, federated_methods, sam_methods
from decentjax.launch.registry import AlgorithmSpec
from decentjax.models import objectives


def _square(n: int) -> tuple[int, int]:
    side = int(round(np.sqrt(n)))
    if side * side != n:
        raise ValueError(f"grid and torus need a square number of agents, got n_agents={n}.")
    return side, side


def _edas(loss_fn, comm_op, lr):
    """Exact diffusion on :math:`(I + W)/2` of the configured ``W`` (EDAS).

    What CEDAS and LEAD reduce to without compression (they build :math:`(I+W)/2`
    in), so a config with non-lazy weights compares them with the matching
    uncompressed method; ``ed`` itself needs a positive semidefinite ``W``.
    """
    lazy_op = comm.gossip(weights.lazy(comm_op.matrix), path=comm_op.path)
    return algos.exact_diffusion(loss_fn, lazy_op, lr, name="edas")


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "d_rr": AlgorithmSpec(algos.d_rr, "reshuffle", True),
    "gt_rr": AlgorithmSpec(algos.gt_rr, "reshuffle", True),
    "ed_rr": AlgorithmSpec(algos.ed_rr, "reshuffle", True),
    "dsgt": AlgorithmSpec(algos.gradient_tracking, "iid", True),
    "gt_atc": AlgorithmSpec(functools.partial(algos.gradient_tracking, variant="atc"), "iid", True),
    "diging": AlgorithmSpec(functools.partial(algos.gradient_tracking, variant="cta"), "iid", True),
    "ed": AlgorithmSpec(algos.exact_diffusion, "iid", True),
    "edas": AlgorithmSpec(_edas, "iid", True),
    "nids": AlgorithmSpec(algos.nids, "iid", True),
    "extra": AlgorithmSpec(algos.extra, "iid", True),
    "dsgd": AlgorithmSpec(algos.dsgd, "iid", True),
    "dsgd_cta": AlgorithmSpec(functools.partial(algos.dsgd, variant="cta"), "iid", True),
    "dsgd_full": AlgorithmSpec(algos.dsgd, "full", True),
    "dsgd_momentum": AlgorithmSpec(algos.dsgd_momentum, "iid", True),
    # DSMT mixes with the configured W, as DSGD / DSGT do (the authors' code runs all three
    # on Wbar = (I + W)/2): use lazy weights ("drr_metropolis", "lazy_metropolis").
    "dsmt": AlgorithmSpec(functools.partial(algos.dsmt, lazy=False), "iid", True),
    # Token methods: one model walks the graph (base walk P = the configured W).
    "rw_sgd": AlgorithmSpec(algos.random_walk_sgd, "iid", True),
    "srrw_sgd": AlgorithmSpec(algos.srrw_sgd, "iid", True),
    "centralized_rr": AlgorithmSpec(
        functools.partial(algos.centralized, name="centralized-rr"), "reshuffle", False
    ),
    "centralized_sgd": AlgorithmSpec(
        functools.partial(algos.centralized, name="centralized-sgd"), "iid", False
    ),
}

# Methods that take a compressor: a config names them "<method>@<compressor key>", the
# key indexing config.compressors (a compressor spec plus its consensus step).
COMPRESSED_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "cedas": lambda loss, op, lr, c, spec: algos.cedas(
        loss, op, c, lr, consensus_step=spec.consensus_step
    ),
    "lead": lambda loss, op, lr, c, spec: algos.lead(
        loss, op, c, lr, consensus_step=spec.consensus_step
    ),
    # CHOCO's theory is for contractive compressors: unbiased ones are scaled by 1/(1+w).
    "choco_sgd": lambda loss, op, lr, c, spec: algos.choco_sgd(
        loss, op, compression.contractive(c), lr, consensus_step=spec.consensus_step
    ),
    "dsgd_ef": lambda loss, op, lr, c, spec: algos.compressed(
        algos.dsgd,
        loss,
        op,
        c,
        consensus_step=spec.consensus_step,
        mode="ef",
        learning_rate=lr,
    ),
}


def _client_momentum(factory, loss_fn, comm_op, lr, fed):
    """FedAvg-M / SCAFFOLD-M with ``config.federated``'s rounds, participation, momentum."""
    return factory(
        loss_fn,
        comm_op,
        lr,
        local_steps=fed.local_steps,
        participation=fed.participation,
        momentum=fed.momentum,
    )


# Federated methods: hyperparameters from config.federated (local_steps, participation,
# mu, server_learning_rate). "local_sgd" is FedAvg with every client in every round.
FEDERATED_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "local_sgd": lambda loss, op, lr, fed: algos.fedavg(
        loss, op, lr, local_steps=fed.local_steps, participation=1.0
    ),
    "fedavg": lambda loss, op, lr, fed: algos.fedavg(
        loss, op, lr, local_steps=fed.local_steps, participation=fed.participation
    ),
    "fedavgm": lambda loss, op, lr, fed: algos.fedavg(
        loss,
        op,
        lr,
        local_steps=fed.local_steps,
        participation=fed.participation,
        server_optimizer=optax.sgd(1.0, momentum=0.9),
    ),
    "fedprox": lambda loss, op, lr, fed: algos.fedprox(
        loss, op, lr, mu=fed.mu, local_steps=fed.local_steps, participation=fed.participation
    ),
    "scaffold": lambda loss, op, lr, fed: algos.scaffold(
        loss, op, lr, local_steps=fed.local_steps, participation=fed.participation
    ),
    # Client momentum (Cheng et al. 2024), not fedavgm's server momentum: fed.momentum is
    # the weight beta of the fresh gradient in every local step.
    **{
        name: functools.partial(_client_momentum, getattr(algos, name))
        for name in ("fedavg_client_momentum", "scaffold_client_momentum")
    },
    **sam_methods.FEDERATED,  # fedsam, fedspeed
}
# Decentralized FL (local steps, then gossip on the config's graph), from config.federated.
LOCAL_GOSSIP_ALGORITHMS = sam_methods.DECENTRALIZED  # dfedavg(m), dfedsam, dfedsam_mgs


# FedKSeed and the compressed-uplink methods (launch/federated_methods.py).
FEDERATED_ALGORITHMS.update(federated_methods.ZEROTH_ORDER_ALGORITHMS)
FEDERATED_COMPRESSED_ALGORITHMS = federated_methods.FEDERATED_COMPRESSED_ALGORITHMS

# Directed-graph methods take (loss, pull R, push C, lr, config); compressed ones are
# named "<method>@<compressor key>" like the undirected compressed methods.
DIRECTED_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "push_pull": lambda loss, r, c, lr, cfg, comp: algos.push_pull(loss, r, c, lr),
    "ab": lambda loss, r, c, lr, cfg, comp: algos.push_pull(loss, r, c, lr, variant="ab"),
    "push_diging": lambda loss, r, c, lr, cfg, comp: algos.push_diging(loss, c, lr),
    "push_sum": lambda loss, r, c, lr, cfg, comp: algos.push_sum_sgp(loss, c, lr),
    "apd": lambda loss, r, c, lr, cfg, comp: algos.apd(loss, c, gamma=lr, w1=cfg.apd.w1),
    "apd_sc": lambda loss, r, c, lr, cfg, comp: algos.apd_sc(
        loss, c, gamma=lr, alpha=cfg.apd.alpha, beta=1.0 / (2.0 * cfg.apd.alpha)
    ),
    "cpp": lambda loss, r, c, lr, cfg, comp: algos.cpp(loss, r, c, lr, compressor=comp),
    "b_cpp_sync": lambda loss, r, c, lr, cfg, comp: algos.b_cpp_sync(
        loss, r, c, lr, compressor=comp, p=cfg.b_cpp_p
    ),
    # Asynchronous: one step is one tick of config.asynchrony (launch/async_methods.py).
    "b_cpp_async": lambda loss, r, c, lr, cfg, comp: algos.b_cpp_async(
        loss, r, c, async_methods.asynchrony_model(cfg), lr, compressor=comp
    ),
    "async_push_sum": lambda loss, r, c, lr, cfg, comp: algos.async_push_sum(
        loss, c, async_methods.asynchrony_model(cfg), lr
    ),
}

DIRECTED_TOPOLOGIES: dict[str, Callable[[int, int], np.ndarray]] = {
    "directed_ring": lambda n, seed: directed.directed_ring(n),
    "directed_exponential": lambda n, seed: directed.directed_exponential(n),
    "random_digraph": lambda n, seed: directed.random_strongly_connected(n, 0.2, seed=seed),
    "unbalanced": lambda n, seed: directed.unbalanced_example(n),
}

TOPOLOGIES: dict[str, Callable[[int, int], np.ndarray]] = {
    "ring": lambda n, seed: topology.ring(n),
    "exponential": lambda n, seed: topology.exponential(n),
    "complete": lambda n, seed: topology.complete(n),
    "star": lambda n, seed: topology.star(n),
    "grid": lambda n, seed: topology.grid(*_square(n)),
    "torus": lambda n, seed: topology.torus(*_square(n)),
    "erdos_renyi": lambda n, seed: topology.erdos_renyi(n, 0.8, seed=seed),
    "geometric": lambda n, seed: topology.random_geometric(n, 0.5, seed=seed),
}

WEIGHTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "metropolis": weights.metropolis_hastings,
    "lazy_metropolis": lambda a: weights.lazy(weights.metropolis_hastings(a)),
    # Kun Huang's D-RR code: his Metropolis variant, then made lazy (ALGORITHMS.md §1.1).
    "drr_metropolis": lambda a: weights.lazy(weights.metropolis_drr(a, self_loop_in_degree=True)),
    "uniform": weights.uniform,
}

OBJECTIVES: dict[str, Callable[..., objectives.Objective]] = {
    "logistic": objectives.logistic_regression,
    "nonconvex_logistic": objectives.nonconvex_logistic_regression,
    "least_squares": objectives.least_squares,
}
