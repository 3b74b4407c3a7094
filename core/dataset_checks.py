"""The dataset type and its checks: what every source and preprocessing step validates.

A :data:`Dataset` is a ``dict`` of NumPy arrays sharing their leading (sample) axis
(see :mod:`core.datasets`, the public face, which re-exports everything here).
:func:`validate_dataset` and :func:`check_labels` are public; the integer, seed and
feature checks and the row selection are shared by :mod:`core.dataset_sources` and
:mod:`core.dataset_preprocessing`.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

Dataset = dict[str, np.ndarray]
"""A dict of NumPy arrays sharing their leading (sample) axis."""


# ---------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    # bool is an Integral subclass, but passing True as a count is always a bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_seed(seed: Any) -> int:
    # A required, explicit integer seed keeps every random split reproducible.
    return _check_int("seed", seed, minimum=0)


def validate_dataset(data: Any, *, require: Iterable[str] = ("x",)) -> int:
    """Checks that ``data`` is a dataset and returns its number of samples.

    Args:
      data: the object to check; it must be a mapping from ``str`` to NumPy arrays
        of at least one dimension that all share their leading axis length.
      require: keys that must be present.

    Returns:
      The common leading axis length ``N``.

    Raises:
      ValueError: if ``data`` is not a non-empty mapping of arrays, a required key
        is missing, a value is not an array with a leading axis, or the leading axes
        differ (the error lists every key with its length).
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError(
            "a dataset must be a non-empty dict of NumPy arrays such as "
            f"{{'x': (N, d), 'y': (N,)}}, got {type(data).__name__}"
        )
    missing = [k for k in require if k not in data]
    if missing:
        raise ValueError(
            f"dataset is missing key(s) {missing}; it has keys {sorted(data)} "
            f"and needs {list(require)}"
        )
    lengths = {}
    for key, value in data.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"dataset[{key!r}] must be a NumPy array, got {type(value).__name__}")
        if value.ndim < 1:
            raise ValueError(f"dataset[{key!r}] must have a leading sample axis, got a scalar")
        lengths[key] = value.shape[0]
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"dataset arrays must share their leading (sample) axis, got lengths {lengths}"
        )
    return next(iter(lengths.values()))


def check_labels(data: Mapping[str, np.ndarray]) -> np.ndarray:
    """Returns ``data['y']`` after checking it is a 1-D integer label array."""
    y = data["y"]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"dataset['y'] must be a 1-D integer label array, got shape {y.shape} "
            f"and dtype {y.dtype}"
        )
    return y


def _check_features(data: Mapping[str, np.ndarray], what: str) -> np.ndarray:
    x = data["x"]
    if x.ndim != 2:
        raise ValueError(
            f"{what} needs 2-D features (N, d), got dataset['x'] of shape {x.shape}; "
            "call flatten() first"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} needs floating-point features, got dtype {x.dtype}")
    return x


def _select(data: Mapping[str, np.ndarray], index: np.ndarray) -> Dataset:
    return {k: v[index] for k, v in data.items()}
