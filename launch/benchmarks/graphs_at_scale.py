"""Comparison 7: graphs at scale: 100,000 agents, 1,000,000 on a ring, halo bytes.

Command::

  python -m decentjax.launch.benchmarks --only graphs [--reps 3]

D-RR on ℓ2 logistic regression (d = 100, m = 32 samples per agent, batch 1, lazy
Metropolis–Hastings weights) through ``core.loop.Runner`` on one CPU device:

* ``ring`` and ``rgg`` (random geometric graph in the unit square, mean degree ≈ 8, each
  small component linked to its nearest node of the giant one so that ``W`` mixes,
  relabelled by reverse Cuthill–McKee: the halo path) at n = 1,024 and n = 100,000:
  the host time to build the graph, ``W`` and the operator (all ``scipy.sparse``,
  O(nnz)), the time per agent-step, and the process's peak resident memory;
* ``ring`` at n = 1,000,000, d = 10: the cost of one epoch (build, compile, run, memory);
* the compile time of a ring chunk (d = 10, m = 4) at n = 1,024 and n = 65,536;
* on 8 fake CPU devices (a subprocess), the bytes each device sends per gossip of the
  relabelled random geometric graph at n = 100,000, d = 100, float32, read from the
  compiled program's collective-permutes, against the all-gather's.

Targets (issue 15): builds < 30 s, peak memory < 8 GB, time per agent-step at n = 100,000
within 2x of n = 1,024, halo bytes ≤ 2 × halo rows × d × 4, compile time within ±30%.
The graphs are built here with ``scipy.sparse`` / ``scipy.spatial.cKDTree``.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time

import jax
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from decentjax.core import comm
from decentjax.launch.benchmarks import report, timing, workloads

TITLE = "Graphs at scale: D-RR with 100,000 agents, a 1,000,000-agent ring, halo bytes"


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(small=64, big=512, huge=1024, d=8, m=4, huge_d=4, compile_ns=(64, 256))
    return dict(
        small=1024, big=100_000, huge=1_000_000, d=100, m=32, huge_d=10, compile_ns=(1024, 65536)
    )


def ring(n: int) -> sp.csr_array:
    """The ring's adjacency, sparse."""
    i = np.arange(n)
    a = sp.coo_array((np.ones(n, np.int8), (i, (i + 1) % n)), shape=(n, n))
    return sp.csr_array(((a + a.T) > 0).astype(np.int8))


