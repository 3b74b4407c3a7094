"""Host-side dataset sources and preprocessing, as plain dicts of NumPy arrays.

A **dataset** is a ``dict`` of NumPy arrays that share their leading axis ``N``:
``{"x": (N, ...) float, "y": (N,) int}`` for classification, with a float ``y`` for
regression. Extra keys (sample ids, weights) are allowed and travel with the samples
through every function here and in :mod:`core.partition`. Everything in this module
runs on the host; putting the data on device, sharded on agents, is done elsewhere.

Sources:

* :func:`load_sklearn` -- the small datasets that ship inside scikit-learn (the
  embedded default: nothing downloads).
* :func:`load_svmlight` -- LIBSVM / svmlight text files.
* :func:`load_tfds` -- TensorFlow Datasets through the random-access
  ``tfds.data_source`` (ArrayRecord); TensorFlow itself is not needed. Datasets must
  already be prepared on disk: this module never downloads.
* :func:`synthetic_linear_regression`, :func:`synthetic_logistic_regression` --
  Gaussian problems with a known generating weight vector.

Preprocessing functions return a new dataset and never modify their input in place.
The D-RR experiment (ALGORITHMS.md §2.1), for instance, is::

    data = load_tfds("mnist", split="train")
    data = binary_subset(data, positive=2, negative=6)
    data = {k: v[:12000] for k, v in data.items()}
    data = normalize_rows(append_bias(flatten(data)))

Every function validates its input and raises ``ValueError`` naming the bad value and
what is valid (``FileNotFoundError`` for files or prepared datasets that are missing).

This module is the public face of three: :mod:`core.dataset_checks` (the
:data:`Dataset` type, :func:`validate_dataset`, :func:`check_labels`),
:mod:`core.dataset_sources` and :mod:`core.dataset_preprocessing`; every name is
importable from here.
"""

from __future__ import annotations

from decentjax.core.dataset_checks import Dataset, check_labels, validate_dataset
from decentjax.core.dataset_preprocessing import (
    append_bias,
    binarize_labels,
    binary_subset,
    flatten,
    normalize_rows,
    standardize,
    train_test_split,
)
from decentjax.core.dataset_sources import (
    SKLEARN_DATASETS,
    load_sklearn,
    load_svmlight,
    load_tfds,
    synthetic_linear_regression,
    synthetic_logistic_regression,
)

__all__ = [
    "SKLEARN_DATASETS",
    "Dataset",
    "append_bias",
    "binarize_labels",
    "binary_subset",
    "check_labels",
    "flatten",
    "load_sklearn",
    "load_svmlight",
    "load_tfds",
    "normalize_rows",
    "standardize",
    "synthetic_linear_regression",
    "synthetic_logistic_regression",
    "train_test_split",
    "validate_dataset",
]
