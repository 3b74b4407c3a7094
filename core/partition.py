"""Split a pooled dataset over agents: i.i.d., label-sorted shards, Dirichlet label skew.

Every partitioner takes a dataset (a dict of NumPy arrays sharing their leading axis
``N``, see :mod:`core.datasets`) and returns the same keys with a leading agent axis,
``(n_agents, m, ...)``. All agents hold the **same number** ``m = N // n_agents`` of
samples, because per-agent data becomes one array sharded on the agent axis and every
agent runs the same number of inner steps per epoch (random reshuffling, D-RR). The
``N - n_agents * m`` samples that do not fit are dropped; which ones is documented per
partitioner. No sample is ever given to two agents.

These run on the host, once, before the data is put on device.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from decentjax.core.datasets import Dataset, check_labels, validate_dataset


def _check_n_agents(n_agents: Any, n: int) -> int:
    if isinstance(n_agents, bool) or not isinstance(n_agents, numbers.Integral):
        raise ValueError(f"n_agents must be an integer >= 1, got {n_agents!r}")
    if n_agents < 1:
        raise ValueError(f"n_agents must be an integer >= 1, got {n_agents}")
    if n < n_agents:
        raise ValueError(
            f"dataset has {n} samples but n_agents={n_agents}; "
            "every agent needs at least one sample"
        )
    return int(n_agents)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _gather(data: Mapping[str, np.ndarray], index: np.ndarray) -> Dataset:
    # index has shape (n_agents, m); fancy indexing puts the agent axis first.
    return {k: v[index] for k, v in data.items()}


def partition_iid(data: Mapping[str, np.ndarray], n_agents: int, *, seed: int) -> Dataset:
    """Shuffles the samples and deals them out in equal shares.

    Every agent gets ``m = N // n_agents`` samples; the ``N mod n_agents`` samples
    that come last in the shuffled order are dropped.

    Args:
      data: a dataset with ``N >= n_agents`` samples.
      n_agents: the number of agents, ``>= 1``.
      seed: seed of the shuffle.

    Returns:
      The dataset's keys with arrays of shape ``(n_agents, m, ...)``.

    Raises:
      ValueError: if ``data`` is not a dataset (e.g. mismatched leading axes),
        ``n_agents < 1``, ``N < n_agents``, or ``seed`` is not a non-negative integer.
    """
    n = validate_dataset(data, require=())
    n_agents = _check_n_agents(n_agents, n)
    perm = np.random.default_rng(_check_seed(seed)).permutation(n)
    m = n // n_agents
    return _gather(data, perm[: n_agents * m].reshape(n_agents, m))


def partition_label_sorted(data: Mapping[str, np.ndarray], n_agents: int) -> Dataset:
    """Sorts by label and cuts into contiguous equal shards (the D-RR non-i.i.d. split).

    The sort is stable, so samples of one class keep their original order. Agent ``i``
    gets positions ``[i * m, (i + 1) * m)`` of the sorted order with
    ``m = N // n_agents``; the remainder is dropped from the end, i.e. from the
    largest labels. With ``K`` classes of equal size and ``n_agents >> K`` most agents
    hold a single class.

    Args:
      data: a dataset with 1-D integer labels ``y`` and ``N >= n_agents`` samples.
      n_agents: the number of agents, ``>= 1``.

    Returns:
      The dataset's keys with arrays of shape ``(n_agents, m, ...)``; every agent's
      labels are sorted, and so is the concatenation over agents.

    Raises:
      ValueError: if ``data`` is not a labelled dataset, ``n_agents < 1`` or
        ``N < n_agents``.
    """
    n = validate_dataset(data, require=("y",))
    y = check_labels(data)
    n_agents = _check_n_agents(n_agents, n)
    m = n // n_agents
    order = np.argsort(y, kind="stable")
    return _gather(data, order[: n_agents * m].reshape(n_agents, m))


def partition_pathological(
    data: Mapping[str, np.ndarray], n_agents: int, *, classes_per_agent: int = 2, seed: int
) -> Dataset:
    """McMahan et al.'s pathological non-i.i.d. split: a few label-sorted shards each.

    Sorts by label, cuts the sorted samples into ``n_agents * classes_per_agent``
    contiguous shards of equal size and gives every agent ``classes_per_agent``
    shards drawn at random without replacement, so each agent sees at most that
    many classes (McMahan et al. 2017, arXiv 1602.05629, "pathological non-IID").

    Args:
      data: a dataset with 1-D integer labels.
      n_agents: the number of agents, ``>= 1``.
      classes_per_agent: shards (hence at most classes) per agent, ``>= 1``.
      seed: seed of the shard assignment.

    Returns:
      Arrays of shape ``(n_agents, m, ...)`` with ``m = classes_per_agent * s`` and
      ``s = N // (n_agents * classes_per_agent)``.

    Raises:
      ValueError: if a shard would be empty or an argument is out of range.
    """
    n = validate_dataset(data, require=("y",))
    y = check_labels(data)
    n_agents = _check_n_agents(n_agents, n)
    if not isinstance(classes_per_agent, (int, np.integer)) or classes_per_agent < 1:
        raise ValueError(f"classes_per_agent must be an integer >= 1, got {classes_per_agent!r}")
    shards = n_agents * int(classes_per_agent)
    size = n // shards
    if size < 1:
        raise ValueError(
            f"dataset has {n} samples, fewer than n_agents * classes_per_agent = {shards} "
            "shards; use fewer agents or shards"
        )
    order = np.argsort(y, kind="stable")[: shards * size].reshape(shards, size)
    assignment = np.random.default_rng(_check_seed(seed)).permutation(shards)
    index = order[assignment].reshape(n_agents, int(classes_per_agent) * size)
    return _gather(data, index)


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``weights`` (Hamilton)."""
    quota = total * weights / weights.sum()
    counts = np.floor(quota).astype(np.int64)
    short = total - int(counts.sum())
    # Stable sort: ties go to the lower class index, keeping the result deterministic.
    # Only positive weights are eligible, so float round-off never requests a class
    # that was excluded (an exhausted pool).
    order = np.argsort(-(quota - counts), kind="stable")
    order = order[weights[order] > 0]
    np.add.at(counts, np.resize(order, short), 1)
    return counts


