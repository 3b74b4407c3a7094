"""Data for a run from a config: the pooled dataset and its split over the agents.

Split from :mod:`launch.experiment` (which re-exports both functions), so that module
keeps to config names -> methods, graphs and objectives.
"""

from __future__ import annotations

import ml_collections

from decentjax.core import datasets, image_datasets, partition
from decentjax.launch import registry


def load_data(config: ml_collections.ConfigDict) -> tuple[datasets.Dataset, str]:
    """The pooled dataset named by ``config.data`` and a description of it.

    ``config.data.source`` is ``"sklearn:<name>"``, ``"svmlight:<path>"``,
    ``"tfds:<name>"``, ``"images:<name>"`` (an image dataset of
    :data:`core.image_datasets.IMAGE_DATASETS` through TFDS, kept as ``(N, H, W, C)``,
    CIFAR normalised per channel), ``"stand_in:<name>"`` (its synthetic stand-in, with
    ``num_samples``) or ``"synthetic_logistic"`` / ``"synthetic_linear"``;
    optional fields: ``binary_classes`` (keep two classes, the first labelled 1),
    ``positive_classes`` (binarise), ``normalize`` (unit-norm samples), ``bias``
    (append a constant feature), ``max_examples`` (TFDS). When a TFDS dataset is
    not prepared on this machine and ``config.data.fallback`` holds another data
    config, that one is used and the description says so.
    """
    cfg = config.data
    try:
        return _load_source(config, cfg)
    except FileNotFoundError as error:
        if not (cfg.source.startswith(("tfds:", "images:")) and cfg.get("fallback")):
            raise
        data, description = _load_source(config, cfg.fallback)
        del error  # Its long message is in the traceback of a direct load_tfds call.
        return data, f"{description} [fallback: {cfg.source} is not prepared here]"


def _load_source(
    config: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict
) -> tuple[datasets.Dataset, str]:
    kind, _, name = cfg.source.partition(":")
    if kind == "sklearn":
        data = datasets.load_sklearn(name)
    elif kind == "svmlight":
        data = datasets.load_svmlight(name)
    elif kind == "tfds":
        data = datasets.load_tfds(name, split="train", max_examples=cfg.get("max_examples"))
    elif kind == "images":
        data = image_datasets.load_images(name, split="train", max_examples=cfg.get("max_examples"))
    elif kind == "stand_in":
        data = image_datasets.stand_in(name, cfg.num_samples, seed=config.seed)
    elif kind == "synthetic_logistic":
        data, _ = datasets.synthetic_logistic_regression(cfg.num_samples, cfg.dim, seed=config.seed)
    elif kind == "synthetic_linear":
        data, _ = datasets.synthetic_linear_regression(cfg.num_samples, cfg.dim, seed=config.seed)
    elif (load := registry.lookup("dataset", cfg.source)) is not None:
        data = load(cfg, config.seed)
    else:
        raise ValueError(
            f"unknown data source {cfg.source!r}; use 'sklearn:<name>', 'svmlight:<path>', "
            "'tfds:<name>', 'images:<name>', 'stand_in:<name>', 'synthetic_logistic', "
            f"'synthetic_linear' ({registry.describe('dataset')})."
        )
    if kind not in ("images", "stand_in"):  # Image datasets keep their (H, W, C) shape.
        data = datasets.flatten(data)
    what = ""
    if cfg.get("binary_classes"):
        positive, negative = cfg.binary_classes
        data = datasets.binary_subset(data, positive, negative)
        what = f", {positive} vs {negative}"
    elif cfg.get("positive_classes"):
        data = datasets.binarize_labels(data, tuple(cfg.positive_classes))
        what = f", classes {tuple(cfg.positive_classes)} vs rest"
    if cfg.get("scale"):
        data = {**data, "x": (data["x"] * cfg.scale).astype(data["x"].dtype)}
    if cfg.get("normalize", False):
        data = datasets.normalize_rows(data)
    if cfg.get("bias", False):
        data = datasets.append_bias(data)
    if cfg.get("image_shape"):
        data = {**data, "x": data["x"].reshape((-1, *cfg.image_shape))}
    n = data["x"].shape[0]
    shape = "x".join(str(k) for k in data["x"].shape[1:])
    if kind == "stand_in":
        what += f" (synthetic stand-in, not {name})"
    return data, f"{cfg.source}{what} ({n} samples of {shape})"


def split_over_agents(config: ml_collections.ConfigDict, data: datasets.Dataset):
    """Partitions the pooled data over ``config.n_agents`` agents."""
    n = config.n_agents
    n_samples = data["x"].shape[0]
    if n_samples < n:
        raise ValueError(
            f"dataset has {n_samples} samples but n_agents={n}; every agent needs at least "
            "one sample."
        )
    if config.data.partition == "label_sorted":
        return partition.partition_label_sorted(data, n)
    if config.data.partition == "iid":
        return partition.partition_iid(data, n, seed=config.seed)
    if config.data.partition == "pathological":
        return partition.partition_pathological(
            data, n, classes_per_agent=config.data.get("classes_per_agent", 2), seed=config.seed
        )
    return partition.partition_dirichlet(data, n, config.data.alpha, seed=config.seed)
