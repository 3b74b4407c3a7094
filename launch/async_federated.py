r"""``train_and_evaluate`` for asynchronous cross-device configs: FedBuff vs FedAvg with stragglers.

A config with an ``asynchrony`` section (``launch/configs/fedbuff.py``) runs here: the
data is split over ``asynchrony.n_clients`` clients (as :mod:`launch.cross_device`
does), and for every straggler fraction of ``asynchrony.straggler_fractions`` (that
fraction of the clients is ``straggler_slowdown`` times slower per local step,
:func:`core.asynchrony.stragglers`) each method runs until it has used
``asynchrony.client_updates`` client updates:

* ``fedavg``: synchronous cohort FedAvg (:func:`algos.cohort_fedavg`) of
  ``concurrency`` clients per round; a round lasts as long as its slowest member,
  :math:`\max_{i \in S_r} K t_i`, so its simulated clock is the sum of those maxima
  (computed here from the recorded cohorts: FedAvg's iterates do not depend on the
  compute times, so one run serves every straggler fraction);
* ``fedbuff``: :func:`algos.fedbuff` with ``concurrency`` clients in training and a
  buffer of ``buffer_size`` updates;
* ``async_fedavg``: :func:`algos.async_fedavg` (buffer 1).

Every ``log_updates`` client updates it evaluates the server model (training loss and
accuracy on the pooled data, test accuracy) and writes ``metrics.jsonl`` (rows with
``client_updates``, ``sim_time``, ``round`` = server steps, and the metrics),
``summary.txt`` (per fraction and method: the final metrics, the simulated time at
the end and the simulated time and client updates to reach the target loss, the
largest final loss of all runs, so that every run reaches it) and the plots
``<metric>_vs_sim_time.png`` / ``<metric>_vs_client_updates.png``, one panel per
straggler fraction.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from decentjax import algos
from decentjax.core import asynchrony, cohort, mesh, rounds
from decentjax.launch import cross_device, experiment, plotting

ASYNC_ALGORITHMS = ("fedavg", "fedbuff", "async_fedavg")


def _algorithm(name: str, loss_fn, cfg: ml_collections.ConfigDict, times: np.ndarray):
    common = dict(batch_size=cfg.batch_size, local_steps=cfg.local_steps, weights="uniform")
    n, c = cfg.n_clients, cfg.concurrency
    if name == "fedavg":
        return algos.cohort_fedavg(loss_fn, n, c, cfg.learning_rate, **common)
    if name == "fedbuff":
        return algos.fedbuff(
            loss_fn,
            n,
            c,
            cfg.buffer_size,
            cfg.learning_rate,
            compute_time=times,
            dispatch=cfg.get("dispatch", "at_step"),
            **common,
        )
    if name == "async_fedavg":
        return algos.async_fedavg(loss_fn, n, c, cfg.learning_rate, compute_time=times, **common)
    raise ValueError(f"unknown asynchronous method {name!r}; valid: {', '.join(ASYNC_ALGORITHMS)}.")


def _updates_per_step(name: str, cfg: ml_collections.ConfigDict) -> int:
    return {"fedavg": cfg.concurrency, "fedbuff": cfg.buffer_size, "async_fedavg": 1}[name]


def _run(algorithm, per_step, cfg, evaluate, store, test, params0, key) -> tuple[list, list]:
    """Server steps in chunks of ``log_updates`` client updates; rows and the cohorts."""
    runner = rounds.RoundRunner(algorithm, store[0], evaluate)
    tester = rounds.RoundRunner(algorithm, test[0], evaluate)
    placed = runner.place(store[1])
    state = runner.init(params0, placed, jax.random.fold_in(key, 1))
    chunk = cfg.log_updates // per_step
    rows, cohorts, clock = [], [], 0.0

    def row(state, steps):
        train = jax.device_get(runner.evaluate(state, placed))
        held_out = jax.device_get(tester.evaluate(state, test[1]))
        return (
            {"round": steps, "client_updates": steps * per_step, "sim_time": clock}
            | {k: float(v) for k, v in train.items()}
            | {f"test_{k}": float(v) for k, v in held_out.items()}
        )

    rows.append(row(state, 0))
    for done in range(chunk, cfg.client_updates // per_step + 1, chunk):
        state, metrics = runner.run_rounds(state, placed, jax.random.fold_in(key, 2), chunk)
        metrics = jax.device_get(metrics)
        cohorts.append(np.asarray(metrics["cohort"]))
        clock = float(metrics["sim_time"][-1]) if "sim_time" in metrics else np.nan
        rows.append(row(state, done))
    return rows, cohorts


def _synchronous_clock(rows, cohorts, times, cfg) -> list[dict]:
    """FedAvg's rows with the simulated time of rounds that wait for their slowest member."""
    members = np.concatenate(cohorts)
    per_round = cfg.local_steps * np.max(np.where(members >= 0, times[members], 0.0), axis=1)
    clock = np.concatenate([[0.0], np.cumsum(per_round)])
    return [r | {"sim_time": float(clock[r["round"]])} for r in rows]