def partition_dirichlet(
    data: Mapping[str, np.ndarray],
    n_agents: int,
    alpha: float,
    *,
    seed: int,
    equal_sizes: bool = True,
    min_size: int = 1,
) -> Dataset | list[Dataset]:
    r"""Label-skewed split, equal agent sizes or (``equal_sizes=False``) unequal.

    With ``equal_sizes=False`` this is the per-class Dirichlet split that federated
    benchmarks use under Hsu et al.'s name (Yurochkin et al. 2019; Wang et al. 2020;
    NIID-Bench, Li et al. 2022): for every class :math:`k`, shares
    :math:`q_k \sim \mathrm{Dirichlet}(\alpha 1_n)` over the clients, and class
    :math:`k`'s samples are dealt out in those shares (largest remainder), so clients
    differ in size as well as in label mix and *no sample is dropped*. The draw is
    repeated (at most 100 times) until every client holds at least ``min_size``
    samples; the result is a list of per-client datasets (leaves ``(m_i, ...)``), the
    input of :func:`core.cohort.client_store`.

    The equal-size form (default) is described below.

    Hsu, Qi and Brown (2019, "Measuring the effects of non-identical data
    distribution") draw each client's class mix from a symmetric Dirichlet. Here the
    client sizes are kept equal, as the agent axis requires:

    1. Each class's sample indices are shuffled into a pool.
    2. Agent ``i`` (in order ``0..n_agents-1``) draws class proportions
       ``p_i ~ Dirichlet(alpha * 1_K)`` over the ``K`` labels present in ``y`` and
       asks for ``m = N // n_agents`` samples whose label counts follow ``p_i``,
       rounded by the largest-remainder method.
    3. Samples are taken without replacement from the class pools. When a pool runs
       out, the shortfall is requested again from the classes that still have
       samples, in proportion to ``p_i`` restricted to them (in proportion to their
       remaining pool sizes if ``p_i`` is zero on all of them), until the agent has
       ``m`` samples.
    4. Each agent's samples are shuffled; the samples left in the pools at the end
       (``N - n_agents * m`` of them) are dropped.

    Small ``alpha`` (e.g. 0.01) gives nearly one class per agent; large ``alpha``
    (e.g. 1000) gives nearly the global label proportions on every agent. Because
    pools deplete, agents late in the order can deviate from their ``p_i`` when the
    requests for a class exceed its supply.

    Args:
      data: a dataset with 1-D integer labels ``y`` and ``N >= n_agents`` samples.
      n_agents: the number of agents, ``>= 1``.
      alpha: the Dirichlet concentration, a finite number ``> 0``.
      seed: seed of the pools' shuffles and of the Dirichlet draws.
      equal_sizes: ``True``: the equal-size form; ``False``: the per-class form.
      min_size: with ``equal_sizes=False``, the fewest samples a client may hold.

    Returns:
      Equal sizes: the dataset's keys with arrays of shape ``(n_agents, m, ...)``.
      Unequal: a list of ``n_agents`` datasets with arrays ``(m_i, ...)``.

    Raises:
      ValueError: if ``data`` is not a labelled dataset, ``n_agents < 1``,
        ``N < n_agents``, ``alpha`` is not a finite positive number, ``seed`` is not
        a non-negative integer, or (unequal) 100 draws all leave a client with fewer
        than ``min_size`` samples.
    """
    n = validate_dataset(data, require=("y",))
    y = check_labels(data)
    n_agents = _check_n_agents(n_agents, n)
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not np.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    rng = np.random.default_rng(_check_seed(seed))
    if not equal_sizes:
        return _dirichlet_per_class(data, y, n_agents, float(alpha), rng, min_size)
    m = n // n_agents

    classes, y_idx = np.unique(y, return_inverse=True)
    k = classes.size
    pools = [rng.permutation(np.flatnonzero(y_idx == c)) for c in range(k)]
    used = np.zeros(k, dtype=np.int64)  # how much of each pool is taken
    sizes = np.array([p.size for p in pools], dtype=np.int64)

    index = np.empty((n_agents, m), dtype=np.int64)
    for i in range(n_agents):
        p = rng.dirichlet(np.full(k, float(alpha)))
        if not np.all(np.isfinite(p)) or p.sum() <= 0:
            # Guard against a degenerate draw; alpha -> 0 means a single random class.
            p = np.eye(k)[rng.integers(k)]
        want = _largest_remainder(m, p)
        take = np.zeros(k, dtype=np.int64)
        # Each pass either completes the agent or exhausts at least one pool, so there
        # are at most K + 1 passes; N >= n_agents * m guarantees enough samples remain.
        while True:
            take += np.minimum(want, sizes - used - take)
            need = m - int(take.sum())
            if need == 0:
                break
            left = sizes - used - take
            w = np.where(left > 0, p, 0.0)
            if w.sum() <= 0:
                w = left.astype(np.float64)
            want = _largest_remainder(need, w)
        parts = [pools[c][used[c] : used[c] + take[c]] for c in range(k)]
        used += take
        index[i] = rng.permutation(np.concatenate(parts))
    return _gather(data, index)


