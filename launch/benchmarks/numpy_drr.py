"""Comparison 2: D-RR and DSGD written the way the papers' NumPy code is, against decentjax.

Command::

  python -m launch.benchmarks --only numpy_drr [--reps 5]

ℓ2-regularised logistic regression (λ = 0.2, d = 785: 784 features and a bias, unit-norm
rows, as in the D-RR MNIST experiment; synthetic values, since timings do not depend on
them), m = 16 samples per agent, batch 1, constant step 0.01, lazy Metropolis exponential
graph (the D-RR authors' matrix), n = 16, 64, 256, 1024 agents. Two methods:

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
the largest difference is reported. Ratio = NumPy time / decentjax time per inner step;
targets: ≥ 10 at n = 256, growing with n (ratio at 1024 over ratio at 256 > 1).

``python -m launch.bench_drr`` (the earlier, single-size script) now runs this.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from launch.benchmarks import report, timing, workloads

TITLE = "Authors'-style NumPy (stacked arrays, dense W @ X) vs decentjax: D-RR / DSGD"
ALPHA, REG, SAMPLES = 0.01, 0.2, 16


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


def _sizes(quick: bool) -> list[int]:
    return [4, 8] if quick else [16, 64, 256, 1024]


def run(settings: report.Settings) -> report.Result:
    """Times D-RR and DSGD in NumPy and decentjax and checks they agree."""
    result = report.Result("numpy_drr", TITLE)
    m = 4 if settings.quick else SAMPLES
    ratios = {}
    for n in _sizes(settings.quick):
        data = workloads.logistic_data(n, m)
        w = workloads.mixing_matrix("exponential", n, lazy=True)
        w32 = w.astype(np.float32)
        x0 = np.zeros((n, data["x"].shape[-1]), np.float32)
        for method in ("d_rr", "dsgd"):
            work = workloads.logistic_workload(
                method, data, w, alpha=ALPHA, reg=REG, n_devices=settings.devices
            )
            epochs = 1 if settings.quick else max(2, 2**18 // (n * m))
            ours = timing.time_workload(work, num_epochs=epochs, reps=settings.reps)
            # Equal work: one epoch from decentjax's own draws.
            order = workloads.epoch_indices(work)[:, :, 0]  # (n, steps) with batch 1.
            state, _ = work.runner.run_epochs(
                work.fresh_state(), work.data, jax.random.key(0), 0, 1
            )
            want = np.asarray(jax.device_get(state.params))
            np_epochs = 1 if settings.quick else max(1, 2**13 // (n * m))
            entry = {"method": method, "n_agents": n, "samples": m, "decentjax": ours}
            impls = [("numpy-stacked", numpy_stacked)]
            if n <= 64:
                impls.append(("numpy-loop", numpy_loop))
            for impl, fn in impls:
                diff = float(np.max(np.abs(fn(x0, data, w32, order[None]) - want)))
                times = _time_numpy(fn, method, x0, data, w32, np_epochs, settings.reps)
                step = timing.median(times)
                entry[impl] = {"step_s": step, "step_s_all": times, "max_abs_diff": diff}
                ratio = step / ours["step_s"]
                name = {"d_rr": "D-RR", "dsgd": "DSGD"}[method]
                target = ">= 10" if impl == "numpy-stacked" and n >= 256 else ""
                result.rows.append(
                    report.Row(
                        f"{name} n={n} vs {impl}",
                        ours["step_s"],
                        step,
                        "s/step",
                        ratio,
                        target,
                        note=f"max |diff| {diff:.1e}",
                    )
                )
                if impl == "numpy-stacked":
                    ratios[(method, n)] = ratio
            result.measurements.append(entry)
    sizes = _sizes(settings.quick)
    for method in ("d_rr", "dsgd"):
        lo, hi = sizes[-2], sizes[-1]
        growth = ratios[(method, hi)] / ratios[(method, lo)]
        name = {"d_rr": "D-RR", "dsgd": "DSGD"}[method]
        result.rows.append(
            report.Row(
                f"{name} ratio growth n={lo}->{hi}",
                None,
                None,
                "x",
                growth,
                "> 1",
                note=f"ratio at n={hi} / ratio at n={lo}",
            )
        )
    result.notes.append(
        f"d=785, m={m}, batch 1, lazy Metropolis exponential graph, float32 on both sides, "
        f"{settings.reps} reps; ratio = NumPy / decentjax time per inner step."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Time per inner step against n, decentjax and NumPy, one panel per method."""
    fig, axes = report.figure(ncols=2)
    for ax, method in zip(axes, ("d_rr", "dsgd"), strict=True):
        entries = [e for e in result.measurements if e["method"] == method]
        ns = [e["n_agents"] for e in entries]
        ax.loglog(ns, [e["decentjax"]["step_s"] for e in entries], "o-", label="decentjax")
        ax.loglog(ns, [e["numpy-stacked"]["step_s"] for e in entries], "s-", label="NumPy stacked")
        loop = [(e["n_agents"], e["numpy-loop"]["step_s"]) for e in entries if "numpy-loop" in e]
        if loop:
            ax.loglog(*zip(*loop, strict=True), "^-", label="NumPy per-agent loop")
        ax.set_xlabel("agents n")
        ax.set_ylabel("s per inner step")
        ax.set_title({"d_rr": "D-RR", "dsgd": "DSGD"}[method] + ", logistic d=785")
        ax.legend()
    return [report.save(fig, out_dir, "numpy_drr")]
