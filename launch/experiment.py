"""Builds the pieces of a run from a config: data, objective, graph, algorithms.

Names used in config files resolve here, each against a table, so a typo is a
``ValueError`` that lists the valid names before anything is compiled. Algorithms,
topologies, datasets and models not in the tables are looked up in
:mod:`launch.registry` (registered names, or ``"package.module:function"``).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from decentjax import algos
from decentjax.core import algorithm as algorithm_lib
from decentjax.core import (
    comm,
    compression,
    directed,
    schedules,
    weights,
)
from decentjax.core import relabel as relabel_lib
from decentjax.launch import (
    async_methods,
    model_tasks,
    private_runs,
    registry,
    sweeps,
)
from decentjax.launch.experiment_data import load_data, split_over_agents  # noqa: F401 - re-exported
from decentjax.launch.method_tables import (  # noqa: F401 - re-exported
    ALGORITHMS,
    COMPRESSED_ALGORITHMS,
    DIRECTED_ALGORITHMS,
    DIRECTED_TOPOLOGIES,
    FEDERATED_ALGORITHMS,
    FEDERATED_COMPRESSED_ALGORITHMS,
    LOCAL_GOSSIP_ALGORITHMS,
    OBJECTIVES,
    TOPOLOGIES,
    WEIGHTS,
)
from decentjax.launch.registry import AlgorithmSpec  # noqa: F401 - re-exported
from decentjax.models import nets, objectives

PyTree = Any


PARTITIONS = ("label_sorted", "iid", "dirichlet", "pathological")

MODELS = ("linear", "mlp", "cnn", *model_tasks.NNX_MODELS)


def _lookup(table: dict[str, Any], name: str, what: str, kind: str | None = None) -> Any:
    """``table[name]``, else (for ``kind``) the user's registered or imported one."""
    if name in table:
        return table[name]
    found = registry.lookup(kind, name) if kind else None
    if found is None:
        more = f"; {registry.describe(kind)}" if kind else ""
        raise ValueError(f"unknown {what} {name!r}; valid: {sorted(table)}{more}.")
    return found


def split_name(name: str) -> tuple[str, str | None]:
    """``"cedas@qsgd4"`` -> ``("cedas", "qsgd4")``; ``"dsgd"`` -> ``("dsgd", None)``."""
    method, _, compressor = name.partition("@")
    return method, compressor or None


