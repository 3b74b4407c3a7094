"""Comparison 3: DSGD as a per-agent PyTorch loop against decentjax.

Command (after ``bash launch/benchmarks/setup_peers.sh torch``)::

  python -m decentjax.launch.benchmarks --only torch_loop [--reps 5]

The DSGD MLP workload of the equal-work comparison (MLP 784-256-10, batch 32 per agent,
SGD step 0.05, Metropolis–Hastings ring and exponential graphs), n = 16 and 64 agents,
written the way most research code and decentralizepy write it: a list of n
``torch.nn.Module`` s and n optimizers, a Python loop over agents for
forward/backward/step, then a loop that sets every agent's parameters to the weighted sum
of its neighbours' (:mod:`launch.benchmarks.torch_loop_worker`, run under the ``torch``
venv's Python as a subprocess that prints JSON). decentjax runs ``algos.dsgd`` through
``core.loop.Runner`` on the same sizes. Ratio = PyTorch time / decentjax time per step;
target ≥ 20 at n = 64. decentjax uses XLA's CPU thread pool (all cores); PyTorch is run
with 1 thread and with all cores and keeps the faster (its OpenMP pool degrades badly
when the machine is oversubscribed). The PyTorch side is timed over at most 3 chunks
of ``steps_per_epoch`` steps (it is slow).

When the ``torch`` venv is absent (or its set-up failed) the rows say so, with the
reason ``setup_peers.sh`` recorded.
"""

from __future__ import annotations

import numpy as np

from decentjax.launch.benchmarks import report, timing, workloads

TITLE = "Per-agent PyTorch loop (list of n models) vs decentjax: DSGD on the MLP"


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(ns=[4], hidden=32, batch=4, samples=16, steps_per_epoch=2, epochs=1)
    return dict(ns=[16, 64], hidden=256, batch=32, samples=256, steps_per_epoch=10, epochs=2)


def neighbours(w: np.ndarray) -> list[list[tuple[int, float]]]:
    """Row ``i`` of ``W`` as ``[(j, w_ij), ...]`` over its nonzeros (self included)."""
    return [[(int(j), float(w[i, j])) for j in np.flatnonzero(w[i])] for i in range(len(w))]


def run(settings: report.Settings) -> report.Result:
    """Times decentjax DSGD and, if its venv exists, the PyTorch per-agent loop."""
    s = _sizes(settings.quick)
    result = report.Result("torch_loop", TITLE)
    python, status = timing.peer_python(settings.peers_dir, "torch")
    result.notes.append(f"torch venv: {status}")
    for n in s["ns"]:
        for graph in workloads.GRAPHS[:1] if settings.quick else workloads.GRAPHS:
            work = workloads.mlp_workload(
                "dsgd",
                n,
                graph=graph,
                batch=s["batch"],
                hidden=s["hidden"],
                samples=s["samples"],
                steps_per_epoch=s["steps_per_epoch"],
                n_devices=settings.devices,
            )
            ours = timing.time_workload(work, num_epochs=s["epochs"], reps=settings.reps)
            entry = {"n_agents": n, "graph": graph, "decentjax": ours, "path": work.gossip.path}
            peer, note = None, ""
            if python is None:
                note = "PyTorch not run: " + status
            else:
                payload = dict(
                    n=n,
                    hidden=s["hidden"],
                    batch=s["batch"],
                    samples=s["samples"],
                    lr=0.05,
                    neighbours=neighbours(work.gossip.matrix),
                    steps=s["steps_per_epoch"],
                    reps=min(settings.reps, 3),
                )
                try:
                    out = timing.run_peer_best_threads(
                        python, "torch_loop_worker.py", payload, "step_s", timeout=1200
                    )
                    entry["torch"] = out
                    peer = out["step_s"]
                except timing.PeerError as e:
                    note = f"PyTorch failed: {e}"
            result.measurements.append(entry)
            result.rows.append(
                report.Row(
                    f"DSGD {graph} n={n}",
                    ours["step_s"],
                    peer,
                    "s/step",
                    None if peer is None else peer / ours["step_s"],
                    ">= 20" if n == 64 else "",
                    note=note,
                )
            )
    result.notes.append(
        f"MLP 784-{s['hidden']}-10, batch {s['batch']}/agent; decentjax {settings.reps} chunks "
        f"of {s['epochs'] * s['steps_per_epoch']} steps, PyTorch {min(settings.reps, 3)} of "
        f"{s['steps_per_epoch']} (best of 1 thread and all cores); ratio = PyTorch / decentjax "
        "per step."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Bars of the time per step, decentjax and PyTorch, per case."""
    fig, (ax,) = report.figure(width=6.5)
    entries = result.measurements
    labels = [f"{e['graph']} n={e['n_agents']}" for e in entries]
    pos = np.arange(len(entries))
    ax.bar(pos - 0.2, [e["decentjax"]["step_s"] * 1e3 for e in entries], 0.4, label="decentjax")
    torch_ms = [e["torch"]["step_s"] * 1e3 if "torch" in e else 0.0 for e in entries]
    ax.bar(pos + 0.2, torch_ms, 0.4, label="PyTorch per-agent loop")
    ax.set_xticks(pos, labels)
    ax.set_ylabel("ms per DSGD step (median)")
    ax.set_title("DSGD MLP: decentjax vs per-agent PyTorch")
    ax.legend()
    return [report.save(fig, out_dir, "torch_loop")]
