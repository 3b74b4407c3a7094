"""Dataset preprocessing: class subsets, label binarisation, flattening, bias, scaling, splits.

Every function validates its input, returns a new dataset and never modifies its
input in place (see :mod:`core.datasets`, the public face, which re-exports
everything here).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping

import numpy as np

from decentjax.core.dataset_checks import (
    Dataset,
    _check_features,
    _check_seed,
    _select,
    check_labels,
    validate_dataset,
)


def binary_subset(data: Mapping[str, np.ndarray], positive: int, negative: int) -> Dataset:
    """Keeps the samples of two classes and relabels them ``positive -> 1, negative -> 0``.

    This is the D-RR papers' binary task construction (MNIST 2 vs 6, CIFAR-10
    airplane vs truck). The original sample order is kept.

    Args:
      data: a dataset with integer labels ``y``.
      positive: the class that becomes label 1.
      negative: the class that becomes label 0.

    Returns:
      The subset, with int64 labels in ``{0, 1}``; other keys are subset alike.

    Raises:
      ValueError: if ``data`` is not a labelled dataset, the two classes are equal or
        not integers, or either class has no samples (the message lists the labels
        present).
    """
    validate_dataset(data, require=("x", "y"))
    y = check_labels(data)
    for name, c in (("positive", positive), ("negative", negative)):
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise ValueError(f"{name} must be an integer class label, got {c!r}")
    if positive == negative:
        raise ValueError(f"positive and negative must differ, both are {positive}")
    present = np.unique(y)
    for name, c in (("positive", positive), ("negative", negative)):
        if c not in present:
            raise ValueError(
                f"{name} class {c} has no samples; labels present are {present.tolist()}"
            )
    keep = (y == positive) | (y == negative)
    out = _select(data, np.flatnonzero(keep))
    out["y"] = (out["y"] == positive).astype(np.int64)
    return out


def binarize_labels(data: Mapping[str, np.ndarray], positive_classes: Iterable[int]) -> Dataset:
    """Maps labels to 1 if they are in ``positive_classes`` and to 0 otherwise.

    Args:
      data: a dataset with integer labels ``y``.
      positive_classes: a non-empty collection of integer labels.

    Returns:
      A dataset with the same samples and int64 labels in ``{0, 1}``.

    Raises:
      ValueError: if ``data`` is not a labelled dataset or ``positive_classes`` is
        empty or holds a non-integer.
    """
    validate_dataset(data, require=("x", "y"))
    y = check_labels(data)
    if isinstance(positive_classes, numbers.Integral):
        raise ValueError(
            f"positive_classes must be a collection of labels, got the single value "
            f"{positive_classes!r}; wrap it in a list"
        )
    classes = list(positive_classes)
    if not classes:
        raise ValueError("positive_classes must hold at least one label, got none")
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, numbers.Integral)]
    if bad:
        raise ValueError(f"positive_classes must be integer labels, got {bad}")
    out = dict(data)
    out["y"] = np.isin(y, classes).astype(np.int64)
    return out


def flatten(data: Mapping[str, np.ndarray]) -> Dataset:
    """Flattens each sample of ``x`` to a vector: ``(N, ...) -> (N, prod(...))``.

    Args:
      data: a dataset.

    Returns:
      A dataset whose ``x`` has shape ``(N, d)``; other keys are unchanged.

    Raises:
      ValueError: if ``data`` is not a dataset with ``x``.
    """
    n = validate_dataset(data, require=("x",))
    out = dict(data)
    out["x"] = data["x"].reshape(n, -1)
    return out


def append_bias(data: Mapping[str, np.ndarray]) -> Dataset:
    """Appends a constant-1 feature, so a linear model gets an intercept: ``d -> d + 1``.

    Args:
      data: a dataset with floating 2-D features ``x``.

    Returns:
      A dataset whose ``x`` has a last column of ones, in the dtype of ``x``.

    Raises:
      ValueError: if ``x`` is not a 2-D floating array.
    """
    n = validate_dataset(data, require=("x",))
    x = _check_features(data, "append_bias")
    out = dict(data)
    out["x"] = np.concatenate([x, np.ones((n, 1), dtype=x.dtype)], axis=1)
    return out


def normalize_rows(data: Mapping[str, np.ndarray]) -> Dataset:
    """Scales every sample of ``x`` to unit Euclidean norm; all-zero rows stay zero.

    Args:
      data: a dataset with floating 2-D features ``x``.

    Returns:
      A dataset whose rows of ``x`` have norm 1 (or 0), in the dtype of ``x``.

    Raises:
      ValueError: if ``x`` is not a 2-D floating array.
    """
    validate_dataset(data, require=("x",))
    x = _check_features(data, "normalize_rows")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out = dict(data)
    # Dividing zero rows by 1 keeps them zero instead of producing NaNs.
    out["x"] = x / np.where(norms > 0, norms, 1).astype(x.dtype)
    return out


def standardize(
    data: Mapping[str, np.ndarray], *, reference: Mapping[str, np.ndarray] | None = None
) -> Dataset:
    """Shifts and scales every feature of ``x`` to zero mean and unit variance.

    Features with zero variance are only centred. Pass the training set as
    ``reference`` to standardise a test set with the training statistics.

    Args:
      data: a dataset with floating 2-D features ``x``.
      reference: the dataset whose per-feature mean and standard deviation are used;
        ``data`` itself by default.

    Returns:
      The standardised dataset, in the dtype of ``x``.

    Raises:
      ValueError: if ``x`` (of ``data`` or ``reference``) is not a 2-D floating
        array, or the two have different feature dimensions.
    """
    validate_dataset(data, require=("x",))
    x = _check_features(data, "standardize")
    if reference is None:
        ref = x
    else:
        validate_dataset(reference, require=("x",))
        ref = _check_features(reference, "standardize (reference)")
        if ref.shape[1] != x.shape[1]:
            raise ValueError(f"reference has {ref.shape[1]} features but data has {x.shape[1]}")
    # Statistics in float64 so float32 inputs with large offsets keep their precision.
    mean = ref.mean(axis=0, dtype=np.float64)
    std = ref.std(axis=0, dtype=np.float64)
    out = dict(data)
    out["x"] = ((x - mean) / np.where(std > 0, std, 1.0)).astype(x.dtype)
    return out


def train_test_split(
    data: Mapping[str, np.ndarray], *, test_fraction: float, seed: int
) -> tuple[Dataset, Dataset]:
    """Randomly splits a dataset into a training and a test set (not stratified).

    Args:
      data: a dataset.
      test_fraction: the fraction of samples, in ``(0, 1)``, that goes to the test
        set; the test size is ``round(N * test_fraction)``.
      seed: seed of the shuffle.

    Returns:
      ``(train, test)``, each in shuffled order, together holding every sample once.

    Raises:
      ValueError: if ``test_fraction`` is not in ``(0, 1)``, ``seed`` is not a
        non-negative integer, or either side of the split would be empty.
    """
    n = validate_dataset(data, require=())
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, numbers.Real)
        or not 0 < test_fraction < 1
    ):
        raise ValueError(
            f"test_fraction must be in the open interval (0, 1), got {test_fraction!r}"
        )
    perm = np.random.default_rng(_check_seed(seed)).permutation(n)
    n_test = round(n * float(test_fraction))
    if not 0 < n_test < n:
        raise ValueError(
            f"test_fraction={test_fraction} of {n} samples gives {n_test} test and "
            f"{n - n_test} training samples; both must be at least 1"
        )
    return _select(data, perm[n_test:]), _select(data, perm[:n_test])
