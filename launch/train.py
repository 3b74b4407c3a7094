"""``train_and_evaluate(config, workdir)``: run every configured method, log, plot.

For each topology in ``config.topologies`` and each method in
``config.algorithms`` (centralized methods run once, they have no graph), the
agents start from the same point, run ``config.num_epochs`` epochs in compiled
chunks of ``config.log_every`` epochs, and the per-epoch metrics are appended to
``workdir/metrics.jsonl`` (rows of earlier runs that are not rerun are kept) and
to TensorBoard (:mod:`launch.tracking`). At the end a summary table is printed and
written to ``workdir/summary.txt`` and the error curves to
``workdir/<metric>_vs_epochs.png``. The workdir may be local or remote (``gs://``):
every path goes through ``etils.epath``. It records the resolved config, and a rerun
with a different one is refused (:mod:`launch.workdir`).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import tqdm
from etils import epath

from decentjax.core import (
    agent_metrics,
    checkpointing,
    datasets,
    heterogeneity,
    loop,
    mesh,
    metrics,
    optimum,
    partition,
    sampling,
)
from decentjax.launch import (
    experiment,
    model_tasks,
    plotting,
    private_runs,
    rates,
    sweeps,
    tracking,
)
from decentjax.launch import workdir as workdir_lib
from decentjax.models import nets, objectives


class RunKeys(NamedTuple):
    """Independent PRNG keys of a run, one per use."""

    model: jax.Array  # x0 (the linear models' N(0, I/d)) or the network's init
    state: jax.Array  # the algorithm's state init
    train: jax.Array  # every epoch's sampling and step randomness


def run_keys(seed: int) -> RunKeys:
    """``fold_in(key(seed), tag)`` for tags 0, 1, 2: model init, state init, training.

    Each use gets its own stream, so changing how one is consumed (another network,
    an algorithm whose init draws randomness) leaves the others' draws unchanged.
    """
    root = jax.random.key(seed)
    return RunKeys(*(jax.random.fold_in(root, tag) for tag in range(len(RunKeys._fields))))


def _linear_init(dim: int, dtype: Any):
    """``key -> x0 ~ N(0, I/d)``, the D-RR code's "scaled" init (as a JAX function)."""
    return lambda key: jax.random.normal(key, (dim,), dtype) / math.sqrt(dim)


def _format_table(rows: list[dict[str, Any]], metric: str, target: float | None) -> str:
    topo_w = max(14, *(len(r["topology"]) + 2 for r in rows))
    alg_w = max(18, *(len(r["algorithm"]) + 2 for r in rows))
    test = any("test_accuracy" in r for r in rows)
    header = f"{'topology':<{topo_w}}{'algorithm':<{alg_w}}{metric:>14}{'rate':>7}{'loss':>12}"
    header += f"{'consensus':>12}{'accuracy':>10}" + (f"{'test acc':>10}" if test else "")
    header += f"{'MB sent':>10}" + (f"{'MB@target':>11}" if target is not None else "")
    clock = all("sim_time" in r for r in rows)
    if clock:
        header += f"{'sim time':>10}" + (f"{'T@target':>10}" if target is not None else "")
    header += f"{'compile s':>10}{'run s':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        line = (
            f"{r['topology']:<{topo_w}}{r['algorithm']:<{alg_w}}{r[metric]:>14.4e}"
            f"{r['rate']:>7.2f}{r['loss']:>12.6f}{r['consensus']:>12.3e}"
            f"{r.get('accuracy', float('nan')):>10.4f}"
        )
        if test:
            line += f"{r.get('test_accuracy', float('nan')):>10.4f}"
        line += f"{r['bytes_sent'] / 1e6:>10.3f}"
        if target is not None:
            line += f"{r['bytes_to_target'] / 1e6:>11.4f}"
        if clock:  # simulated wall-clock (core.asynchrony): at the end, and to the target
            line += f"{r['sim_time']:>10.0f}"
            line += f"{r['time_to_target']:>10.0f}" if target is not None else ""
        lines.append(line + f"{r.get('compile_seconds', float('nan')):>10.2f}{r['seconds']:>8.2f}")
    return "\n".join(lines)


def _has_key(runs: Any, key: str) -> bool:
    """Whether the last row of a run (or of the first of several runs) holds ``key``."""
    rows = runs[0] if isinstance(runs[0], list) else runs
    return key in rows[-1]


