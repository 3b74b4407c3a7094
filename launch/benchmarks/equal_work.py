"""Comparison 1, the equal-work limit: a decentralized step against one centralized step.

Command::

  python -m launch.benchmarks --only equal_work [--reps 5]

One DSGD step and one gradient-tracking (DSGT) step of 64 agents, each with its own MLP
784-256-10 (softmax cross-entropy) and a batch of 32, over the ring and the exponential
graph (Metropolis–Hastings weights), against one step of plain minibatch SGD on **one**
MLP of the same shape with the whole batch 64 x 32 = 2048: the same gradient FLOPs, the
physical limit a decentralized step can approach. The ratio decentralized / centralized
is reported against the target ≤ 1.3.

All runs go through ``core.loop.Runner`` (a chunk of epochs is one compiled
``jit(shard_map(scan(scan(step))))``, state donated) with a no-op evaluator, so only the
steps are timed; time per step = chunk time / steps, the median of ``--reps`` chunks
after a warm-up call that compiles. To show where the time goes, the table also has

* the centralized method in the 64-agent layout (``algos.centralized``: 64 per-agent
  gradients of one model, averaged by the server mean): the cost of the per-agent
  layout alone, without gossip;
* each graph through the other gossip path (``"dense"`` all-gather + W rows against the
  ``"shift"`` neighbour exchange that ``"auto"`` picks).

The compile time of the chunk (target < 20 s for the MLP) is a row of its own.
"""

from __future__ import annotations

from core import comm
from launch.benchmarks import report, timing, workloads

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

    def measure(label: str, method: str, agents: int, **kw) -> dict:
        batch = s["batch"] * (n // agents)
        samples = s["samples"] * (n // agents)
        work = workloads.mlp_workload(
            method, agents, batch=batch, samples=samples, n_devices=settings.devices, **common, **kw
        )
        timed = timing.time_workload(work, num_epochs=s["epochs"], reps=settings.reps)
        path = work.gossip.path if method != "centralized" else None
        entry = {"case": label, "method": method, "n_agents": agents, "batch": batch}
        entry |= {"graph": kw.get("graph"), "path": path, **timed}
        result.measurements.append(entry)
        return entry

    limit = measure(f"centralized, 1 model, batch {n * s['batch']}", "centralized", 1)
    result.rows.append(
        report.Row(
            f"centralized 1 model, batch {n}x{s['batch']}",
            limit["step_s"],
            None,
            "s/step",
            1.0,
            note="the limit",
        )
    )
    if not settings.quick:
        layout = measure(f"centralized, {n}-agent layout", "centralized", n)
        result.rows.append(
            report.Row(
                f"centralized {n}-agent layout",
                layout["step_s"],
                limit["step_s"],
                "s/step",
                layout["step_s"] / limit["step_s"],
                note="no gossip",
            )
        )
    for graph in workloads.GRAPHS:
        default = comm.gossip(workloads.mixing_matrix(graph, n)).path
        other = {"shift": "dense", "dense": "shift"}[default]
        for method in ("dsgd", "gt"):
            for path in [default] if settings.quick else [default, other]:
                entry = measure(f"{method} {graph} {path}", method, n, graph=graph, path=path)
                name = {"dsgd": "DSGD", "gt": "GT (DSGT)"}[method]
                result.rows.append(
                    report.Row(
                        f"{name} {graph} n={n}",
                        entry["step_s"],
                        limit["step_s"],
                        "s/step",
                        entry["step_s"] / limit["step_s"],
                        "<= 1.3",
                        note=f"{path} path" + (", the default" if path == default else ""),
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
    fig, (ax,) = report.figure(width=7.5, height=4.0)
    cases = result.measurements
    labels = [e["case"] for e in cases]
    values = [e["step_s"] * 1e3 for e in cases]
    colors = ["tab:gray" if e["method"] == "centralized" else "tab:blue" for e in cases]
    ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    ax.set_xlabel("ms per step (median)")
    ax.set_title("Equal work: decentralized vs centralized step")
    return [report.save(fig, out_dir, "equal_work")]
