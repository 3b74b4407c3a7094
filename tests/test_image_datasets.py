"""TFDS image datasets (mocked with tfds.testing.mock_data), their stand-in and preparation."""

import importlib.util

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from decentjax.core import datasets, image_datasets
from decentjax.core.image_datasets import IMAGE_DATASETS, load_images, stand_in
from decentjax.launch import experiment, prepare_data

# tfds.testing.mock_data needs no TensorFlow: it fakes tfds.data_source's records
# (random uint8 images and labels from each dataset's feature spec).


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "emnist/balanced", "cifar100"])
def test_load_images_format(name):
    spec = IMAGE_DATASETS[name]
    with tfds.testing.mock_data(num_examples=6):
        data = load_images(name, split="test", max_examples=4)
    assert data["x"].shape == (4, *spec.shape) and data["x"].dtype == np.float32
    assert data["y"].shape == (4,) and data["y"].dtype == np.int64
    assert 0 <= data["y"].min() and data["y"].max() < spec.num_classes
    if spec.mean is None:
        assert 0.0 <= data["x"].min() and data["x"].max() <= 1.0 and data["x"].max() > 0.5


def test_cifar10_is_normalized_per_channel_and_emnist_is_upright():
    with tfds.testing.mock_data(num_examples=8):
        raw = datasets.load_tfds("cifar10")["x"]
        x = load_images("cifar10")["x"]
        raw_emnist = datasets.load_tfds("emnist/byclass")["x"]
        emnist = load_images("emnist")["x"]
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)
    std = np.array([0.2470, 0.2435, 0.2616], np.float32)
    np.testing.assert_array_equal(x, (raw - mean) / std)  # the same float32 ops
    np.testing.assert_allclose(x * std + mean, raw, atol=1e-6)
    assert not np.allclose(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(emnist, np.swapaxes(raw_emnist, 1, 2))


def test_bad_names_and_missing_data(tmp_path):
    with pytest.raises(ValueError, match="unknown image dataset 'cifar11'.*'cifar10'"):
        load_images("cifar11")
    with pytest.raises(FileNotFoundError, match="not prepared for random access"):
        load_images("cifar10", data_dir=tmp_path)
    with pytest.raises(ValueError, match="num_samples"):
        stand_in("mnist", 0, seed=0)


def test_stand_in_has_the_shape_classes_and_scale_of_the_real_data():
    data = stand_in("cifar10", 200, seed=3)
    again = stand_in("cifar10", 200, seed=3)
    np.testing.assert_array_equal(data["x"], again["x"])
    assert data["x"].shape == (200, 32, 32, 3) and data["x"].dtype == np.float32
    np.testing.assert_array_equal(np.bincount(data["y"]), np.full(10, 20))
    # Normalised like CIFAR: pixels in [0, 1] map into [-mean/std, (1-mean)/std].
    assert data["x"].min() >= -0.4914 / 0.2470 - 1e-5 and data["x"].max() <= 0.5535 / 0.2470


def _image_config(source):
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(
        {
            "source": source,
            "max_examples": 40,
            "fallback": {"source": "stand_in:cifar10", "num_samples": 50},
        }
    )
    return config


def test_experiment_reads_images_or_falls_back_to_a_named_stand_in(tmp_path, monkeypatch):
    config = _image_config("images:cifar10")
    with tfds.testing.mock_data(num_examples=40):
        data, description = experiment.load_data(config)
    assert data["x"].shape == (40, 32, 32, 3) and "fallback" not in description
    assert description.startswith("images:cifar10 (40 samples of 32x32x3)")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds_here"))
    data, description = experiment.load_data(config)
    assert data["x"].shape == (50, 32, 32, 3)
    assert description == (
        "stand_in:cifar10 (synthetic stand-in, not cifar10) (50 samples of 32x32x3) "
        "[fallback: images:cifar10 is not prepared here]"
    )


class _FakeBuilder:
    def __init__(self, calls, name, data_dir, file_format):
        self.data_dir = f"{data_dir}/{name}"
        self.name = name
        calls.append(("builder", name, data_dir, file_format))
        self._calls = calls

    def download_and_prepare(self):
        self._calls.append(("prepare", self.name))


def test_prepare_data_builds_array_record(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(
        tfds,
        "builder",
        lambda name, data_dir, file_format: _FakeBuilder(calls, name, data_dir, file_format),
    )
    real_find_spec = importlib.util.find_spec
    has_tf = lambda name, *a: object() if name == "tensorflow" else real_find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", has_tf)
    out = prepare_data.prepare(["cifar10", "emnist", "emnist/byclass"], data_dir=str(tmp_path))
    assert out == ["cifar10", "emnist/byclass"]  # "emnist" is byclass: built once
    assert calls[0] == ("builder", "cifar10", str(tmp_path), "array_record")
    assert calls[1] == ("prepare", "cifar10") and len(calls) == 4
    with pytest.raises(ValueError, match="non-empty list of.*'cifar10'.*got \\['imagenet'\\]"):
        prepare_data.prepare(["imagenet"])
    no_tf = lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", no_tf)
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[tfds-build\]\""):
        prepare_data.prepare(["mnist"])
    assert image_datasets.IMAGE_DATASETS["emnist"].tfds_name == "emnist/byclass"
