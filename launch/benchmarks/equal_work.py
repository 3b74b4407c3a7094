"""Comparison 1, the equal-work limit: a decentralized step against one centralized step.

Command::

  python -m decentjax.launch.benchmarks --only equal_work [--reps 5]

One DSGD step and one gradient-tracking (DSGT) step of 64 agents, each with its own MLP
784-256-10 (softmax cross-entropy) and a batch of 32, over the ring and the exponential
graph (Metropolis–Hastings weights), against one step of plain minibatch SGD on **one**
MLP of the same shape with the whole batch 64 x 32 = 2048: the same gradient FLOPs, the
physical limit a decentralized step can approach. The ratio decentralized / centralized
is reported against the target ≤ 1.3.

All runs go through ``core.loop.Runner`` (a chunk of epochs is one compiled
``jit(shard_map(scan(scan(step))))``, state donated) with a no-op evaluator, so only the
steps are timed; time per step = chunk time / steps, the median of ``--reps`` chunks
after a warm-up call that compiles. The repetitions are interleaved (every case once per
round) and each ratio is the median of the per-round ratios, so load from elsewhere on
a shared machine hits both sides of a ratio alike. To show where the time goes, the table also has

* the centralized method in the 64-agent layout (``algos.centralized``: one gradient
  of the pooled batch at the common iterate, the server mean, and the iterate kept on
  all 64 agents): the cost of the per-agent layout alone, without gossip;
* one gossip of the 64 models on the ring with no gradient at all (``method="gossip"``
  of :func:`~launch.benchmarks.workloads.mlp_workload`): the memory traffic of mixing
  64 copies of the MLP (51 MB of first-layer weights), which the centralized step does
  not have and which on a CPU bounds how close a decentralized step can get;
* each graph through the other gossip path (``"dense"`` all-gather + W rows against the
  ``"shift"`` neighbour exchange that ``"auto"`` picks).

The compile time of the chunk (target < 20 s for the MLP) is a row of its own.
"""

from __future__ import annotations

from decentjax.core import comm
from decentjax.launch.benchmarks import report, timing, workloads

TITLE = "Equal-work limit: decentralized MLP step vs one centralized step on the same batch"


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(n=4, hidden=32, batch=4, samples=16, steps_per_epoch=2, epochs=1)
    return dict(n=64, hidden=256, batch=32, samples=256, steps_per_epoch=10, epochs=2)


def run(settings: report.Settings) -> report.Result:
    """Times the centralized limit, DSGD and DSGT (see the module docstring)."""
    s = _sizes(settings.quick)
    n = s["n"]
    result = report.Result("equal_work", TITLE)
    common = dict(hidden=s["hidden"], steps_per_epoch=s["steps_per_epoch"])

    # (label, row name, note, target, method, agents, graph, path)
    cases = [
        (
            "limit",
            f"centralized 1 model, batch {n}x{s['batch']}",
            "the limit",
            "",
            "centralized",
            1,
            None,
            None,
        )
    ]
    if not settings.quick:
        cases.append(
            (
                "layout",
                f"centralized {n}-agent layout",
                "no gossip",
                "",
                "centralized",
                n,
                None,
                None,
            )
        )
        cases.append(
            (
                "gossip ring",
                f"gossip alone, ring n={n}",
                "no gradient: one mix of the 64 MLPs",
                "",
                "gossip",
                n,
                "ring",
                "shift",
            )
        )
    for graph in workloads.GRAPHS:
        # The path mix takes for the MLP's first layer (the bulk of the bytes).
        op = comm.gossip(workloads.mixing_matrix(graph, n))
        default = op.path_on(settings.devices, n * 784 * s["hidden"] * 4)
        other = {"shift": "dense", "dense": "shift"}[default]
        # --quick: one method per graph, the default path only (few compilations).
        methods = (
            [{"ring": "dsgd", "exponential": "gt"}[graph]] if settings.quick else ["dsgd", "gt"]
        )
        for method in methods:
            for path in [default] if settings.quick else [default, other]:
                name = {"dsgd": "DSGD", "gt": "GT (DSGT)"}[method]
                note = f"{path} path" + (", the default" if path == default else "")
                cases.append(
                    (
                        f"{method} {graph} {path}",
                        f"{name} {graph} n={n}",
                        note,
                        "<= 1.3",
                        method,
                        n,
                        graph,
                        path,
                    )
                )
    timers = []
    for label, _, _, _, method, agents, graph, path in cases:
        batch, samples = s["batch"] * (n // agents), s["samples"] * (n // agents)
        extra = {} if graph is None else {"graph": graph, "path": path}
        work = workloads.mlp_workload(
            method,
            agents,
            batch=batch,
            samples=samples,
            n_devices=settings.devices,
            **common,
            **extra,
        )
        first, one_chunk = timing.chunk_timer(work, s["epochs"])
        timers.append(one_chunk)
        entry = {
            "case": label,
            "method": method,
            "n_agents": agents,
            "batch": batch,
            "graph": graph,
            "path": None if graph is None else work.gossip.path,
            "steps": s["epochs"] * work.steps_per_epoch,
            "first_call_s": first,
        }
        result.measurements.append(entry)
    # Interleaved repetitions: every case once per round, so each ratio pairs chunks
    # timed close together (load from elsewhere on the machine hits both alike).
    for entry in result.measurements:
        entry["step_s_all"] = []
    for _ in range(settings.reps):
        for entry, one_chunk in zip(result.measurements, timers, strict=True):
            entry["step_s_all"].append(one_chunk() / entry["steps"])
    limit = result.measurements[0]
    for entry, (_, row, note, target, *_) in zip(result.measurements, cases, strict=True):
        entry["step_s"] = timing.median(entry["step_s_all"])
        entry["compile_s"] = max(entry["first_call_s"] - entry["step_s"] * entry["steps"], 0.0)
        pairs = [t / c for t, c in zip(entry["step_s_all"], limit["step_s_all"], strict=True)]
        entry["paired_ratio"] = timing.median(pairs)
        result.rows.append(
            report.Row(
                row,
                entry["step_s"],
                None if entry is limit else limit["step_s"],
                "s/step",
                entry["paired_ratio"],
                target,
                note=note,
            )
        )
    worst = max(result.measurements, key=lambda e: e["compile_s"])
    result.rows.append(
        report.Row(
            f"compile of an MLP chunk ({worst['case']}, slowest)",
            worst["compile_s"],
            None,
            "s",
            worst["compile_s"],
            "< 20",
        )
    )
    result.notes.append(
        f"n={n} agents, MLP 784-{s['hidden']}-10, batch {s['batch']}/agent, "
        f"{s['epochs'] * s['steps_per_epoch']} steps per timed chunk, {settings.reps} reps; "
        "ratio = decentralized step / centralized step (lower is better)."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Bar chart of the time per step of every case."""
    return step_bars(result, out_dir, "equal_work", "Equal work: decentralized vs centralized step")


def step_bars(result: report.Result, out_dir: str, name: str, title: str) -> list[str]:
    """Horizontal bars of every measured case's ``step_s`` (centralized ones in grey)."""
    fig, (ax,) = report.figure(width=7.5, height=4.0)
    cases = result.measurements
    labels = [e["case"] for e in cases]
    values = [e["step_s"] * 1e3 for e in cases]
    colors = ["tab:gray" if e["method"] == "centralized" else "tab:blue" for e in cases]
    ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    ax.set_xlabel("ms per step (median)")
    ax.set_title(title)
    return [report.save(fig, out_dir, name)]