def _agent_table(rows: list[dict[str, Any]]) -> str:
    """Per-agent lines (``config.agent_metrics``): each agent's x_i on its own data."""
    if not any("agent_loss_mean" in r for r in rows):
        return ""
    lines = ["per agent (agent i's x_i on its own train / test data): mean / worst / std"]
    for r in rows:
        parts = [
            f"{split or 'train '}{name} {r[f'agent_{split}{name}_mean']:.4g} / "
            f"{r[f'agent_{split}{name}_worst']:.4g} / {r[f'agent_{split}{name}_std']:.2g}"
            for split in ("", "test_")
            for name in ("loss", "accuracy")
            if f"agent_{split}{name}_mean" in r
        ]
        lines.append(f"  {r['topology']}/{r['algorithm']}: " + "; ".join(parts))
    return "\n" + "\n".join(lines)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: epath.PathLike, *, on_mismatch: str = "refuse"
) -> dict[str, Any]:
    """Runs the experiment described by ``config``, writing results to ``workdir``.

    Args:
      config: a config from ``launch/configs/*.py``.
      workdir: output folder (created if missing), local or a URI (``gs://...``).
      on_mismatch: when ``workdir`` holds runs of a different config: ``"refuse"``
        (raise, naming the differing keys), ``"new"`` (use ``<workdir>-1``, ...) or
        ``"overwrite"`` (discard them); see :func:`launch.workdir.prepare`.

    Returns:
      ``{"histories": {(topology, algorithm): [per-epoch dicts]}, "summary": [rows],
      "metric": name, "files": {...}}``; a config with a ``cohort`` section (cross-device
      federated learning) runs :func:`launch.cross_device.train_and_evaluate` instead, one
      with an ``asynchrony`` section :func:`launch.async_federated.train_and_evaluate`.
    """
    if config.get("asynchrony"):
        from decentjax.launch import async_federated

        return async_federated.train_and_evaluate(config, workdir)
    if config.get("cohort"):
        from decentjax.launch import cross_device

        return cross_device.train_and_evaluate(config, workdir)
    experiment.validate(config)
    sweeps.validate(config)
    workdir = workdir_lib.prepare(config, workdir, on_mismatch, write=jax.process_index() == 0)
    dtype = np.dtype(config.dtype)
    with jax.enable_x64(config.dtype == "float64"):
        return _run(config, workdir, dtype)


class _RunCheckpoints:
    """Checkpoints of one (topology, algorithm) run: orbax state plus a JSON history.

    With ``every > 0`` the state is saved at epoch 0 and then every ``every``
    epochs (at chunk ends) and at the last epoch; the history up to that epoch is
    written next to it. ``resume`` restores the newest readable checkpoint onto the
    current mesh, so a rerun of the same command with the same workdir continues a
    killed run exactly: every epoch's randomness is ``fold_in(key, epoch)``.
    """

    def __init__(self, directory: epath.Path, every: int, epochs: int, order=None):
        self.directory, self.every, self.epochs = directory, int(every), epochs
        # The runner's agent order (config.relabel): a checkpoint of another is refused.
        self.ckpt = checkpointing.Checkpointer(directory, order=order) if self.every > 0 else None
        self.last_saved = -1

    def _history_path(self, epoch: int) -> epath.Path:
        return self.directory / f"history_{epoch}.json"

    def resume(self, fresh_state: Any) -> tuple[Any, list[dict[str, float]] | None]:
        """``(state, history)`` of the newest checkpoint, or ``(fresh_state, None)``.

        The history is ``None`` at epoch 0 (the run evaluates its start itself).
        """
        if self.ckpt is None:
            return fresh_state, None
        if self.ckpt.latest_epoch() is None:
            # Keep the start too, so a run that diverges early leaves a checkpoint.
            self._save(0, fresh_state, None)
            return fresh_state, None
        state, epoch = self.ckpt.restore(fresh_state)
        history = json.loads(self._history_path(epoch).read_text())
        print(f"resumed {self.directory} at epoch {epoch}")
        self.last_saved = epoch
        return state, history

    def on_chunk(self, state: Any, done: int, history: list[dict[str, float]]) -> None:
        """Saves after a chunk when ``every`` epochs have passed or the run ends."""
        if self.ckpt is None:
            return
        if done - self.last_saved >= self.every or done == self.epochs:
            self._save(done, state, history)

    def _save(self, epoch: int, state: Any, history: list[dict[str, float]] | None) -> None:
        # The history first, atomically: a checkpoint is only ever read with its history.
        workdir_lib.write_text(self._history_path(epoch), json.dumps(history))
        self.ckpt.save(epoch, state)
        self.ckpt.wait_until_finished()  # The next chunk donates the state's buffers.
        self.last_saved = epoch

    def close(self) -> None:
        """Waits for pending saves."""
        if self.ckpt is not None:
            self.ckpt.close()


