"""Dataset sources: scikit-learn, svmlight / LIBSVM files, TFDS and synthetic problems.

Each returns a :data:`~core.dataset_checks.Dataset` on the host and never downloads
(see :mod:`core.datasets`, the public face, which re-exports everything here).
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from decentjax.core.dataset_checks import (
    Dataset,
    _check_int,
    _check_seed,
)

_SKLEARN_CLASSIFICATION = ("digits", "breast_cancer", "iris", "wine")
_SKLEARN_REGRESSION = ("diabetes",)
SKLEARN_DATASETS = _SKLEARN_CLASSIFICATION + _SKLEARN_REGRESSION
"""Names accepted by :func:`load_sklearn` (all ship inside scikit-learn)."""


# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------


def load_sklearn(name: str) -> Dataset:
    """Loads one of the small datasets bundled with scikit-learn (no download).

    Args:
      name: ``"digits"`` (1797 x 64, 10 classes), ``"breast_cancer"`` (569 x 30,
        2 classes), ``"iris"`` (150 x 4, 3 classes), ``"wine"`` (178 x 13, 3 classes)
        or ``"diabetes"`` (442 x 10, regression).

    Returns:
      ``{"x": float32 (N, d), "y": int64 (N,)}``; ``y`` is float32 for
      ``"diabetes"``. Features are returned unscaled.

    Raises:
      ValueError: if ``name`` is not one of :data:`SKLEARN_DATASETS`.
    """
    from sklearn import datasets as skd  # sklearn is heavy; only pay for it when used.

    loaders = {
        "digits": skd.load_digits,
        "breast_cancer": skd.load_breast_cancer,
        "iris": skd.load_iris,
        "wine": skd.load_wine,
        "diabetes": skd.load_diabetes,
    }
    if name not in loaders:
        raise ValueError(
            f"unknown scikit-learn dataset {name!r}; valid names are {list(SKLEARN_DATASETS)}"
        )
    x, y = loaders[name](return_X_y=True)
    y_dtype = np.float32 if name in _SKLEARN_REGRESSION else np.int64
    return {"x": np.asarray(x, dtype=np.float32), "y": np.asarray(y, dtype=y_dtype)}


def load_svmlight(path: str | os.PathLike[str], *, n_features: int | None = None) -> Dataset:
    """Loads a LIBSVM / svmlight text file as a dense dataset.

    Labels are mapped so that binary LIBSVM files fit the logistic losses: if every
    label is -1 or +1 they become 0 and 1; otherwise integral labels are kept as
    int64 and non-integral ones (regression) as float32.

    Args:
      path: the file to read.
      n_features: the feature dimension ``d``; by default the largest feature index
        in the file. Pass it to load a train and a test file with the same ``d``.

    Returns:
      ``{"x": float32 (N, d), "y": int64 (N,)}`` (``y`` float32 for regression).

    Raises:
      FileNotFoundError: if ``path`` is not an existing file.
      ValueError: if ``n_features`` is not a positive integer, or the file cannot be
        parsed as svmlight (the message includes the path and the parser's error).
    """
    from sklearn.datasets import load_svmlight_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"svmlight file {path!r} does not exist or is not a file")
    if n_features is not None:
        n_features = _check_int("n_features", n_features, minimum=1)
    try:
        x, y = load_svmlight_file(path, n_features=n_features)
    except ValueError as e:
        raise ValueError(f"could not read {path!r} as an svmlight/LIBSVM file: {e}") from e
    x = np.asarray(x.toarray(), dtype=np.float32)
    y = np.asarray(y)
    if np.all(np.isin(y, (-1.0, 1.0))):
        y = ((y + 1) // 2).astype(np.int64)
    elif np.all(y == np.round(y)):
        y = y.astype(np.int64)
    else:
        y = y.astype(np.float32)
    return {"x": x, "y": y}


def load_tfds(
    name: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    max_examples: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
) -> Dataset:
    """Reads an already prepared TensorFlow Datasets split through ``tfds.data_source``.

    The random-access ArrayRecord source is used, so neither ``tf.data`` nor
    TensorFlow is needed. Nothing is downloaded: the dataset must have been prepared
    beforehand in ArrayRecord format (e.g. ``tfds build mnist
    --file_format=array_record`` or ``tfds.data_source("mnist")`` on a machine with
    internet access), into ``data_dir`` or TFDS's default directory.

    Args:
      name: the TFDS name, optionally with config/version (``"mnist"``,
        ``"cifar10:3.0.2"``).
      split: a TFDS split, slicing included (``"train"``, ``"test[:1000]"``).
      data_dir: where the prepared dataset lives; ``None`` uses TFDS's default
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      max_examples: read only the first ``max_examples`` records (all of them if the
        split is shorter); ``None`` reads the whole split.
      image_key: the record feature that becomes ``x``.
      label_key: the record feature that becomes ``y``.

    Returns:
      ``{"x": float32 (N, ...), "y": int64 (N,)}``; uint8 images are scaled to
      ``[0, 1]``, other numeric features are only cast to float32.

    Raises:
      FileNotFoundError: if the dataset is not prepared (for random access) where
        TFDS looks for it; the message says how to prepare it.
      ValueError: if ``name`` is not a TFDS dataset, ``max_examples`` is not a
        positive integer, a key is not a feature of the records, or the records'
        features do not stack into one numeric array.
    """
    if max_examples is not None:
        max_examples = _check_int("max_examples", max_examples, minimum=1)
    # Imported here: tensorflow_datasets takes about a second to import.
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.DatasetNotFoundError as e:
        # TFDS's own message lists every registered dataset; keep ours short.
        raise ValueError(
            f"{name!r} is not a TensorFlow Datasets name (see `tfds.list_builders()`)"
        ) from e
    except (NotImplementedError, FileNotFoundError, AssertionError, KeyError) as e:
        # With download=False an unprepared dataset surfaces as one of these, e.g.
        # NotImplementedError("Random access data source for file format TFRECORD ...")
        # when no prepared files exist, which would mislead users into a format issue,
        # or KeyError("... `splits` is empty ...") when only the metadata is known.
        where = (
            f"data_dir={os.fspath(data_dir)!r}"
            if data_dir is not None
            else "TFDS's default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
        )
        raise FileNotFoundError(
            f"TFDS dataset {name!r} (split={split!r}) is not prepared for random access "
            f"in {where}. load_tfds never downloads: it must be downloaded/prepared with "
            f"TFDS beforehand, in ArrayRecord format, e.g. `tfds build {name} "
            "--file_format=array_record` (add --data_dir=...) on a machine with "
            f"internet access. TFDS said: {type(e).__name__}: {e}"
        ) from e

    n = len(source) if max_examples is None else min(max_examples, len(source))
    images, labels = [], []
    # Record-by-record reads: one record at a time keeps memory flat, and the batched
    # __getitems__ is not implemented by the tfds.testing mock used in tests.
    for i in range(n):
        record = source[i]
        for key in (image_key, label_key):
            if key not in record:
                raise ValueError(
                    f"record {i} of TFDS {name!r} has no feature {key!r}; "
                    f"its features are {sorted(record)}"
                )
        images.append(np.asarray(record[image_key]))
        labels.append(np.asarray(record[label_key]))
    if n == 0:
        raise ValueError(f"TFDS {name!r} split {split!r} has no records")
    try:
        x = np.stack(images)
    except ValueError as e:
        raise ValueError(
            f"the {image_key!r} features of TFDS {name!r} have different shapes and cannot "
            "be stacked; resize them first"
        ) from e
    y = np.stack(labels)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"feature {image_key!r} must be numeric, got dtype {x.dtype}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"feature {label_key!r} must be a scalar integer label, got shape "
            f"{y.shape[1:]} and dtype {y.dtype}"
        )
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    else:
        x = x.astype(np.float32)
    return {"x": x, "y": y.astype(np.int64)}


def _gaussian_problem(
    num_samples: int, dim: int, seed: int, dtype: Any
) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    num_samples = _check_int("num_samples", num_samples, minimum=1)
    dim = _check_int("dim", dim, minimum=1)
    rng = np.random.default_rng(_check_seed(seed))
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    # ||w|| ~ 1 and x ~ N(0, I) make the signal x @ w ~ N(0, 1) whatever the dimension,
    # so the noise level and the logistic problem's difficulty do not drift with dim.
    w = rng.standard_normal(dim) / np.sqrt(dim)
    x = rng.standard_normal((num_samples, dim))
    return rng, x, w


def synthetic_linear_regression(
    num_samples: int,
    dim: int,
    *,
    noise: float = 0.1,
    seed: int,
    dtype: Any = np.float32,
) -> tuple[Dataset, np.ndarray]:
    """Draws a Gaussian least-squares problem ``y = x @ w + noise * eps``.

    Features ``x ~ N(0, I_d)``, ``w ~ N(0, I_d / d)`` and ``eps ~ N(0, 1)``. The
    least-squares minimiser is ``w`` only in the noiseless limit; compute it from the
    data (``np.linalg.lstsq``) when an exact optimum is needed.

    Args:
      num_samples: ``N >= 1``.
      dim: ``d >= 1``.
      noise: the standard deviation of the additive noise, ``>= 0``.
      seed: seed of the NumPy generator.
      dtype: floating dtype of ``x``, ``y`` and ``w`` (float64 for tight optimality
        gaps).

    Returns:
      ``({"x": (N, d), "y": (N,)}, w)`` with ``w`` of shape ``(d,)``.

    Raises:
      ValueError: if a size is not a positive integer, ``noise`` is negative or not
        finite, ``seed`` is not a non-negative integer, or ``dtype`` is not floating.
    """
    if not isinstance(noise, numbers.Real) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    rng, x, w = _gaussian_problem(num_samples, dim, seed, dtype)
    y = x @ w + noise * rng.standard_normal(x.shape[0])
    return {"x": x.astype(dtype), "y": y.astype(dtype)}, w.astype(dtype)


def synthetic_logistic_regression(
    num_samples: int, dim: int, *, seed: int, dtype: Any = np.float32
) -> tuple[Dataset, np.ndarray]:
    """Draws a Gaussian binary logistic problem with ``P(y=1 | x) = sigmoid(x @ w)``.

    Features ``x ~ N(0, I_d)`` and ``w ~ N(0, I_d / d)``, so the logits are roughly
    standard normal and the classes overlap (the unregularised optimum is finite).

    Args:
      num_samples: ``N >= 1``.
      dim: ``d >= 1``.
      seed: seed of the NumPy generator.
      dtype: floating dtype of ``x`` and ``w``.

    Returns:
      ``({"x": (N, d), "y": int64 (N,) in {0, 1}}, w)`` with ``w`` of shape ``(d,)``.

    Raises:
      ValueError: if a size is not a positive integer, ``seed`` is not a non-negative
        integer, or ``dtype`` is not floating.
    """
    rng, x, w = _gaussian_problem(num_samples, dim, seed, dtype)
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    y = (rng.uniform(size=x.shape[0]) < p).astype(np.int64)
    return {"x": x.astype(dtype), "y": y}, w.astype(dtype)
