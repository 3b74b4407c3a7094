"""Downloads and prepares TFDS image datasets for random access (run once, with internet).

``python -m decentjax.launch.prepare_data --datasets=mnist,cifar10 [--data_dir=DIR]``

Names are keys of :data:`core.image_datasets.IMAGE_DATASETS` (``mnist``,
``fashion_mnist``, ``emnist`` / ``emnist/<config>``, ``cifar10``, ``cifar100``). Each is
built by its TFDS builder's ``download_and_prepare`` in ArrayRecord format, the
format ``tfds.data_source`` reads without TensorFlow. Building needs TensorFlow (TFDS
encodes the images with ``tf.image``), which is an optional extra:
``pip install -e ".[tfds-build]"``. Runs afterwards only read the prepared files
(:func:`core.image_datasets.load_images`), from ``DIR`` or TFDS's default
(``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

from absl import app, flags, logging

from decentjax.core.image_datasets import IMAGE_DATASETS

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", None, f"Datasets to prepare, among {list(IMAGE_DATASETS)}.")
flags.DEFINE_string("data_dir", None, "Where to write them (default: TFDS's data_dir).")


def prepare(names: Sequence[str], data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Downloads and prepares the named datasets in ArrayRecord format.

    Args:
        names: keys of :data:`core.image_datasets.IMAGE_DATASETS`.
        data_dir: where to write; ``None`` is TFDS's default.

    Returns:
        The TFDS names prepared, in order.

    Raises:
        ValueError: if ``names`` is empty or holds an unknown name (before anything
            downloads).
        ImportError: if TensorFlow, which TFDS needs to build these datasets, is not
            installed; the message says how to install it.
    """
    names = list(names)
    unknown = [n for n in names if n not in IMAGE_DATASETS]
    if not names or unknown:
        raise ValueError(
            f"datasets must be a non-empty list of {list(IMAGE_DATASETS)}, got {names}"
        )
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError(
            "building TFDS image datasets needs TensorFlow (TFDS encodes the images with "
            'tf.image); install the optional extra: pip install -e ".[tfds-build]". '
            "Reading the prepared data later does not need it."
        )
    import tensorflow_datasets as tfds

    prepared = []
    for name in names:
        tfds_name = IMAGE_DATASETS[name].tfds_name
        if tfds_name in prepared:
            continue
        builder = tfds.builder(tfds_name, data_dir=data_dir, file_format="array_record")
        logging.info("preparing %s in %s", tfds_name, builder.data_dir)
        builder.download_and_prepare()
        prepared.append(tfds_name)
    return prepared


def main(argv: Sequence[str]) -> None:
    del argv
    for name in prepare(FLAGS.datasets or [], FLAGS.data_dir):
        print(f"prepared {name}")


if __name__ == "__main__":
    app.run(main)
