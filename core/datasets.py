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
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

Dataset = dict[str, np.ndarray]
"""A dict of NumPy arrays sharing their leading (sample) axis."""

_SKLEARN_CLASSIFICATION = ("digits", "breast_cancer", "iris", "wine")
_SKLEARN_REGRESSION = ("diabetes",)
SKLEARN_DATASETS = _SKLEARN_CLASSIFICATION + _SKLEARN_REGRESSION
"""Names accepted by :func:`load_sklearn` (all ship inside scikit-learn)."""


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


# ---------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------


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
