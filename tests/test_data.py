"""Tests for the host-side data sources, preprocessing and partitioners."""

import numpy as np
import pytest

from decentjax.core import datasets, partition

# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n", "d", "classes"),
    [
        ("digits", 1797, 64, 10),
        ("breast_cancer", 569, 30, 2),
        ("iris", 150, 4, 3),
        ("wine", 178, 13, 3),
    ],
)
def test_load_sklearn_classification(name, n, d, classes):
    data = datasets.load_sklearn(name)
    assert data["x"].shape == (n, d) and data["x"].dtype == np.float32
    assert data["y"].shape == (n,) and data["y"].dtype == np.int64
    assert set(np.unique(data["y"]).tolist()) == set(range(classes))


def test_load_sklearn_regression_and_unknown():
    data = datasets.load_sklearn("diabetes")
    assert data["x"].shape == (442, 10) and data["y"].dtype == np.float32
    with pytest.raises(ValueError, match=r"unknown .*'mnist'.*digits"):
        datasets.load_sklearn("mnist")


def test_load_svmlight_roundtrip(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 5)).astype(np.float32)
    x[x < 0.3] = 0.0  # sparse, as svmlight files usually are
    x[:, -1] = 1.0  # so the feature count is inferred as 5
    y = np.where(rng.uniform(size=12) < 0.5, -1, 1)
    path = tmp_path / "small.svm"
    dump_svmlight_file(x, y, str(path))
    data = datasets.load_svmlight(path)
    np.testing.assert_allclose(data["x"], x, rtol=1e-6)
    assert data["x"].dtype == np.float32 and data["y"].dtype == np.int64
    np.testing.assert_array_equal(data["y"], (y + 1) // 2)
    # Multiclass labels are kept; n_features pads the dimension.
    path.write_text("3 1:0.5\n1 2:2.0\n")
    data = datasets.load_svmlight(path, n_features=4)
    assert data["x"].shape == (2, 4)
    np.testing.assert_array_equal(data["y"], [3, 1])


def test_load_svmlight_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.svm"):
        datasets.load_svmlight(tmp_path / "missing.svm")
    bad = tmp_path / "bad.svm"
    bad.write_text("1 this is not svmlight\n")
    with pytest.raises(ValueError, match="bad.svm"):
        datasets.load_svmlight(bad)
    with pytest.raises(ValueError, match="n_features"):
        datasets.load_svmlight(bad, n_features=0)


def test_load_tfds_mock_mnist():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20):
        data = datasets.load_tfds("mnist")
        few = datasets.load_tfds("mnist", split="test", max_examples=7)
        with pytest.raises(ValueError, match="no feature 'pixels'.*image"):
            datasets.load_tfds("mnist", image_key="pixels")
    assert data["x"].shape == (20, 28, 28, 1) and data["x"].dtype == np.float32
    assert data["y"].shape == (20,) and data["y"].dtype == np.int64
    assert 0.0 <= data["x"].min() and data["x"].max() <= 1.0
    assert data["x"].max() > 0.5  # scaled from uint8, not merely cast
    assert data["y"].min() >= 0 and data["y"].max() < 10
    assert few["x"].shape == (7, 28, 28, 1)
    flat = datasets.normalize_rows(datasets.append_bias(datasets.flatten(data)))
    assert flat["x"].shape == (20, 785)


def test_load_tfds_not_prepared(tmp_path):
    with pytest.raises(FileNotFoundError, match="must be downloaded/prepared with TFDS"):
        datasets.load_tfds("mnist", data_dir=tmp_path)
    with pytest.raises(ValueError, match="not a TensorFlow Datasets name"):
        datasets.load_tfds("no_such_dataset_xyz", data_dir=tmp_path)
    with pytest.raises(ValueError, match="max_examples"):
        datasets.load_tfds("mnist", data_dir=tmp_path, max_examples=0)