SAM_BUILT_IN = ("dfedsam", "dfedsam_mgs", "fedsam", "fedspeed", "fedspeed_code")
NO_GRADIENT = ("fedkseed", "fedkseed_pro")


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every name and number of a config before any data is loaded."""
    rho = config.get("sam_rho", 0.0)
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 <= rho < np.inf:
        raise ValueError(f"config.sam_rho must be a finite number >= 0, got {rho!r}.")
    for name in config.algorithms:
        method, compressor = split_name(name)
        if rho and method in SAM_BUILT_IN + NO_GRADIENT:
            raise ValueError(
                f"config.sam_rho={rho} applies SAM to every method's loss, but {name!r} "
                f"{'has SAM built in' if method in SAM_BUILT_IN else 'takes no gradients'}; "
                "set its own rho in config.federated or drop config.sam_rho."
            )
        if private_runs.is_private(name):  # "dp_<method>@<noise key>"
            method = private_runs.validate(config, name, model_tasks.uses_nnx(config))
            if method not in FEDERATED_ALGORITHMS:
                _lookup(ALGORITHMS, method, "algorithm", "algorithm")
            continue
        if config.get("directed"):
            _lookup(DIRECTED_ALGORITHMS, method, "directed-graph algorithm")
            if compressor is not None and compressor not in (config.get("compressors") or {}):
                raise ValueError(f"algorithm {name!r} names undefined compressor {compressor!r}.")
            continue
        if method in async_methods.ASYNC_METHODS:
            async_methods.asynchrony_model(config)  # checks config.asynchrony
        if compressor is None and method in async_methods.ASYNC_ALGORITHMS:
            continue
        if compressor is None and (
            method in FEDERATED_ALGORITHMS or method in LOCAL_GOSSIP_ALGORITHMS
        ):
            if not config.get("federated"):
                raise ValueError(f"algorithm {name!r} needs a config.federated section.")
            continue
        if compressor is None:
            _lookup(ALGORITHMS, method, "algorithm", "algorithm")
            continue
        if method in FEDERATED_COMPRESSED_ALGORITHMS and not config.get("federated"):
            raise ValueError(f"algorithm {name!r} needs a config.federated section.")
        if method not in FEDERATED_COMPRESSED_ALGORITHMS:
            _lookup(COMPRESSED_ALGORITHMS, method, "compressed algorithm")
        specs = config.get("compressors") or {}
        if compressor not in specs:
            raise ValueError(
                f"algorithm {name!r} names compressor {compressor!r}, which config.compressors "
                f"does not define; defined: {sorted(specs)}."
            )
        _lookup(compression.COMPRESSORS, specs[compressor].name, "compressor")
    for name in config.topologies:
        table = DIRECTED_TOPOLOGIES if config.get("directed") else TOPOLOGIES
        _lookup(table, name, "topology", "topology")
    if not config.get("directed"):
        _lookup(WEIGHTS, config.weights, "weights")
    if config.objective.name == "softmax":
        name = config.get("model", {}).get("name")
        if name not in MODELS and not (isinstance(name, str) and registry.lookup("model", name)):
            raise ValueError(
                f"objective 'softmax' needs config.model.name in {list(MODELS)} "
                f"({registry.describe('model')}), got {name!r}."
            )
        if model_tasks.uses_nnx(config):
            model_tasks.validate(config)
    else:
        _lookup(OBJECTIVES, config.objective.name, "objective")
    if config.data.partition not in PARTITIONS:
        raise ValueError(f"unknown partition {config.data.partition!r}; valid: {list(PARTITIONS)}.")
    if config.n_agents < 1 or config.num_epochs < 1 or config.log_every < 1:
        raise ValueError(
            "n_agents, num_epochs and log_every must be >= 1; got "
            f"{config.n_agents}, {config.num_epochs}, {config.log_every}."
        )
    if config.get("relabel", "none") not in RELABEL:
        raise ValueError(f"relabel must be one of {list(RELABEL)}, got {config.relabel!r}.")
    if config.get("relabel", "none") != "none" and sweeps.num_runs(config) > 1:
        raise ValueError(
            f"relabel={config.relabel!r} needs a single run per method (no seeds / sweep): "
            "runs axes stay in the user's labels."
        )
    if config.get("agent_map", "auto") not in AGENT_MAPS:
        raise ValueError(
            f"agent_map must be one of {list(AGENT_MAPS)}, got {config.get('agent_map')!r}."
        )
    if config.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {config.dtype!r}.")
    if config.step.schedule not in ("constant", "inverse_epoch", "piecewise"):
        raise ValueError(
            "step.schedule must be 'constant', 'inverse_epoch' or 'piecewise', got "
            f"{config.step.schedule!r}."
        )


def mixing_operator(config: ml_collections.ConfigDict, name: str):
    """The gossip operator for topology ``name`` and its spectral gap.

    For directed graphs (``config.directed``): the pair ``(R, C)`` of pull
    (row-stochastic) and push (column-stochastic) operators, relabelled together (one
    order) as ``config.relabel`` asks, and the spectral gap of ``R`` (one minus its
    second-largest eigenvalue modulus).
    """
    if config.get("directed"):
        adjacency = _lookup(DIRECTED_TOPOLOGIES, name, "topology", "topology")(
            config.n_agents, config.seed
        )
        r, c = directed.row_stochastic(adjacency), directed.column_stochastic(adjacency)
        ops = relabelled_gossips(
            (r, c), config.get("relabel", "none"), symmetric=False, doubly_stochastic=False
        )
        moduli = np.sort(np.abs(np.linalg.eigvals(r)))[::-1]
        return ops, float(1.0 - moduli[1]) if len(moduli) > 1 else 1.0
    adjacency = _lookup(TOPOLOGIES, name, "topology", "topology")(config.n_agents, config.seed)
    w = _lookup(WEIGHTS, config.weights, "weights")(adjacency)
    return relabelled_gossip(w, config.get("relabel", "none")), weights.spectral_gap(w)


RELABEL = ("none", "rcm", "auto")
"""Values of ``config.relabel``: see :func:`relabelled_gossip`."""


def relabelled_gossip(w: Any, relabel: str) -> comm.Gossip:
    """``comm.gossip(w)``, relabelled as ``config.relabel`` asks.

    ``"none"``: the user's labels. ``"rcm"``: reverse Cuthill–McKee (the halo path when
    the band fits, :func:`core.comm.auto_path`). ``"auto"``: RCM when ``w`` has more than
    :data:`core.comm.AUTO_SHIFT_MIN_OFFSETS` distinct offsets and the relabelled operator
    takes the halo path, else the user's labels. The run's Runner then takes
    ``order=op.order`` and reports per-agent results in the user's order.
    """
    return relabelled_gossips((w,), relabel)[0]


def relabelled_gossips(
    matrices: tuple[Any, ...], relabel: str, **kwargs: Any
) -> tuple[comm.Gossip, ...]:
    """:func:`relabelled_gossip` for operators on one graph (a directed ``R`` and ``C``).

    All get the same order, reverse Cuthill–McKee of the first matrix's (symmetrised)
    support; with ``"auto"`` they are relabelled only if every one then takes the halo
    path. ``kwargs`` go to :func:`core.comm.gossip`.
    """
    if relabel not in RELABEL:
        raise ValueError(f"relabel must be one of {list(RELABEL)}, got {relabel!r}.")
    if relabel == "none":
        return tuple(comm.gossip(w, **kwargs) for w in matrices)
    plain = None
    if relabel == "auto":
        plain = tuple(comm.gossip(w, **kwargs) for w in matrices)
        if len(plain[0].offsets) <= comm.AUTO_SHIFT_MIN_OFFSETS:
            return plain
    order = relabel_lib.reverse_cuthill_mckee(matrices[0])
    banded = tuple(comm.gossip(w, order=order, **kwargs) for w in matrices)
    if relabel == "rcm" or all(op.path == "halo" for op in banded):
        return banded
    return plain


def model(config: ml_collections.ConfigDict, input_shape: tuple[int, ...], num_classes: int):
    """The Flax NNX model of ``config.model`` as pure ``init``/``apply`` functions."""
    name, dtype = config.model.name, np.dtype(config.dtype)
    features = int(np.prod(input_shape))
    if name == "linear":
        return nets.linear(features, num_classes, param_dtype=dtype)
    if name == "mlp":
        return nets.mlp(features, tuple(config.model.hidden), num_classes, param_dtype=dtype)
    if name == "cnn":
        return nets.cnn(tuple(input_shape), num_classes, param_dtype=dtype)
    build = _lookup({}, name, "model", "model")
    return build(tuple(input_shape), num_classes, dtype, config.model)


def objective(
    config: ml_collections.ConfigDict, net=None, num_classes: int | None = None
) -> objectives.Objective:
    """The per-agent objective named by ``config.objective``.

    ``net`` (and its output size ``num_classes``, which the labels are checked
    against) for softmax.
    """
    if config.objective.name == "softmax":
        return objectives.softmax_cross_entropy(
            net.apply, reg=config.objective.reg, num_classes=num_classes
        )
    return _lookup(OBJECTIVES, config.objective.name, "objective")(reg=config.objective.reg)


def learning_rate(config: ml_collections.ConfigDict, steps_per_epoch: int):
    r"""The step size of ``config.step``.

    ``constant``: ``step.constant``; ``inverse_epoch``: the RR papers'
    :math:`\alpha_t = a/(bt+c)`; ``piecewise``: ``step.levels`` switching at the
    epochs ``step.boundaries``.
    """
    step = config.step
    if step.schedule == "constant":
        return float(step.constant)
    if step.schedule == "piecewise":
        return schedules.piecewise_epoch(list(step.levels), list(step.boundaries), steps_per_epoch)
    return schedules.inverse_epoch(step.a, step.b, step.c, steps_per_epoch)


CONVEX_OBJECTIVES = ("logistic", "least_squares")


def sampler_of(config: ml_collections.ConfigDict, name: str) -> tuple[str, bool]:
    """``(sampler name, decentralized)`` of the method a config name denotes."""
    if private_runs.is_private(name):
        return private_runs.SAMPLER, sampler_of(config, private_runs.parse(config, name)[0])[1]
    method, compressor_key = split_name(name)
    if config.get("directed"):
        return config.get("directed_sampler", "full"), True
    if (compressor_key is None and method in FEDERATED_ALGORITHMS) or (
        compressor_key is not None and method in FEDERATED_COMPRESSED_ALGORITHMS
    ):
        return "iid", False
    if compressor_key is None and method in async_methods.ASYNC_ALGORITHMS:
        return config.get("async_sampler", "iid"), True
    if compressor_key is None and method in LOCAL_GOSSIP_ALGORITHMS:
        return "iid", True
    if compressor_key is None:
        spec = _lookup(ALGORITHMS, method, "algorithm", "algorithm")
        return spec.sampler, spec.decentralized
    return config.get("compressed_sampler", "iid"), True


AGENT_MAPS = ("auto", "vmap", "map")
"""``config.agent_map``: how per-agent gradients are batched (see :func:`agent_loss`)."""


def agent_loss(config: ml_collections.ConfigDict, loss_fn):
    """``loss_fn`` as the methods should differentiate it per agent.

    ``config.agent_map`` (optional, default ``"auto"``): ``"vmap"`` batches the agents
    of a device with ``jax.vmap``; ``"map"`` loops over them with ``jax.lax.map``
    (:func:`core.algorithm.map_over_agents`); ``"auto"`` maps for the CNN, whose batched
    form XLA:CPU runs slowly, and vmaps otherwise.
    """
    mode = config.get("agent_map", "auto")
    if mode == "auto":
        mode = "map" if config.get("model", {}).get("name") == "cnn" else "vmap"
    return algorithm_lib.map_over_agents(loss_fn) if mode == "map" else loss_fn


def build_algorithm(config: ml_collections.ConfigDict, name: str, loss_fn, comm_op, lr):
    """The method a config name denotes (``"dsgd"``, ``"cedas@qsgd4"``, ...).

    A :class:`core.loss_inputs.Task` loss (an NNX model with state, a keyed loss) runs
    the same method through :func:`algos.with_model`.
    """
    if model_tasks.is_task(loss_fn):
        return algos.with_model(
            lambda loss, op: build_algorithm(config, name, loss, op, lr), loss_fn, comm_op
        )
    if private_runs.is_private(name):
        method, sigma = private_runs.parse(config, name)
        return algos.private(
            lambda loss, op: build_algorithm(config, method, loss, op, lr),
            loss_fn,
            comm_op,
            clip_norm=config.privacy.clip_norm,
            noise_multiplier=sigma,
        )
    return async_methods.timed(config, name, _build(config, name, loss_fn, comm_op, lr))


def _build(config: ml_collections.ConfigDict, name: str, loss_fn, comm_op, lr):
    """:func:`build_algorithm` for a plain loss, before any simulated clock.

    ``config.sam_rho`` > 0 gives every method SAM local steps: the loss becomes
    :func:`algos.sam` ``(loss, rho)`` (gradient at the perturbed point
    ``x + rho grad f / |grad f|``, same minibatch).
    """
    method, compressor_key = split_name(name)
    if config.get("sam_rho", 0.0):
        loss_fn = algos.sam(loss_fn, config.sam_rho)
    if compressor_key is None and method in async_methods.ASYNC_ALGORITHMS:
        return async_methods.ASYNC_ALGORITHMS[method](
            loss_fn, comm_op, lr, async_methods.asynchrony_model(config)
        )
    if config.get("directed"):
        compressor = None
        if compressor_key is not None:
            compressor = _make_compressor(config.compressors[compressor_key])
        pull, push = comm_op
        return DIRECTED_ALGORITHMS[method](loss_fn, pull, push, lr, config, compressor)
    if compressor_key is None and method in FEDERATED_ALGORITHMS:
        return FEDERATED_ALGORITHMS[method](loss_fn, comm_op, lr, config.federated)
    if compressor_key is None and method in LOCAL_GOSSIP_ALGORITHMS:
        return LOCAL_GOSSIP_ALGORITHMS[method](loss_fn, comm_op, lr, config.federated)
    if compressor_key is None:
        return _lookup(ALGORITHMS, method, "algorithm", "algorithm").factory(loss_fn, comm_op, lr)
    spec = config.compressors[compressor_key]
    if method in FEDERATED_COMPRESSED_ALGORITHMS:
        compressor = _make_compressor(spec)
        return FEDERATED_COMPRESSED_ALGORITHMS[method](
            loss_fn, comm_op, lr, compressor, config.federated
        )
    return COMPRESSED_ALGORITHMS[method](loss_fn, comm_op, lr, _make_compressor(spec), spec)


def _make_compressor(spec: ml_collections.ConfigDict) -> compression.Compressor:
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "consensus_step")}
    return compression.make_compressor(spec.name, **kwargs)
