"""Comparison 2: D-RR and DSGD written the way the papers' NumPy code is, against decentjax.

Command::

  python -m decentjax.launch.benchmarks --only numpy_drr [--reps 5]

ℓ2-regularised logistic regression (λ = 0.2, d = 785: 784 features and a bias, unit-norm
rows, as in the D-RR MNIST experiment; synthetic values, since timings do not depend on
them), m = 16 samples per agent, batch 1, constant step 0.01, lazy Metropolis weights
(the D-RR authors' matrix) on the exponential graph and on the ring, n = 16, 64, 256,
1024 agents. The authors' dense ``W @ X`` costs the same on any graph; decentjax's gossip
costs one row per offset (3 on the ring, 2 log2 n + 1 on the exponential graph). Two
methods:

* D-RR: every agent visits its samples in a fresh permutation each epoch;
* DSGD: every agent samples uniformly with replacement.

Both are ``X <- W (X - alpha G)`` per inner step. The NumPy side is the authors' style:
stacked arrays ``X`` of shape ``(n, d)``, all agents' gradients in one vectorised
expression, a dense ``W @ X`` for the gossip, and per-epoch draws with NumPy's RNG
(timed with the epoch); float32 like decentjax (the authors' float64 would be slower
still). For n ≤ 64 a per-agent Python loop (the style of much research code) is timed as
well. decentjax runs the same method through ``core.loop.Runner`` (no-op evaluator).

Equal work is checked, not assumed: one epoch from the same permutations (the ones
decentjax drew on device) must give the same iterates in both, up to float32 rounding;
the largest difference is reported. Repetitions are interleaved (a decentjax chunk, then
the NumPy runs) and the ratio is the median of the paired ratios NumPy / decentjax time
per inner step, so load from elsewhere on a shared machine hits both sides alike;
targets: ≥ 10 at n = 256, growing with n (ratio at 1024 over ratio at 256 > 1).

``python -m decentjax.launch.bench_drr`` (the earlier, single-size script) now runs this.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from decentjax.launch.benchmarks import report, timing, workloads

TITLE = "Authors'-style NumPy (stacked arrays, dense W @ X) vs decentjax: D-RR / DSGD"
ALPHA, REG, SAMPLES = 0.01, 0.2, 16
GRAPHS = ("exponential", "ring")


def _grads(x: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """All agents' logistic-regression gradients at once (rows of ``a``: one sample each)."""
    s = 2.0 * y - 1.0
    z = -s * np.einsum("nd,nd->n", a, x)
    return (-s / (1.0 + np.exp(-z)))[:, None] * a + REG * x


def numpy_stacked(x, data, w, orders) -> np.ndarray:
    """Authors' style: ``orders`` ``(epochs, n, m)`` sample indices; returns the iterates."""
    xs, ys = data["x"], data["y"].astype(np.float32)
    rows = np.arange(xs.shape[0])
    for order in orders:
        for step in range(order.shape[1]):
            idx = order[:, step]
            x = w @ (x - ALPHA * _grads(x, xs[rows, idx], ys[rows, idx]))
    return x


def numpy_loop(x, data, w, orders) -> np.ndarray:
    """Per-agent Python loop for the gradients, then the dense gossip."""
    xs, ys = data["x"], data["y"].astype(np.float32)
    x = x.copy()
    for order in orders:
        for step in range(order.shape[1]):
            g = np.empty_like(x)
            for i in range(x.shape[0]):
                j = order[i, step]
                g[i] = _grads(x[i : i + 1], xs[i, j][None], ys[i, j][None])[0]
            x = w @ (x - ALPHA * g)
    return x


def _draw(method: str, rng: np.random.Generator, epochs: int, n: int, m: int) -> np.ndarray:
    if method == "d_rr":
        return np.stack([np.stack([rng.permutation(m) for _ in range(n)]) for _ in range(epochs)])
    return rng.integers(0, m, (epochs, n, m))


def _time_numpy(fn, method, x0, data, w, epochs: int, reps: int) -> list[float]:
    """Seconds per inner step, per repetition; the draws are part of the timed epoch."""
    n, m = data["y"].shape
    rng = np.random.default_rng(0)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(x0, data, w, _draw(method, rng, epochs, n, m))
        times.append((time.perf_counter() - start) / (epochs * m))
    return times