def _dirichlet_per_class(
    data: Mapping[str, np.ndarray],
    y: np.ndarray,
    n_agents: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int,
) -> list[Dataset]:
    """The unequal-size per-class Dirichlet split of :func:`partition_dirichlet`."""
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1, got {min_size!r}")
    if min_size * n_agents > y.size:
        raise ValueError(
            f"{n_agents} clients of at least min_size={min_size} need {min_size * n_agents} "
            f"samples; the dataset has {y.size}."
        )
    classes, y_idx = np.unique(y, return_inverse=True)
    pools = [np.flatnonzero(y_idx == c) for c in range(classes.size)]
    for _ in range(100):
        counts = np.stack(
            [_largest_remainder(p.size, rng.dirichlet(np.full(n_agents, alpha))) for p in pools]
        )  # (classes, clients)
        if counts.sum(axis=0).min() >= min_size:
            break
    else:
        raise ValueError(
            f"100 Dirichlet(alpha={alpha}) draws all left a client with fewer than "
            f"min_size={min_size} samples; raise alpha, lower min_size or use fewer clients."
        )
    starts = np.cumsum(counts, axis=1) - counts
    pools = [rng.permutation(p) for p in pools]
    out = []
    for i in range(n_agents):
        idx = np.concatenate(
            [pools[c][starts[c, i] : starts[c, i] + counts[c, i]] for c in range(len(pools))]
        )
        idx = rng.permutation(idx)
        out.append({key: np.asarray(value)[idx] for key, value in data.items()})
    return out


def label_distribution(parts: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
    """Counts each agent's samples per class, to report how heterogeneous a split is.

    Args:
      parts: a partitioned dataset whose ``y`` has shape ``(n_agents, m)`` and holds
        integer labels in ``[0, num_classes)``.
      num_classes: the number of classes ``K >= 1``.

    Returns:
      An int64 array of shape ``(n_agents, K)``; row ``i`` counts agent ``i``'s labels.

    Raises:
      ValueError: if ``parts`` has no 2-D integer ``y``, ``num_classes < 1``, or a
        label falls outside ``[0, num_classes)``.
    """
    if not isinstance(parts, Mapping) or "y" not in parts:
        raise ValueError(f"parts must be a dict with a 'y' array, got {type(parts).__name__}")
    y = np.asarray(parts["y"])
    if y.ndim != 2 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"parts['y'] must be an (n_agents, m) integer array, got shape {y.shape} "
            f"and dtype {y.dtype}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]"
        )
    # Offsetting each agent's labels by i * K turns the per-row histogram into one bincount.
    offsets = np.arange(y.shape[0])[:, None] * num_classes
    counts = np.bincount((y + offsets).ravel(), minlength=y.shape[0] * num_classes)
    return counts.reshape(y.shape[0], num_classes).astype(np.int64)