def _heterogeneity(config, parts, num_classes) -> None:
    """Prints sigma_f^* and zeta^2 of the split (ALGORITHMS.md §2.8).

    Both need the minimisers of f and every f_i, so they are measured on the l2
    softmax (multinomial logistic) regression of the same data when the run's own
    objective is not convex; the printed line says which.
    """
    # float64 throughout: the n + 1 L-BFGS solves need gradients accurate to ~1e-9.
    with jax.enable_x64(True):
        if config.objective.name in experiment.CONVEX_OBJECTIVES:
            loss = experiment.objective(config).loss
            init, what = np.zeros(parts["x"].shape[2:]), ""
        else:
            features = int(np.prod(parts["x"].shape[2:]))
            net = nets.linear(features, num_classes, param_dtype=np.float64)
            loss = objectives.softmax_cross_entropy(net.apply, reg=0.01).loss
            init, what = net.init(jax.random.key(0)), " (measured on l2 softmax regression)"
        try:
            report = heterogeneity.report(loss, parts, init)
        except RuntimeError as error:  # A local solve that stalls must not end the run.
            print(f"heterogeneity{what}: not measured, {error}")
            return
    print(
        f"heterogeneity{what}: sigma_f* = {report['sigma_f_star']:.4g}, "
        f"zeta^2 = {report['zeta_sq']:.4g}"
    )


class _RowsInto:
    """A ``write(json_line)`` target that adds rows to the tracker's ``metrics.jsonl``."""

    def __init__(self, metrics: tracking.MetricsFile | None):
        self._metrics = metrics

    def write(self, line: str) -> None:
        if self._metrics is not None:  # None on processes other than 0.
            self._metrics.rows.append(json.loads(line))


def _runs(config: ml_collections.ConfigDict) -> set[tuple[str, str]]:
    """The ``(topology or "centralized", method)`` pairs a config runs."""
    return {
        (topo if experiment.sampler_of(config, name)[1] else "centralized", name)
        for topo in config.topologies
        for name in config.algorithms
    }