def _compare(settings, result, ratios, data, x0, w, w32, graph: str, method: str) -> None:
    """Times one (graph, method, n) in decentjax and NumPy; appends rows and measurements."""
    n, m = data["y"].shape
    work = workloads.logistic_workload(
        method, data, w, alpha=ALPHA, reg=REG, n_devices=settings.devices
    )
    epochs = 1 if settings.quick else max(2, 2**18 // (n * m))
    steps = epochs * work.steps_per_epoch
    first, one_chunk = timing.chunk_timer(work, epochs)
    # Equal work: one epoch from decentjax's own draws.
    order = workloads.epoch_indices(work)[:, :, 0]  # (n, steps) with batch 1.
    state, _ = work.runner.run_epochs(work.fresh_state(), work.data, jax.random.key(0), 0, 1)
    want = np.asarray(jax.device_get(state.params))
    np_epochs = 1 if settings.quick else max(1, 2**13 // (n * m))
    impls = [("numpy-stacked", numpy_stacked)]
    if n <= 64:
        impls.append(("numpy-loop", numpy_loop))
    diffs = {
        impl: float(np.max(np.abs(fn(x0, data, w32, order[None]) - want))) for impl, fn in impls
    }
    # Interleaved repetitions: a decentjax chunk, then each NumPy run; the ratio of every
    # pair, so a burst of load from elsewhere hits both sides of a ratio alike.
    ours_all, theirs = [], {impl: [] for impl, _ in impls}
    for _ in range(settings.reps):
        ours_all.append(one_chunk() / steps)
        for impl, fn in impls:
            theirs[impl] += _time_numpy(fn, method, x0, data, w32, np_epochs, 1)
    ours_step = timing.median(ours_all)
    ours = {"step_s": ours_step, "step_s_all": ours_all, "steps": steps}
    ours["compile_s"] = max(first - ours_step * steps, 0.0)
    entry = {"method": method, "graph": graph, "n_agents": n, "samples": m, "decentjax": ours}
    for impl, _ in impls:
        times = theirs[impl]
        step = timing.median(times)
        ratio = timing.median([t / o for t, o in zip(times, ours_all, strict=True)])
        entry[impl] = {
            "step_s": step,
            "step_s_all": times,
            "max_abs_diff": diffs[impl],
            "paired_ratio": ratio,
        }
        name = {"d_rr": "D-RR", "dsgd": "DSGD"}[method]
        target = ">= 10" if impl == "numpy-stacked" and n >= 256 else ""
        result.rows.append(
            report.Row(
                f"{name} {graph} n={n} vs {impl}",
                ours_step,
                step,
                "s/step",
                ratio,
                target,
                note=f"max |diff| {diffs[impl]:.1e}",
            )
        )
        if impl == "numpy-stacked":
            ratios[(graph, method, n)] = ratio
    result.measurements.append(entry)


def _sizes(quick: bool) -> list[int]:
    return [4, 8] if quick else [16, 64, 256, 1024]


def run(settings: report.Settings) -> report.Result:
    """Times D-RR and DSGD in NumPy and decentjax and checks they agree."""
    result = report.Result("numpy_drr", TITLE)
    m = 4 if settings.quick else SAMPLES
    ratios = {}
    for n in _sizes(settings.quick):
        data = workloads.logistic_data(n, m)
        x0 = np.zeros((n, data["x"].shape[-1]), np.float32)
        for graph in GRAPHS[:1] if settings.quick else GRAPHS:
            w = workloads.mixing_matrix(graph, n, lazy=True)
            w32 = w.astype(np.float32)
            for method in ("d_rr", "dsgd"):
                _compare(settings, result, ratios, data, x0, w, w32, graph, method)
    sizes = _sizes(settings.quick)
    lo, hi = sizes[-2], sizes[-1]
    for graph in GRAPHS[:1] if settings.quick else GRAPHS:
        for method in ("d_rr", "dsgd"):
            growth = ratios[(graph, method, hi)] / ratios[(graph, method, lo)]
            name = {"d_rr": "D-RR", "dsgd": "DSGD"}[method]
            result.rows.append(
                report.Row(
                    f"{name} {graph} ratio growth n={lo}->{hi}",
                    None,
                    None,
                    "x",
                    growth,
                    "> 1",
                    note=f"ratio at n={hi} / ratio at n={lo}",
                )
            )
    result.notes.append(
        f"d=785, m={m}, batch 1, lazy Metropolis exponential and ring graphs (NumPy's dense "
        "W @ X costs the same on both), float32 on both sides, "
        f"{settings.reps} reps; ratio = NumPy / decentjax time per inner step."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Time per inner step against n, decentjax and NumPy, one panel per method."""
    fig, axes = report.figure(ncols=2)
    for ax, method in zip(axes, ("d_rr", "dsgd"), strict=True):
        for graph in GRAPHS:
            entries = [
                e for e in result.measurements if e["method"] == method and e["graph"] == graph
            ]
            if not entries:
                continue
            ns = [e["n_agents"] for e in entries]
            ax.loglog(
                ns, [e["decentjax"]["step_s"] for e in entries], "o-", label=f"decentjax {graph}"
            )
            if graph == GRAPHS[0]:  # NumPy's dense W @ X costs the same on every graph.
                stacked = [e["numpy-stacked"]["step_s"] for e in entries]
                ax.loglog(ns, stacked, "s-", label="NumPy stacked, dense W")
                loop = [
                    (e["n_agents"], e["numpy-loop"]["step_s"]) for e in entries if "numpy-loop" in e
                ]
                if loop:
                    ax.loglog(*zip(*loop, strict=True), "^-", label="NumPy per-agent loop")
        ax.set_xlabel("agents n")
        ax.set_ylabel("s per inner step")
        ax.set_title({"d_rr": "D-RR", "dsgd": "DSGD"}[method] + ", logistic d=785")
        ax.legend()
    return [report.save(fig, out_dir, "numpy_drr")]