def _to_target(rows, target: float, x: str) -> float:
    """The first ``x`` at which the training loss is at most ``target`` (nan if never)."""
    hits = [r[x] for r in rows if r["loss"] <= target]
    return hits[0] if hits else float("nan")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs every method of ``config.algorithms`` at every straggler fraction.

    Returns:
      ``{"histories": {(panel, name): rows}, "summary": [rows], "files": {...}}``.

    Raises:
      ValueError: an unknown method, or ``log_updates`` not a multiple of every
        method's updates per server step, or ``client_updates`` not one of
        ``log_updates``.
    """
    cfg = config.asynchrony
    unknown = set(config.algorithms) - set(ASYNC_ALGORITHMS)
    if unknown:
        raise ValueError(
            f"unknown asynchronous methods {sorted(unknown)}; valid: {', '.join(ASYNC_ALGORITHMS)}."
        )
    for name in config.algorithms:
        if cfg.log_updates % _updates_per_step(name, cfg) or cfg.client_updates % cfg.log_updates:
            raise ValueError(
                f"log_updates={cfg.log_updates} must be a multiple of {name}'s "
                f"{_updates_per_step(name, cfg)} updates per server step, and client_updates="
                f"{cfg.client_updates} a multiple of log_updates."
            )
    data, test, description, num_classes = cross_device.load_split(config)
    store = cohort.client_store(cross_device._clients(config, data, cfg.n_clients))
    net = experiment.model(config, data["x"].shape[1:], num_classes)
    obj = experiment.objective(config, net, num_classes)
    agent_mesh = mesh.make_agent_mesh(cfg.n_clients, config.n_devices or None)
    n_devices = agent_mesh.devices.size
    test_mesh = mesh.make_agent_mesh(n_devices, n_devices)
    test_store = mesh.shard_agents(cross_device._test_store(test, n_devices), test_mesh)
    evaluate = rounds.make_evaluator(obj.loss, accuracy_fn=obj.accuracy)
    root = jax.random.key(config.seed)
    params0 = net.init(jax.random.fold_in(root, 0))
    print(
        f"data: {description}; {cfg.n_clients} clients, {cfg.concurrency} in training at once, "
        f"{cfg.local_steps} local steps of batch {cfg.batch_size}; stragglers "
        f"{cfg.straggler_slowdown:g}x slower"
    )
    histories: dict[tuple[str, str], list[dict]] = {}
    sync_run = None
    for fraction in cfg.straggler_fractions:
        times = asynchrony.stragglers(
            cfg.n_clients, fraction, cfg.straggler_slowdown, seed=config.seed
        )
        panel = f"{100 * fraction:g}% stragglers"
        for name in config.algorithms:
            per_step = _updates_per_step(name, cfg)
            if name == "fedavg" and sync_run is not None:
                rows, cohorts = sync_run  # its iterates do not depend on the compute times
            else:
                algorithm = _algorithm(name, obj.loss, cfg, times)
                rows, cohorts = _run(
                    algorithm,
                    per_step,
                    cfg,
                    evaluate,
                    (agent_mesh, store),
                    (test_mesh, test_store),
                    params0,
                    root,
                )
                if name == "fedavg":
                    sync_run = rows, cohorts
            if name == "fedavg":
                rows = _synchronous_clock(rows, cohorts, times, cfg)
            histories[(panel, name)] = rows
            end = rows[-1]
            print(f"  {panel:16s} {name:13s} loss {end['loss']:.4f} at t={end['sim_time']:.0f}")
    target = max(rows[-1]["loss"] for rows in histories.values())
    return _write(workdir, histories, _summary(histories, target), description, target)


def _summary(histories, target: float) -> list[dict]:
    """Final rows with the simulated time and updates to ``target``, and the speed-up in
    simulated time over synchronous FedAvg at the same straggler fraction."""
    summary = []
    for (panel, name), rows in histories.items():
        summary.append(
            {"stragglers": panel, "algorithm": name, **rows[-1]}
            | {
                "target_loss": target,
                "time_to_target": _to_target(rows, target, "sim_time"),
                "updates_to_target": _to_target(rows, target, "client_updates"),
            }
        )
    sync = {s["stragglers"]: s["time_to_target"] for s in summary if s["algorithm"] == "fedavg"}
    for s in summary:
        s["speedup"] = sync.get(s["stragglers"], float("nan")) / s["time_to_target"]
    return summary


def _write(workdir, histories, summary, description, target) -> dict[str, Any]:
    os.makedirs(workdir, exist_ok=True)
    files = {
        "metrics": os.path.join(workdir, "metrics.jsonl"),
        "summary": os.path.join(workdir, "summary.txt"),
    }
    lines = [
        f"target loss {target:.4f} (the largest final loss of all runs)",
        f"{'stragglers':16s} {'method':13s} {'loss':>8s} {'test acc':>9s} {'sim time':>9s} "
        f"{'t->target':>10s} {'upd->target':>12s} {'speed-up':>9s}",
    ]
    for s in summary:
        lines.append(
            f"{s['stragglers']:16s} {s['algorithm']:13s} {s['loss']:8.4f} "
            f"{s['test_accuracy']:9.4f} {s['sim_time']:9.0f} {s['time_to_target']:10.0f} "
            f"{s['updates_to_target']:12.0f} {s['speedup']:9.2f}"
        )
    table = "\n".join(lines)
    print(f"\n{description}:\n{table}")
    if jax.process_index() != 0:
        return {"histories": histories, "summary": summary, "files": files}
    with open(files["metrics"], "w") as log:
        for (panel, name), rows in histories.items():
            for r in rows:
                log.write(json.dumps({"stragglers": panel, "algorithm": name, **r}) + "\n")
    with open(files["summary"], "w") as f:
        f.write(table + "\n")
    for metric in ("loss", "test_accuracy"):
        for x in ("sim_time", "client_updates"):
            path = os.path.join(workdir, f"{metric}_vs_{x}.png")
            plotting.plot_histories(histories, metric, path, x=x, title=description)
            files[f"{metric}_vs_{x}"] = path
    return {"histories": histories, "summary": summary, "files": files}
