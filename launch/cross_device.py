r"""``train_and_evaluate`` for cross-device configs: cohort methods on unequal clients.

A config with a ``cohort`` section (``launch/configs/cross_device.py``) runs here
instead of the agent-per-slice pipeline of :mod:`launch.train`: the pooled data is
split over ``cohort.n_clients`` clients of *unequal* size (Dirichlet label skew
with unequal sizes, :func:`core.partition.partition_dirichlet` with
``equal_sizes=False``, or equal i.i.d. shards), stored once as a
:class:`core.cohort.ClientStore`, and every method of ``config.algorithms`` runs
``cohort.rounds`` rounds of :mod:`algos.cohort` from the same server model, each
round computing on ``cohort.size`` sampled clients only. After every
``log_every`` rounds it evaluates the server model on the pooled training data
(the objective :math:`\sum_i p_i f_i`, :math:`p_i \propto m_i`) and on the held-out
test data, and writes ``metrics.jsonl`` (one row per evaluation: ``round``,
``bytes_sent`` per client, ``loss``, ``accuracy``, ``test_loss``,
``test_accuracy``), ``summary.txt`` and the plots ``<metric>_vs_rounds.png`` /
``<metric>_vs_bytes.png``.

Methods (``config.algorithms``): ``fedavg`` (unbiased aggregation
:math:`\frac{N}{|S|}\sum_{i\in S} p_i\Delta_i`), ``fedavg_selfnorm`` (McMahan's
self-normalised :math:`\sum_S p_i\Delta_i/\sum_S p_i`), ``fedprox`` (proximal
term ``cohort.mu``), ``fedadam`` (FedOpt: server Adam with step
``cohort.server_learning_rate``) and ``scaffold``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
import tqdm

from decentjax.algos.cohort import cohort_fedavg, cohort_scaffold
from decentjax.core import cohort, datasets, mesh, partition, rounds
from decentjax.launch import experiment, plotting

COHORT_ALGORITHMS = ("fedavg", "fedavg_selfnorm", "fedprox", "fedadam", "scaffold")


def _algorithm(name: str, loss_fn, cfg: ml_collections.ConfigDict, n_clients: int):
    common = dict(batch_size=cfg.batch_size, local_epochs=cfg.local_epochs)
    args = (loss_fn, n_clients, cfg.size, cfg.learning_rate)
    if name == "scaffold":
        return cohort_scaffold(*args, weights=cfg.weights, **common)
    options = {
        "fedavg": {},
        "fedavg_selfnorm": {"aggregation": "self_normalized"},
        "fedprox": {"mu": cfg.mu},
        "fedadam": {
            "server_optimizer": optax.adam(cfg.server_learning_rate, eps=1e-3),
            "aggregation": "self_normalized",
        },
    }
    if name not in options:
        raise ValueError(
            f"unknown cross-device algorithm {name!r}; valid: {', '.join(COHORT_ALGORITHMS)}."
        )
    return cohort_fedavg(*args, weights=cfg.weights, **common, **options[name])


def load_split(
    config: ml_collections.ConfigDict,
) -> tuple[datasets.Dataset, datasets.Dataset, str, int]:
    """``(train, test, description, num_classes)``: ``config.data`` split into a training
    and a held-out test set, features in ``config.dtype``."""
    dtype = np.dtype(config.dtype)
    data, description = experiment.load_data(config)
    data, test = datasets.train_test_split(
        data, test_fraction=config.data.test_fraction, seed=config.seed
    )
    data = {"x": data["x"].astype(dtype), "y": data["y"]}
    test = {"x": test["x"].astype(dtype), "y": test["y"]}
    return data, test, description, int(data["y"].max()) + 1


def _clients(
    config: ml_collections.ConfigDict, data: datasets.Dataset, n_clients: int
) -> list[datasets.Dataset]:
    if config.data.partition == "dirichlet":
        return partition.partition_dirichlet(
            data, n_clients, config.data.alpha, seed=config.seed, equal_sizes=False
        )
    if config.data.partition == "iid":
        order = np.random.default_rng(config.seed).permutation(len(data["y"]))
        return [{k: v[idx] for k, v in data.items()} for idx in np.array_split(order, n_clients)]
    raise ValueError(
        f"config.data.partition={config.data.partition!r}; cross-device runs take "
        "'dirichlet' (unequal sizes) or 'iid'."
    )


def _test_store(test: datasets.Dataset, n_devices: int) -> cohort.ClientStore:
    """The test set as ``n_devices`` pseudo-clients, so each device evaluates a share."""
    return cohort.client_store(
        [
            {k: v[idx] for k, v in test.items()}
            for idx in np.array_split(np.arange(len(test["y"])), n_devices)
        ]
    )


def _run_method(name, config, runner, tester, store, test_store, params0, root) -> list[dict]:
    """Rounds of one method in chunks of ``log_every``, evaluating after each chunk."""
    cfg = config.cohort
    placed = runner.place(store)
    state = runner.init(params0, placed, jax.random.fold_in(root, 1))

    def row(state, done: int, sent: float) -> dict[str, float]:
        train = jax.device_get(runner.evaluate(state, placed))
        test = jax.device_get(tester.evaluate(state, test_store))
        return (
            {"round": done, "bytes_sent": sent}
            | {k: float(v) for k, v in train.items()}
            | {f"test_{k}": float(v) for k, v in test.items()}
        )

    done, sent = 0, 0.0
    history = [row(state, 0, sent)]
    with tqdm.tqdm(total=cfg.rounds, desc=name, unit="round", leave=False) as bar:
        while done < cfg.rounds:
            chunk = min(config.log_every, cfg.rounds - done)
            state, metrics = runner.run_rounds(state, placed, jax.random.fold_in(root, 2), chunk)
            sent += float(np.sum(jax.device_get(metrics["bytes_sent"])))
            done += chunk
            history.append(row(state, done, sent))
            bar.update(chunk)
    return history


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs every method of a cross-device config; writes metrics, summary and plots.

    Returns:
      ``{"histories": {name: rows}, "summary": [final rows], "files": {...}}``.
    """
    cfg = config.cohort
    unknown = set(config.algorithms) - set(COHORT_ALGORITHMS)
    if unknown:
        valid = ", ".join(COHORT_ALGORITHMS)
        raise ValueError(f"unknown cross-device algorithms {sorted(unknown)}; valid: {valid}.")
    data, test, description, num_classes = load_split(config)
    clients = _clients(config, data, cfg.n_clients)
    sizes = np.array([len(c["y"]) for c in clients])
    store = cohort.client_store(clients)
    net = experiment.model(config, data["x"].shape[1:], num_classes)
    obj = experiment.objective(config, net, num_classes)
    if obj.check_data is not None:
        obj.check_data(data)
        obj.check_data(test)
    print(
        f"data: {description}; {cfg.n_clients} clients of {sizes.min()}..{sizes.max()} samples "
        f"(median {int(np.median(sizes))}), {config.data.partition} split; cohort {cfg.size} "
        f"per round, {cfg.local_epochs} local epoch(s) of batch {cfg.batch_size}"
    )
    agent_mesh = mesh.make_agent_mesh(cfg.n_clients, config.n_devices or None)
    n_devices = agent_mesh.devices.size
    evaluate = rounds.make_evaluator(obj.loss, accuracy_fn=obj.accuracy)
    test_mesh = mesh.make_agent_mesh(n_devices, n_devices)
    test_store = mesh.shard_agents(_test_store(test, n_devices), test_mesh)
    root = jax.random.key(config.seed)
    params0 = net.init(jax.random.fold_in(root, 0))
    histories, summary = {}, []
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    lead = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    with open(metrics_path if lead else os.devnull, "w") as log:
        for name in config.algorithms:
            algorithm = _algorithm(name, obj.loss, cfg, cfg.n_clients)
            runner = rounds.RoundRunner(algorithm, agent_mesh, evaluate)
            tester = rounds.RoundRunner(algorithm, test_mesh, evaluate)
            history = _run_method(name, config, runner, tester, store, test_store, params0, root)
            for r in history:
                log.write(json.dumps({"algorithm": name, **r}) + "\n")
            histories[("cohort", name)] = history
            summary.append({"algorithm": name, **history[-1]})
    lines = [f"{'method':18s} {'loss':>8s} {'accuracy':>9s} {'test acc':>9s} {'MB/client':>10s}"]
    for s in summary:
        lines.append(
            f"{s['algorithm']:18s} {s['loss']:8.4f} {s['accuracy']:9.4f} "
            f"{s['test_accuracy']:9.4f} {s['bytes_sent'] / 1e6:10.3f}"
        )
    table = "\n".join(lines)
    print(f"\nafter {cfg.rounds} rounds ({description}):\n{table}")
    files = {"metrics": metrics_path, "summary": os.path.join(workdir, "summary.txt")}
    if lead:
        with open(files["summary"], "w") as f:
            f.write(table + "\n")
        for x in ("round", "bytes_sent"):
            path = os.path.join(workdir, f"loss_vs_{'rounds' if x == 'round' else 'bytes'}.png")
            plotting.plot_histories(histories, "loss", path, x=x, title=description)
            files[f"plot_{x}"] = path
    return {"histories": histories, "summary": summary, "files": files}