def test_synthetic_problems():
    data, w = datasets.synthetic_linear_regression(500, 4, noise=0.0, seed=1)
    assert data["x"].shape == (500, 4) and data["y"].shape == (500,) and w.shape == (4,)
    np.testing.assert_allclose(data["x"] @ w, data["y"], rtol=1e-5, atol=1e-5)
    again, _ = datasets.synthetic_linear_regression(500, 4, noise=0.0, seed=1)
    np.testing.assert_array_equal(again["x"], data["x"])
    data64, _ = datasets.synthetic_linear_regression(10, 3, seed=0, dtype=np.float64)
    assert data64["x"].dtype == np.float64

    data, w = datasets.synthetic_logistic_regression(2000, 5, seed=2)
    assert data["y"].dtype == np.int64 and set(np.unique(data["y"]).tolist()) == {0, 1}
    # Labels agree with the sign of the generating logit far more often than chance.
    agree = np.mean((data["x"] @ w > 0) == (data["y"] == 1))
    assert agree > 0.65
    with pytest.raises(ValueError, match="noise"):
        datasets.synthetic_linear_regression(10, 3, noise=-1.0, seed=0)
    with pytest.raises(ValueError, match="dim"):
        datasets.synthetic_logistic_regression(10, 0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        datasets.synthetic_logistic_regression(10, 3, seed=-1)


# ---------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------


def _toy(n=40, d=3, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((n, d)).astype(np.float32),
        "y": rng.integers(classes, size=n).astype(np.int64),
        "id": np.arange(n),
    }


def test_binary_subset():
    data = _toy()
    sub = datasets.binary_subset(data, positive=2, negative=0)
    keep = (data["y"] == 2) | (data["y"] == 0)
    np.testing.assert_array_equal(sub["id"], np.flatnonzero(keep))
    np.testing.assert_array_equal(sub["y"], (data["y"][keep] == 2).astype(np.int64))
    np.testing.assert_array_equal(sub["x"], data["x"][keep])
    with pytest.raises(ValueError, match="positive class 7 has no samples"):
        datasets.binary_subset(data, positive=7, negative=0)
    with pytest.raises(ValueError, match="must differ"):
        datasets.binary_subset(data, positive=1, negative=1)


def test_binarize_flatten_bias_normalize_standardize():
    data = _toy()
    np.testing.assert_array_equal(
        datasets.binarize_labels(data, [1, 3])["y"], np.isin(data["y"], [1, 3])
    )
    with pytest.raises(ValueError, match="at least one"):
        datasets.binarize_labels(data, [])

    images = {"x": np.ones((5, 2, 3), np.float32), "y": np.zeros(5, np.int64)}
    assert datasets.flatten(images)["x"].shape == (5, 6)
    with pytest.raises(ValueError, match="flatten"):
        datasets.append_bias(images)

    biased = datasets.append_bias(data)
    assert biased["x"].shape == (40, 4) and biased["x"].dtype == np.float32
    np.testing.assert_array_equal(biased["x"][:, -1], 1.0)
    np.testing.assert_array_equal(biased["x"][:, :-1], data["x"])

    data["x"][3] = 0.0
    unit = datasets.normalize_rows(data)
    norms = np.linalg.norm(unit["x"], axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(unit["x"][3], 0.0)
    assert np.all(np.isfinite(unit["x"]))

    data["x"][:, 1] = 5.0  # a constant feature is only centred
    std = datasets.standardize(data)["x"]
    np.testing.assert_allclose(std.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(std.std(0), [1.0, 0.0, 1.0], atol=1e-5)


def test_train_test_split():
    data = _toy(n=50)
    train, test = datasets.train_test_split(data, test_fraction=0.2, seed=0)
    assert len(test["id"]) == 10 and len(train["id"]) == 40
    np.testing.assert_array_equal(np.sort(np.concatenate([train["id"], test["id"]])), data["id"])
    np.testing.assert_array_equal(train["x"], data["x"][train["id"]])
    with pytest.raises(ValueError, match=r"test_fraction.*\(0, 1\)"):
        datasets.train_test_split(data, test_fraction=1.0, seed=0)


def test_dataset_validation():
    with pytest.raises(ValueError, match="leading"):
        datasets.flatten({"x": np.zeros((3, 2)), "y": np.zeros(4)})
    with pytest.raises(ValueError, match="missing key"):
        datasets.binary_subset({"x": np.zeros((3, 2))}, 1, 0)
    with pytest.raises(ValueError, match="integer label"):
        datasets.binary_subset({"x": np.zeros((3, 2)), "y": np.zeros(3)}, 1, 0)


# ---------------------------------------------------------------------------------------
# Partitions
# ---------------------------------------------------------------------------------------


def _check_partition(parts, data, n_agents):
    """Every key gets shape (n_agents, m, ...) and no sample is used twice."""
    m = len(data["id"]) // n_agents
    for key, value in data.items():
        assert parts[key].shape == (n_agents, m, *value.shape[1:]), key
    ids = parts["id"].ravel()
    assert len(np.unique(ids)) == ids.size
    # Each row carries its own sample: x and y moved together with the id.
    np.testing.assert_array_equal(parts["x"], data["x"][parts["id"]])
    np.testing.assert_array_equal(parts["y"], data["y"][parts["id"]])
    return m


def test_partition_iid():
    data = _toy(n=103)
    parts = partition.partition_iid(data, 10, seed=3)
    assert _check_partition(parts, data, 10) == 10
    # The multiset of kept samples equals the data minus the 3 dropped ones.
    kept = parts["id"].ravel()
    dropped = np.setdiff1d(data["id"], kept)
    assert dropped.size == 3
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, dropped])), data["id"])
    again = partition.partition_iid(data, 10, seed=3)
    np.testing.assert_array_equal(again["id"], parts["id"])