def random_geometric(n: int, degree: float = 8.0, seed: int = 0) -> sp.csr_array:
    """Points in the unit square joined within radius ``sqrt(degree / (pi n))``, connected.

    Below the connectivity threshold (mean degree ~ log n) the graph has small
    components; each is joined to the giant component by one edge to its nearest node.
    """
    points = np.random.default_rng(seed).random((n, 2))
    pairs = cKDTree(points).query_pairs(np.sqrt(degree / (np.pi * n)), output_type="ndarray")
    a = sp.coo_array((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    a = sp.csr_array(((a + a.T) > 0).astype(np.int8))
    k, labels = csgraph.connected_components(a, directed=False)
    if k > 1:
        giant = np.argmax(np.bincount(labels))
        members = np.flatnonzero(labels == giant)
        tree = cKDTree(points[members])
        others = np.flatnonzero(labels != giant)
        # One representative per small component: its first node.
        _, first = np.unique(labels[others], return_index=True)
        src = others[first]
        _, nearest = tree.query(points[src])
        dst = members[nearest]
        extra = sp.coo_array((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
        a = sp.csr_array(((a + extra + extra.T) > 0).astype(np.int8))
    return a


def lazy_metropolis(a: sp.csr_array) -> sp.csr_array:
    """``(I + W) / 2`` for Metropolis–Hastings ``w_ij = 1 / (1 + max(d_i, d_j))``, O(nnz)."""
    n = a.shape[0]
    deg = np.asarray(a.sum(axis=1)).ravel()
    coo = sp.coo_array(a)
    vals = 1.0 / (1.0 + np.maximum(deg[coo.row], deg[coo.col]))
    w = sp.csr_array((vals, (coo.row, coo.col)), shape=(n, n))
    w = w + sp.diags_array(1.0 - np.asarray(w.sum(axis=1)).ravel())
    return sp.csr_array((sp.eye_array(n) + w) / 2.0)


GRAPHS = {"ring": ring, "rgg": random_geometric}


def _peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _setup(graph: str, n: int, d: int, m: int) -> tuple[dict, workloads.Workload]:
    """Builds D-RR over ``graph`` with ``n`` agents on one device, timing the host side."""
    start = time.perf_counter()
    w = lazy_metropolis(GRAPHS[graph](n))
    graph_s = time.perf_counter() - start
    start = time.perf_counter()
    op = comm.gossip(w, order="rcm" if graph == "rgg" else None)
    operator_s = time.perf_counter() - start
    del w
    start = time.perf_counter()
    work = workloads.logistic_workload("d_rr", workloads.logistic_data(n, m, d), op)
    setup_s = time.perf_counter() - start
    entry = {
        "graph": graph,
        "n_agents": n,
        "d": d,
        "samples": m,
        "graph_and_weights_s": graph_s,
        "operator_s": operator_s,
        "build_s": graph_s + operator_s,
        "data_and_runner_s": setup_s,
        "path": op.path,
        "band": list(op.band),
        "neighbour_slots": op.neighbours[0].host.shape[1],
        "describe": op.describe(1, d * 4),
    }
    return entry, work


def _paired(graph: str, s: dict, reps: int) -> tuple[dict, dict]:
    """The small and the big case of ``graph``, timed in alternation (a shared machine).

    Each repetition runs a chunk of each size back to back, so both see the same load;
    the ratio reported is the median of the per-repetition ratios.
    """
    entries, timers = {}, {}
    for n in (s["small"], s["big"]):
        entry, work = _setup(graph, n, s["d"], s["m"])
        epochs = max(1, s["big"] // n // 8)  # about the same agent-steps per chunk
        first, timers[n] = timing.chunk_timer(work, epochs)
        entry.update(first_chunk_s=first, steps=epochs * work.steps_per_epoch, chunk_s=[])
        entries[n] = entry
    for _ in range(reps):
        for n, entry in entries.items():
            entry["chunk_s"].append(timers[n]())
    for n, entry in entries.items():
        entry["step_s"] = timing.median(entry["chunk_s"]) / entry["steps"]
        entry["agent_step_s"] = entry["step_s"] / n
        entry["peak_rss_bytes"] = _peak_rss_bytes()
    small, big = entries[s["small"]], entries[s["big"]]
    ratios = [
        (b / big["steps"] / s["big"]) / (a / small["steps"] / s["small"])
        for a, b in zip(small["chunk_s"], big["chunk_s"], strict=True)
    ]
    big["ratio_to_small"] = timing.median(ratios)
    return small, big


def _compile_s(ns: tuple[int, ...], reps: int) -> list[float]:
    """Fastest of ``reps`` compiles of a ring D-RR chunk (d = 10, m = 4) at each ``n``.

    The sizes alternate within each repetition, so a busy spell of the machine hits
    both alike.
    """
    best = [np.inf] * len(ns)
    for _ in range(reps):
        for i, n in enumerate(ns):
            data = workloads.logistic_data(n, 4, 10)
            work = workloads.logistic_workload("d_rr", data, lazy_metropolis(ring(n)))
            seconds = work.runner.compile_epochs(work.fresh_state(), work.data, _key(), 1)
            best[i] = min(best[i], seconds)
    return [float(b) for b in best]


def _huge(n: int, d: int, m: int) -> dict:
    """One epoch of D-RR on a ring of ``n`` agents: build, compile and run, timed apart."""
    entry, work = _setup("ring", n, d, m)
    state = work.fresh_state()
    entry["compile_s"] = work.runner.compile_epochs(state, work.data, _key(), 1)
    start = time.perf_counter()
    state, _ = work.runner.run_epochs(state, work.data, _key(), 0, 1)
    jax.block_until_ready(state)
    entry["epoch_s"] = time.perf_counter() - start
    entry["peak_rss_bytes"] = _peak_rss_bytes()
    return entry


def _key() -> jax.Array:
    return jax.random.key(0)


def halo_bytes(n: int, d: int) -> dict:
    """Bytes each of 8 devices sends per gossip of the relabelled RGG (run in a subprocess)."""
    from decentjax.core import mesh

    op = comm.gossip(lazy_metropolis(random_geometric(n)), order="rcm")
    agent_mesh = mesh.make_agent_mesh(n, 8)
    spec = jax.P(mesh.AGENT_AXIS)
    program = jax.jit(jax.shard_map(op.mix, mesh=agent_mesh, in_specs=spec, out_specs=spec))
    x = jax.ShapeDtypeStruct((n, d), np.float32, sharding=mesh.agent_sharding(agent_mesh))
    hlo = program.lower(x).compile().as_text()
    sent = sum(
        int(np.prod([int(s) for s in dims.split(",") if s])) * 4
        for dims in re.findall(r"= f32\[([\d,]*)\][^\n]*collective-permute\(", hlo)
    )
    block = n // 8
    return {
        "n_agents": n,
        "d": d,
        "path": op.path_on(8),
        "band": list(op.band),
        "halo_rows": sum(op.band),
        "hlo_permuted_bytes": sent,
        "all_gather_bytes": block * 7 * d * 4,
        "all_gather_in_hlo": "all-gather" in hlo,
        "describe": op.describe(8, d * 4),
    }


def _halo_subprocess(n: int, d: int) -> dict:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu")
    code = (
        "import json; from launch.benchmarks.graphs_at_scale import halo_bytes; "
        f"print(json.dumps(halo_bytes({n}, {d})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(settings: report.Settings) -> report.Result:
    """Measures every case; see the module docstring."""
    s = _sizes(settings.quick)
    result = report.Result("graphs_at_scale", TITLE)
    cases = {}
    for graph in GRAPHS:
        cases[(graph, s["small"])], cases[(graph, s["big"])] = _paired(graph, s, settings.reps)
        result.measurements += [cases[(graph, s["small"])], cases[(graph, s["big"])]]
    for graph in GRAPHS:
        big, small = cases[(graph, s["big"])], cases[(graph, s["small"])]
        result.rows.append(
            report.Row(
                f"{graph} n={s['big']:,}: build graph, W and operator (host)",
                big["build_s"],
                None,
                "s",
                big["build_s"],
                "< 30",
                note=big["describe"].split(": ", 1)[1].split(";")[0],
            )
        )
        result.rows.append(
            report.Row(
                f"{graph}: time per agent-step n={s['big']:,} / n={s['small']:,}",
                big["agent_step_s"],
                small["agent_step_s"],
                "s/agent-step",
                big["ratio_to_small"],
                "<= 2",
                note=f"{big['neighbour_slots']} neighbour slots at n={s['big']:,}"
                if graph == "rgg"
                else "",
            )
        )
    peak = max(c["peak_rss_bytes"] for c in cases.values())
    result.rows.append(
        report.Row(
            f"peak resident memory, n <= {s['big']:,}",
            None,
            None,
            "GB",
            peak / 1e9,
            "< 8",
            note="process max RSS (host and CPU device buffers)",
        )
    )
    huge = _huge(s["huge"], s["huge_d"], s["m"])
    result.measurements.append(huge)
    result.rows.append(
        report.Row(
            f"ring n={s['huge']:,}, d={s['huge_d']}: one epoch",
            huge["epoch_s"],
            None,
            "s",
            huge["epoch_s"],
            note=(
                f"build {huge['build_s']:.1f} s, compile {huge['compile_s']:.1f} s, "
                f"peak RSS {huge['peak_rss_bytes'] / 1e9:.1f} GB"
            ),
        )
    )
    lo, hi = _compile_s(s["compile_ns"], settings.reps)
    result.measurements.append(
        {"compile_ring_s": {str(k): v for k, v in zip(s["compile_ns"], (lo, hi), strict=True)}}
    )
    result.rows.append(
        report.Row(
            f"compile of a ring chunk n={s['compile_ns'][1]:,} / n={s['compile_ns'][0]:,}",
            hi,
            lo,
            "s/chunk",
            hi / lo,
            "<= 1.3",
        )
    )
    halo = _halo_subprocess(s["big"], s["d"])
    result.measurements.append(halo)
    bound = 2 * halo["halo_rows"] * s["d"] * 4
    result.rows.append(
        report.Row(
            f"rgg n={s['big']:,} on 8 devices: bytes per device per gossip, halo / all-gather",
            halo["hlo_permuted_bytes"],
            halo["all_gather_bytes"],
            "B",
            halo["hlo_permuted_bytes"] / halo["all_gather_bytes"],
            note=(
                f"{halo['halo_rows']} halo rows; bound 2 x rows x d x 4 = {bound} B "
                f"({'met' if halo['hlo_permuted_bytes'] <= bound else 'MISSED'}); "
                f"all-gather in program: {halo['all_gather_in_hlo']}"
            ),
        )
    )
    result.notes.append(
        f"d={s['d']}, m={s['m']}, batch 1, {settings.reps} reps, one CPU device (8 fake "
        "devices for the bytes); a shared machine: read ratios, not absolute times."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Time per agent-step against n for the ring and the random geometric graph."""
    fig, (ax,) = report.figure(ncols=1)
    for graph in GRAPHS:
        pts = sorted(
            (e["n_agents"], e["agent_step_s"])
            for e in result.measurements
            if e.get("graph") == graph and "agent_step_s" in e
        )
        ns, vals = zip(*pts, strict=True)
        ax.plot(ns, vals, "o-", label=graph)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents n")
    ax.set_ylabel("s per agent-step (D-RR)")
    ax.legend()
    return [report.save(fig, out_dir, "graphs_at_scale")]
