"""Your own algorithms, graphs, datasets and models in the CLI, without editing the library.

A config names a built-in (``"dsgd"``, ``"ring"``, ``"sklearn:digits"``, ``"mlp"``),
a name registered here, or a function by import path, ``"package.module:function"``::

    # mypkg/methods.py
    from decentjax.launch import registry
    from decentjax import algos
    def heavy_ball_dsgd(loss_fn, comm_op, learning_rate):
        return algos.dsgd(loss_fn, comm_op, optimizer=optax.sgd(learning_rate, momentum=0.9))

    registry.register_algorithm("heavy_ball", heavy_ball_dsgd)

    # in a config file: `import mypkg.methods` then
    config.algorithms = ("dsgd", "heavy_ball")           # registered when mypkg.methods loads
    config.algorithms = ("dsgd", "mypkg.methods:heavy_ball_dsgd")   # or by import path

What each kind of function takes and returns:

* algorithm: ``factory(loss_fn, comm_op, learning_rate) -> core.algorithm.Algorithm``,
  as the built-in table's (:data:`launch.method_tables.ALGORITHMS`); register with the
  sampler it is run with (``"iid"``, ``"reshuffle"``, ``"full"``) and whether it
  gossips (``decentralized=False`` runs it once, on no graph). An import path may name
  an :class:`AlgorithmSpec` to say the same.
* topology: ``fn(n_agents, seed) -> adjacency``, an ``(n, n)`` boolean NumPy array
  (symmetric for ``config.weights``; for ``config.directed``, ``A[i, j]``: j sends to i).
* dataset: ``fn(data_config, seed) -> {"x": (N, ...) array, "y": (N,) int array}``, the
  pooled data that ``config.data.partition`` splits (``data_config`` is ``config.data``,
  so it can read its own fields).
* model: ``fn(input_shape, num_classes, dtype, model_config) -> models.nets.Model``
  (pure ``init(key)`` / ``apply(params, x)``; ``models.nets`` builds one from any Flax NNX
  module), used with ``config.objective.name = "softmax"``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, NamedTuple


class AlgorithmSpec(NamedTuple):
    """How a config name maps to a method: its factory, sampler and whether it gossips."""

    factory: Callable[..., Any]
    sampler: str
    decentralized: bool


SAMPLERS = ("iid", "reshuffle", "full")

ALGORITHMS: dict[str, AlgorithmSpec] = {}
TOPOLOGIES: dict[str, Callable[[int, int], Any]] = {}
DATASETS: dict[str, Callable[..., Any]] = {}
MODELS: dict[str, Callable[..., Any]] = {}

_TABLES = {"algorithm": ALGORITHMS, "topology": TOPOLOGIES, "dataset": DATASETS, "model": MODELS}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _register(kind: str, name: str, value: Any, replace: bool) -> None:
    if not isinstance(name, str) or not name or ":" in name or "@" in name:
        raise ValueError(
            f"{kind} name must be a non-empty string without ':' or '@' (they mark import "
            f"paths and compressors), got {name!r}."
        )
    table = _TABLES[kind]
    if name in table and not replace:
        raise ValueError(
            f"{kind} {name!r} is registered already; pass replace=True to register it again."
        )
    table[name] = value


def register_algorithm(
    name: str,
    factory: Callable[..., Any],
    *,
    sampler: str = "iid",
    decentralized: bool = True,
    replace: bool = False,
) -> None:
    """Makes ``config.algorithms`` accept ``name`` for ``factory(loss_fn, comm_op, lr)``.

    Args:
      name: the config name (a built-in name stays the built-in: pick another).
      factory: returns the method's ``Algorithm``.
      sampler: how each agent draws its samples: one of :data:`SAMPLERS`.
      decentralized: ``False`` for a method with no graph (run once, "centralized").
      replace: allow registering ``name`` again.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}.")
    if not callable(factory):
        raise ValueError(f"factory for algorithm {name!r} must be callable, got {factory!r}.")
    _register("algorithm", name, AlgorithmSpec(factory, sampler, decentralized), replace)


def register_topology(name: str, fn: Callable[[int, int], Any], *, replace: bool = False):
    """Makes ``config.topologies`` accept ``name`` for ``fn(n_agents, seed) -> adjacency``."""
    _register("topology", name, fn, replace)


def register_dataset(name: str, fn: Callable[..., Any], *, replace: bool = False) -> None:
    """Makes ``config.data.source`` accept ``name`` for ``fn(data_config, seed) -> dataset``."""
    _register("dataset", name, fn, replace)


def register_model(name: str, fn: Callable[..., Any], *, replace: bool = False) -> None:
    """Makes ``config.model.name`` accept ``name`` for ``fn(input_shape, num_classes,
    dtype, model_config) -> models.nets.Model``."""
    _register("model", name, fn, replace)


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the form ``"package.module:attribute"``."""
    return bool(_IMPORT_PATH.match(name))


def load(path: str) -> Any:
    """The object at ``"package.module:attribute"`` (attribute may be dotted).

    Raises:
      ModuleNotFoundError: when the top-level package does not exist.
      ValueError: naming the path and what failed (a module inside an existing package
        not importable, no such attribute).
    """
    module_name, _, attribute = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name.split(".")[0]:
            raise  # No such package: maybe not an import path at all ("kaggle:titanic").
        raise ValueError(f"cannot import {module_name!r} of {path!r}: {error}.") from error
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r} of {path!r}: {error}.") from error
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{path!r}: {obj.__name__!r} has no attribute {part!r}.")
        obj = getattr(obj, part)
    return obj


def lookup(kind: str, name: str) -> Any | None:
    """The registered ``kind`` (``"algorithm"``, ...) called ``name``, or the object at
    its import path, or ``None`` when it is neither, or its package does not exist (the
    caller names the valid choices; ``"kaggle:titanic"`` may be a data source's typo).

    An algorithm given by import path as a plain function is run with the ``"iid"``
    sampler on the graph; name an :class:`AlgorithmSpec` to choose otherwise.
    """
    table = _TABLES[kind]
    if name in table:
        return table[name]
    if not is_import_path(name):
        return None
    try:
        obj = load(name)
    except ModuleNotFoundError:
        return None  # The caller's "unknown ..." message lists what else would do.
    if kind == "algorithm" and not isinstance(obj, AlgorithmSpec):
        if not callable(obj):
            raise ValueError(f"algorithm {name!r} is not callable: {obj!r}.")
        obj = AlgorithmSpec(obj, "iid", True)
    return obj


def describe(kind: str) -> str:
    """What else a config may name, for error messages."""
    names = sorted(_TABLES[kind])
    registered = f"registered: {names}; " if names else ""
    return f"{registered}or register_{kind}(name, fn) / 'package.module:function'"
