r"""Image classification datasets through TFDS: MNIST, Fashion-MNIST, EMNIST, CIFAR-10/100.

:func:`load_images` reads a prepared TFDS split through ``tfds.data_source``
(ArrayRecord, random access; TensorFlow is not needed to read) via
:func:`core.dataset_sources.load_tfds`, and returns the library's dataset format,
``{"x": float32 (N, H, W, C), "y": int64 (N,)}``:

* pixels are scaled from uint8 to :math:`[0, 1]`;
* CIFAR-10/100 are normalised per channel, :math:`x_c \leftarrow (x_c - \mu_c) /
  \sigma_c`, with the training set's channel means and standard deviations
  (:data:`IMAGE_DATASETS`; fixed constants, so train and test splits and every agent
  use the same map);
* EMNIST is stored by TFDS as in the original release, transposed (flipped and
  rotated); it is transposed back so digits and letters are upright like MNIST.

Preparing the data needs internet and, for these builders, TensorFlow (TFDS encodes
the images with ``tf.image``): ``pip install -e ".[tfds-build]"`` then
``python -m decentjax.launch.prepare_data --datasets=mnist,cifar10``. Reading never downloads.

Without the data, :func:`stand_in` gives a clearly named synthetic replacement of
the same shape, classes and scale (class-dependent Gaussian images), so a config
still runs end to end; its name says it is not the real data.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from decentjax.core.dataset_checks import Dataset, _check_int, _check_seed
from decentjax.core.dataset_sources import load_tfds


class ImageDataset(NamedTuple):
    """What the library knows about one TFDS image classification dataset.

    Attributes:
        tfds_name: the TFDS name (with config) to read.
        shape: ``(H, W, C)`` of one image.
        num_classes: the number of labels.
        mean: per-channel means to subtract after scaling to [0, 1], or ``None``.
        std: per-channel standard deviations to divide by, or ``None``.
        transpose: whether TFDS stores the images transposed (EMNIST).
    """

    tfds_name: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    transpose: bool = False


_MNIST = ((28, 28, 1),)
IMAGE_DATASETS: dict[str, ImageDataset] = {
    "mnist": ImageDataset("mnist", *_MNIST, 10),
    "fashion_mnist": ImageDataset("fashion_mnist", *_MNIST, 10),
    # TFDS's EMNIST configs; "emnist" is its default, byclass. Letters has 37 labels in
    # TFDS (1-26 used).
    "emnist": ImageDataset("emnist/byclass", *_MNIST, 62, transpose=True),
    "emnist/byclass": ImageDataset("emnist/byclass", *_MNIST, 62, transpose=True),
    "emnist/bymerge": ImageDataset("emnist/bymerge", *_MNIST, 47, transpose=True),
    "emnist/balanced": ImageDataset("emnist/balanced", *_MNIST, 47, transpose=True),
    "emnist/letters": ImageDataset("emnist/letters", *_MNIST, 37, transpose=True),
    "emnist/digits": ImageDataset("emnist/digits", *_MNIST, 10, transpose=True),
    "emnist/mnist": ImageDataset("emnist/mnist", *_MNIST, 10, transpose=True),
    # Channel statistics of the 50,000 training images, scaled to [0, 1].
    "cifar10": ImageDataset(
        "cifar10", (32, 32, 3), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": ImageDataset(
        "cifar100", (32, 32, 3), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
}
"""The datasets :func:`load_images` and :func:`stand_in` accept, by name."""


def _spec(name: str) -> ImageDataset:
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; valid names are {list(IMAGE_DATASETS)}")
    return IMAGE_DATASETS[name]


def _standardize(spec: ImageDataset, x: np.ndarray) -> np.ndarray:
    if spec.mean is None:
        return x
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    return ((x - mean) / std).astype(np.float32)


def load_images(
    name: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    max_examples: int | None = None,
) -> Dataset:
    """Reads a prepared TFDS image dataset as float32 images and int64 labels.

    Args:
        name: a key of :data:`IMAGE_DATASETS` (``"mnist"``, ``"fashion_mnist"``,
            ``"emnist"`` or ``"emnist/<config>"``, ``"cifar10"``, ``"cifar100"``).
        split: a TFDS split, slicing included (``"train"``, ``"test[:1000]"``).
        data_dir: where the prepared data lives; ``None`` is TFDS's default
            (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        max_examples: read only the first ``max_examples`` records.

    Returns:
        ``{"x": float32 (N, H, W, C), "y": int64 (N,)}``: pixels in [0, 1], CIFAR
        normalised per channel, EMNIST upright.

    Raises:
        ValueError: if ``name`` is unknown, or the records do not have the expected
            image shape or labels in ``[0, num_classes)``.
        FileNotFoundError: if the split is not prepared; the message says how to
            prepare it (:mod:`launch.prepare_data`).
    """
    spec = _spec(name)
    data = load_tfds(spec.tfds_name, split=split, data_dir=data_dir, max_examples=max_examples)
    x, y = data["x"], data["y"]
    if spec.transpose:
        x = np.ascontiguousarray(np.swapaxes(x, 1, 2))
    if x.shape[1:] != spec.shape:
        raise ValueError(
            f"TFDS {spec.tfds_name!r} images have shape {x.shape[1:]}, expected {spec.shape}"
        )
    if y.min() < 0 or y.max() >= spec.num_classes:
        raise ValueError(
            f"TFDS {spec.tfds_name!r} labels span [{y.min()}, {y.max()}], expected "
            f"[0, {spec.num_classes})"
        )
    return {"x": _standardize(spec, x), "y": y}


def stand_in(name: str, num_samples: int, *, seed: int) -> Dataset:
    r"""A synthetic stand-in for an image dataset that is not prepared here.

    Each class :math:`c` has a fixed random template :math:`t_c \in [0,1]^{H \times W
    \times C}`; a sample is :math:`\operatorname{clip}(t_c + 0.3 \varepsilon, 0, 1)`
    with :math:`\varepsilon \sim N(0, I)`, then normalised as the real data would be.
    Labels are balanced (``i mod num_classes`` in a shuffled order). It has the real
    dataset's shape, classes and input scale, so the same model and config run, but
    none of its content: results on it say nothing about the real dataset.

    Args:
        name: a key of :data:`IMAGE_DATASETS`.
        num_samples: ``N >= 1``.
        seed: seed of the NumPy generator.

    Returns:
        ``{"x": float32 (N, H, W, C), "y": int64 (N,)}``.

    Raises:
        ValueError: if ``name`` is unknown, ``num_samples`` is not a positive integer
            or ``seed`` is not a non-negative integer.
    """
    spec = _spec(name)
    num_samples = _check_int("num_samples", num_samples, minimum=1)
    rng = np.random.default_rng(_check_seed(seed))
    templates = rng.uniform(size=(spec.num_classes, *spec.shape))
    y = rng.permutation(np.arange(num_samples) % spec.num_classes).astype(np.int64)
    noise = rng.standard_normal((num_samples, *spec.shape))
    x = np.clip(templates[y] + 0.3 * noise, 0.0, 1.0).astype(np.float32)
    return {"x": _standardize(spec, x), "y": y}