def _run(config: ml_collections.ConfigDict, workdir: epath.Path, dtype: np.dtype) -> dict[str, Any]:
    data, description = experiment.load_data(config)
    test_parts = None
    if config.data.get("test_fraction"):
        data, test = datasets.train_test_split(
            data, test_fraction=config.data.test_fraction, seed=config.seed
        )
        test_parts = partition.partition_iid(test, config.n_agents, seed=config.seed)
        test_parts = {"x": test_parts["x"].astype(dtype), "y": test_parts["y"]}
    parts = experiment.split_over_agents(config, data)
    parts = {"x": parts["x"].astype(dtype), "y": parts["y"]}
    n, m = parts["x"].shape[:2]
    dim = parts["x"].shape[2] if parts["x"].ndim == 3 else None
    num_classes = int(data["y"].max()) + 1
    net = task = None
    if model_tasks.uses_nnx(config):  # ResNet / LeNet: model state, keyed (augmented) loss.
        net, task, obj = model_tasks.build(config, parts["x"].shape[2:], num_classes)
    else:
        if config.objective.name == "softmax":
            net = experiment.model(config, parts["x"].shape[2:], num_classes)
        obj = experiment.objective(config, net, num_classes)
    metric = config.get("plot_metric", "dist_to_opt")
    target = config.get("target_error")
    # Epochs over which the summary fits log(metric) ~ rate * log(epoch).
    window = tuple(config.get("rate_window") or (config.num_epochs // 2, config.num_epochs))
    print(f"data: {description}; {n} agents x {m} samples, {config.data.partition} split")
    # Bad data fails here, once, on the host and before anything compiles: labels
    # outside the objective's domain, then (shard_agents) NaN/Inf, naming agent and sample.
    for split in (parts, test_parts):
        if split is not None and obj.check_data is not None:
            obj.check_data(split)
    agent_mesh = mesh.make_agent_mesh(n, config.n_devices or None)
    shard = mesh.shard_agents(parts, agent_mesh)
    test_shard = None if test_parts is None else mesh.shard_agents(test_parts, agent_mesh)
    if config.objective.name in experiment.CONVEX_OBJECTIVES:
        solution = optimum.minimize(
            obj.loss, parts, np.zeros(dim, dtype), gtol=config.get("solver_gtol", 1e-11)
        )
        x_star, f_star = solution.x_star, solution.f_star
        print(
            f"objective: {obj.name}, f* = {f_star:.10f} (float64 L-BFGS + "
            f"{solution.newton_steps} Newton steps, |grad f(x*)|_inf = {solution.grad_inf:.2g})"
        )
    else:
        x_star = f_star = None
        if metric in ("dist_to_opt", "gap"):
            raise ValueError(
                f"plot_metric={metric!r} needs x*, which is not computed for the nonconvex "
                f"objective {config.objective.name!r}; use 'grad_norm_sq' or 'loss'."
            )
        print(f"objective: {obj.name} (nonconvex: no x*)")

    if config.get("report_heterogeneity"):
        _heterogeneity(config, parts, num_classes)

    keys = run_keys(config.seed)
    # Every agent starts from the same point, built on device already sharded.
    init_fn = _linear_init(dim, dtype) if net is None else net.init
    initial_params = mesh.agent_init(init_fn, agent_mesh, n)
    # Seeds and step sizes as a runs axis of one compiled program (launch.sweeps).
    many_runs, band_lines = sweeps.num_runs(config) > 1, []

    histories: dict[tuple[str, str], list[dict[str, float]]] = {}
    summary: list[dict[str, Any]] = []
    metrics_path = workdir / "metrics.jsonl"
    # Only process 0 writes files; every process computes (multi-process runs).
    lead = jax.process_index() == 0
    bands_path = workdir / "bands.jsonl"
    # Sweeps write every run's rows (tagged run / seed / step) into metrics.jsonl through
    # the tracker's file, and the bands into bands.jsonl, written whole at the end.
    bands_log = io.StringIO()
    with tracking.Tracker(workdir, config, _runs(config), write=lead) as tracker:
        log = _RowsInto(tracker.metrics)
        for topo in config.topologies:
            comm_op, gap = experiment.mixing_operator(config, topo)
            # Directed graphs give (R, C); metrics only use the server mean of either.
            server = comm_op[0] if isinstance(comm_op, tuple) else comm_op
            print(f"topology: {topo}, spectral gap {gap:.4f}, gossip path {server.path}")
            # Runs vmapped in one program evaluate each run's own x̄: convolutions then
            # run in the patch form on XLA:CPU (make_evaluator's lower_convs).
            evaluate = metrics.make_evaluator(
                obj.loss, server, accuracy_fn=obj.accuracy, x_star=x_star, f_star=f_star,
                lower_convs=many_runs,
            )  # fmt: skip
            if config.get("agent_metrics"):
                evaluate = agent_metrics.with_agent_metrics(
                    evaluate, obj.loss, server, accuracy_fn=obj.accuracy
                )
            for name in config.algorithms:
                sampler_name, decentralized = experiment.sampler_of(config, name)
                label = topo if decentralized else "centralized"
                if (label, name) in histories:
                    continue
                sampler = sampling.make_sampler(sampler_name, m, config.batch_size)
                lr = experiment.learning_rate(config, sampler.steps_per_epoch)
                loss_fn = experiment.agent_loss(config, obj.loss if task is None else task)

                def make(cfg, lr, name=name, loss_fn=loss_fn, comm_op=comm_op):
                    return experiment.build_algorithm(cfg, name, loss_fn, comm_op, lr)

                # e.g. decentralized GT given the federated methods' budget of rounds.
                epochs = config.get("algorithm_epochs", {}).get(name, config.num_epochs)
                runs_tag = f"__runs{sweeps.num_runs(config, name)}" if many_runs else ""
                run_dir = workdir / "checkpoints" / workdir_lib.run_name(label, name + runs_tag)
                # A relabelled operator (config.relabel): the runner puts the agents'
                # data in its order and reports them in the user's.
                order = server.order if decentralized and not many_runs else None
                saver = _RunCheckpoints(
                    run_dir, config.get("checkpoint_every", 0), epochs, order=order
                )
                with tqdm.tqdm(
                    total=epochs, desc=f"{label}/{name}", unit="epoch", leave=False
                ) as bar:
                    train_kwargs = dict(
                        log_every=min(config.log_every, epochs),
                        test_data=test_shard,
                        progress=lambda done, bar=bar: bar.update(done - bar.n),
                        on_chunk=saver.on_chunk,
                    )
                    if many_runs:
                        runs_grid, run_histories = sweeps.train_method(
                            config, name, make, lr, sampler, agent_mesh, evaluate, init_fn, n,
                            run_keys, data=shard, num_epochs=epochs, resume=saver.resume,
                            **train_kwargs,
                        )  # fmt: skip
                    else:
                        runner = loop.Runner(
                            make(config, lr), sampler, agent_mesh, evaluate, order=order
                        )
                        data, params = shard, initial_params(keys.model)
                        if order is not None:
                            data = runner.shard_agents(parts)
                            params = runner.shard_agents(params, what="params")
                            if test_parts is not None:
                                train_kwargs["test_data"] = runner.shard_agents(test_parts)
                        state = runner.init(params, data, keys.state)
                        state, resumed = saver.resume(state)
                        state, history = loop.train(
                            runner, state, data, keys.train, epochs, history=resumed,
                            **train_kwargs,
                        )  # fmt: skip
                        del state
                saver.close()
                labels = {"topology": label, "algorithm": name}
                if many_runs:
                    history, line = sweeps.record(
                        (log, bands_log), labels, runs_grid, run_histories, metric
                    )
                    band_lines.append(line)
                private_runs.annotate(config, name, sampler, history)
                histories[(label, name)] = history
                if not many_runs:  # Sweeps' rows went in through sweeps.record above.
                    tracker.log_history(label, name, history)
                row = {"topology": label, "algorithm": name, **history[-1]}
                row["rate"] = rates.history_rate(history, metric, *window)
                if target is not None:
                    row["bytes_to_target"] = rates.bytes_to_reach(history, metric, target)
                    if "sim_time" in row:
                        row["time_to_target"] = rates.bytes_to_reach(
                            history, metric, target, x="sim_time"
                        )
                summary.append(row)

    table = _format_table(summary, metric, target)
    table += (
        f"\nrate: fitted slope of log({metric}) against log(epoch) over epochs "
        f"{window[0]}..{window[1]}\ncompile s / run s: seconds compiling the run's chunks "
        "(ahead of time) / running them, apart"
    )
    if target is not None:
        table += f"\nMB@target: MB one agent sent until {metric} <= {target:g} (inf: never)"
    if summary and all("sim_time" in r for r in summary):
        table += "\nsim time: simulated wall-clock (ticks; core.asynchrony) at the end" + (
            f", T@target: until {metric} <= {target:g}" if target is not None else ""
        )
    if band_lines:
        table += (
            "\nmean +- std over seeds (each method's runs in one program; every run in "
            "metrics.jsonl, bands in bands.jsonl):\n" + "\n".join(band_lines)
        )
    table += _agent_table(summary)
    if config.get("privacy"):
        table += private_runs.summary_lines(summary, config.privacy.delta)
    print(f"\nafter {config.num_epochs} epochs ({description}):\n{table}")
    summary_path = workdir / "summary.txt"
    plot_path = workdir / f"{metric}_vs_epochs.png"
    bytes_path = workdir / f"{metric}_vs_bytes.png"
    if lead:
        workdir_lib.write_text(summary_path, table + "\n")
        if many_runs:
            workdir_lib.write_text(bands_path, bands_log.getvalue())
        plotting.plot_histories(histories, metric, plot_path, title=description)
        plotting.plot_histories(histories, metric, bytes_path, x="bytes_sent", title=description)
        if config.get("privacy"):
            private_runs.plot(summary, workdir / "accuracy_vs_epsilon.png")
        print(f"wrote {metrics_path}, {summary_path}, {plot_path}, {bytes_path}")
        if all(_has_key(runs, "sim_time") for runs in histories.values()):
            time_path = workdir / f"{metric}_vs_sim_time.png"
            plotting.plot_histories(histories, metric, time_path, x="sim_time", title=description)
            print(f"wrote {time_path}")
    return {
        "histories": histories,
        "summary": summary,
        "metric": metric,
        "x_star": x_star,
        "f_star": f_star,
        "files": {
            "metrics": str(metrics_path),
            **({"bands": str(bands_path)} if many_runs else {}),
            "summary": str(summary_path),
            "plot": str(plot_path),
            "plot_bytes": str(bytes_path),
        },
    }
