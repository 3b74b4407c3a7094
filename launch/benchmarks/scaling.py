"""Comparison 5: scaling with the number of agents, n = 16 .. 16384.

Command::

  python -m decentjax.launch.benchmarks --only scaling [--reps 3]

D-RR on ℓ2 logistic regression (d = 785, m = 8 samples per agent, batch 1, lazy
Metropolis weights) through ``core.loop.Runner`` (no-op evaluator), for three kinds of
gossip:

* ``ring``: the ring through the shift path (3 offsets: O(1) rows per agent);
* ``exponential``: the exponential graph through the shift path (2 log2 n offsets);
* ``dense``: the exponential graph's ``W`` through the dense path (all-gather and this
  device's rows of ``W``: O(n) per agent), up to n = 4096: at 16384 ``W`` alone is 1 GiB
  in float32 and one step is 2 n^2 d = 0.4 TFLOP.

For each: time per step (median of ``--reps`` chunks), time per agent-step and
agent-steps per second, compile time of the chunk, and peak memory: XLA's figure for the
compiled chunk from ``memory_analysis()`` (arguments + outputs + temporaries − donated
aliases; the CPU backend keeps no device memory statistics). The host time to build the
gossip operator is recorded too. Target: ring time per agent-step flat from n = 64 to
n = 16384 (read as: the ratio of the two within 1.5).
"""

from __future__ import annotations

import time

import numpy as np

from decentjax.launch.benchmarks import report, timing, workloads

TITLE = "Scaling of D-RR (logistic regression) with n_agents: time, memory, compile"
KINDS = {
    "ring": ("ring", "shift"),
    "exponential": ("exponential", "shift"),
    "dense": ("exponential", "dense"),
}
DENSE_MAX = 4096


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(ns=[8, 16], samples=2, budget=2**8)
    return dict(ns=[16, 64, 256, 1024, 4096, 16384], samples=8, budget=2**18)


def run(settings: report.Settings) -> report.Result:
    """Times every (gossip kind, n) and records memory and compile time."""
    s = _sizes(settings.quick)
    m = s["samples"]
    result = report.Result("scaling", TITLE)
    per_agent = {}
    for n in s["ns"]:
        data = workloads.logistic_data(n, m)
        for kind, (graph, path) in KINDS.items():
            if kind == "dense" and n > DENSE_MAX:
                continue
            start = time.perf_counter()
            w = workloads.mixing_matrix(graph, n, lazy=True)
            work = workloads.logistic_workload(
                "d_rr", data, w, path=path, n_devices=settings.devices
            )
            build_s = time.perf_counter() - start
            del w
            # About the same number of agent-steps per chunk at every n (a dense step
            # costs O(n) per agent, so it gets fewer).
            cost = n * m * (max(1, n // 64) if path == "dense" else 1)
            epochs = max(1, s["budget"] // cost)
            timed = timing.time_workload(work, num_epochs=epochs, reps=settings.reps, memory=True)
            entry = {
                "kind": kind,
                "graph": graph,
                "path": path,
                "n_agents": n,
                "samples": m,
                "offsets": len(work.gossip.offsets),
                "build_s": build_s,
                **timed,
            }
            entry["agent_step_s"] = timed["step_s"] / n
            result.measurements.append(entry)
            per_agent[(kind, n)] = entry["agent_step_s"]
            del work
    ns = s["ns"]
    lo, hi = (ns[0], ns[-1]) if settings.quick else (64, ns[-1])
    for kind in ("ring", "exponential"):
        flat = per_agent[(kind, hi)] / per_agent[(kind, lo)]
        result.rows.append(
            report.Row(
                f"{kind}: time per agent-step n={hi} / n={lo}",
                per_agent[(kind, hi)],
                per_agent[(kind, lo)],
                "s/agent-step",
                flat,
                "<= 1.5" if kind == "ring" else "",
                note="flat = 1",
            )
        )
    dense_n = max(n for n in ns if n <= DENSE_MAX)
    result.rows.append(
        report.Row(
            f"dense / exponential-shift step, n={dense_n}",
            per_agent[("dense", dense_n)] * dense_n,
            per_agent[("exponential", dense_n)] * dense_n,
            "s/step",
            per_agent[("dense", dense_n)] / per_agent[("exponential", dense_n)],
            note="above 1: shift path wins",
        )
    )
    big = [e for e in result.measurements if e["n_agents"] == ns[-1] and e["kind"] == "ring"][0]
    result.rows.append(
        report.Row(
            f"compile of a ring chunk, n={ns[-1]}",
            big["compile_s"],
            None,
            "s",
            big["compile_s"],
            note=f"peak {(big['peak_bytes'] or 0) / 2**20:.0f} MiB",
        )
    )
    result.notes.append(
        f"d=785, m={m}, batch 1, {settings.reps} reps; time per agent-step = step time / n."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Four panels against n: step time, time per agent-step, peak memory, compile time."""
    fig, axes = report.figure(ncols=2, nrows=2)
    panels = [
        ("step_s", "s per step"),
        ("agent_step_s", "s per agent-step"),
        ("peak_bytes", "peak memory (MiB, XLA memory_analysis)"),
        ("compile_s", "compile time of a chunk (s)"),
    ]
    for ax, (key, label) in zip(axes, panels, strict=True):
        for kind in KINDS:
            pts = [
                (e["n_agents"], e[key])
                for e in result.measurements
                if e["kind"] == kind and e.get(key) is not None
            ]
            if not pts:
                continue
            ns, vals = zip(*pts, strict=True)
            vals = np.asarray(vals, float) / (2**20 if key == "peak_bytes" else 1)
            ax.plot(ns, vals, "o-", label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("agents n")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("D-RR, logistic regression d=785: scaling with n")
    return [report.save(fig, out_dir, "scaling")]