def test_partition_label_sorted_two_classes():
    rng = np.random.default_rng(0)
    data = _toy(n=162, classes=2)
    data["y"] = rng.permutation(np.repeat([0, 1], [81, 81])).astype(np.int64)
    parts = partition.partition_label_sorted(data, 16)
    assert _check_partition(parts, data, 16) == 10
    assert np.all(np.diff(parts["y"].ravel()) >= 0)  # sorted within and across agents
    single = np.sum(np.all(parts["y"] == parts["y"][:, :1], axis=1))
    assert single >= 15  # only the agent straddling the class boundary mixes
    # Stable sort: samples of one class keep their original order.
    zeros = parts["id"].ravel()[parts["y"].ravel() == 0]
    np.testing.assert_array_equal(zeros, np.flatnonzero(data["y"] == 0))


def test_partition_dirichlet_skew():
    data = _toy(n=1000, classes=10, seed=1)
    # Balanced classes (like MNIST): with imbalanced ones a Dirichlet(alpha * 1_K) mix
    # asks every agent for equal class counts, the small pools run out and the last
    # agents absorb the difference (covered by test_partition_dirichlet_exhausts_pools).
    data["y"] = np.random.default_rng(1).permutation(np.arange(1000) % 10).astype(np.int64)
    sharp = partition.partition_dirichlet(data, 20, 0.01, seed=0)
    assert _check_partition(sharp, data, 20) == 50
    counts = partition.label_distribution(sharp, 10)
    assert counts.shape == (20, 10) and np.all(counts.sum(1) == 50)
    dominant = counts.max(1) / 50
    assert np.mean(dominant >= 0.9) >= 0.5  # most agents hold essentially one class

    flat = partition.partition_dirichlet(data, 20, 1000.0, seed=0)
    _check_partition(flat, data, 20)
    counts = partition.label_distribution(flat, 10)
    # Near-uniform: every agent holds about 5 samples of each of the 10 classes.
    assert np.abs(counts - 5).max() <= 1


def test_partition_dirichlet_exhausts_pools():
    # Heavily imbalanced classes and N = n_agents * m: the pools must run out and the
    # shortfall be filled from other classes, still using every sample exactly once.
    data = _toy(n=60, classes=3)
    data["y"] = np.repeat([0, 1, 2], [50, 7, 3]).astype(np.int64)
    for alpha in (0.01, 1.0, 100.0):
        parts = partition.partition_dirichlet(data, 6, alpha, seed=4)
        _check_partition(parts, data, 6)
        np.testing.assert_array_equal(np.sort(parts["id"].ravel()), data["id"])


def test_label_distribution():
    parts = {"y": np.array([[0, 0, 2], [1, 2, 2]])}
    np.testing.assert_array_equal(partition.label_distribution(parts, 3), [[2, 0, 1], [0, 1, 2]])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        partition.label_distribution(parts, 2)


@pytest.mark.parametrize(
    "split",
    [
        lambda d, n: partition.partition_iid(d, n, seed=0),
        lambda d, n: partition.partition_label_sorted(d, n),
        lambda d, n: partition.partition_dirichlet(d, n, 1.0, seed=0),
    ],
    ids=["iid", "label_sorted", "dirichlet"],
)
def test_partition_errors(split):
    data = _toy(n=10)
    msg = "dataset has 10 samples but n_agents=16; every agent needs at least one sample"
    with pytest.raises(ValueError, match=msg):
        split(data, 16)
    with pytest.raises(ValueError, match="n_agents must be an integer >= 1, got 0"):
        split(data, 0)
    with pytest.raises(ValueError, match=r"leading .* lengths \{'x': 10, 'y': 9"):
        split({"x": data["x"], "y": data["y"][:9]}, 2)


def test_partition_dirichlet_bad_alpha():
    data = _toy(n=10)
    for alpha in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            partition.partition_dirichlet(data, 2, alpha, seed=0)


def test_pathological_partition_gives_each_agent_few_classes():
    from decentjax.core import partition

    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(1000, 3)), "y": np.repeat(np.arange(10), 100)}
    parts = partition.partition_pathological(data, 20, classes_per_agent=2, seed=0)
    assert parts["x"].shape == (20, 50, 3)
    classes = [len(np.unique(labels)) for labels in parts["y"]]
    assert max(classes) <= 2
    flat = parts["x"].reshape(-1, 3)
    assert len(np.unique(flat, axis=0)) == 1000  # Every sample used exactly once.
    with pytest.raises(ValueError, match="fewer than n_agents"):
        partition.partition_pathological(data, 600, classes_per_agent=2, seed=0)
