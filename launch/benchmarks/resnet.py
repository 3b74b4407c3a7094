"""ResNet-20: a decentralized DSGD step of 16 agents against one centralized step on 512.

Command::

  python -m decentjax.launch.benchmarks --only resnet [--reps 3]

Issue 16's targets, on the ResNet-20 of :class:`models.ResNet` (He et al. 2016, CIFAR
form) wrapped by :func:`models.from_nnx` and run by :func:`algos.with_model`:

* **equal work**: one DSGD step of 16 agents, each with its own ResNet-20 and a batch of
  32 images 32x32x3, on the ring (Metropolis–Hastings weights), against one step of
  plain minibatch SGD on **one** ResNet-20 with the whole batch 16 x 32 = 512 (the same
  gradient FLOPs); for the GroupNorm network and for the BatchNorm one (per-agent running
  statistics as model state, kept local). Target ≤ 1.3x on a GPU; reported here for the
  CPU it runs on.

Both sides run the stock ``nnx.Conv`` network as written: on XLA:CPU every method
differentiates it with its convolutions as patches x matrix
(:func:`core.conv_lowering.lowered_on_cpu`, automatic), on a GPU natively. Native
convolutions inside the compiled run loop are not timed at full size on a CPU: marked
:func:`models.native_convs`, the centralized step alone took 194 s against 3.8 s
lowered (session 6's run of this benchmark); the 16-agent one (batched native
convolutions) was not timed. ``lowered=True`` / ``False`` of :func:`resnet_workload` force
either form.

Every case is a chunk of steps compiled as one ``jit(shard_map(scan))`` by
:class:`core.loop.Runner` with a no-op evaluator, from a fresh state each repetition;
repetitions are interleaved and ratios are medians of per-repetition ratios (see
:mod:`launch.benchmarks.equal_work`).
"""

from __future__ import annotations

from decentjax import algos
from decentjax.core import comm, sampling, weights
from decentjax.launch.benchmarks import equal_work, report, timing, workloads
from decentjax.models import ResNet, convs_as_matmuls, from_nnx, native_convs, objectives

TITLE = "ResNet-20 (stock nnx layers): DSGD step of 16 agents x 32 vs one centralized on 512"


def _sizes(quick: bool) -> dict:
    if quick:  # ResNet-8 on 8x8 images, 2 agents: plumbing only.
        return dict(n=2, batch=2, image=8, blocks=1, steps=1, epochs=1)
    return dict(n=16, batch=32, image=32, blocks=3, steps=1, epochs=1)


def resnet_workload(
    method: str,
    n: int,
    *,
    norm: str = "group",
    lowered: bool | None = None,
    batch: int = 32,
    image: int = 32,
    blocks: int = 3,
    steps_per_epoch: int = 2,
    n_devices: int = 1,
) -> workloads.Workload:
    """DSGD on the ring (``"dsgd"``) or plain SGD on the pooled batch (``"centralized"``).

    Args:
      method: ``"dsgd"`` or ``"centralized"`` (server-averaged gradients; ``n = 1`` is
        minibatch SGD on one model).
      n: number of agents.
      norm: ``"group"`` or ``"batch"`` (running statistics as per-agent model state).
      lowered: ``None``: the network as written (lowered automatically on XLA:CPU);
        ``True``: convolutions as patches x matrix everywhere
        (:func:`models.convs_as_matmuls`); ``False``: native (:func:`models.native_convs`).
      batch: images per agent per step.
      image: image side (3 channels).
      blocks: basic blocks per stage (3: ResNet-20).
      steps_per_epoch: steps in one chunk's epoch.
      n_devices: devices of the agent mesh.
    """
    model = from_nnx(lambda rngs: ResNet(10, blocks=blocks, norm=norm, rngs=rngs))
    task = model.objective(objectives.softmax_cross_entropy, num_classes=10)
    if lowered is not None:
        wrap = convs_as_matmuls if lowered else native_convs
        task = task._replace(value_and_state=wrap(task.value_and_state))
    samples = batch * steps_per_epoch
    data = workloads.classification_data(n, samples, (image, image, 3), 10)
    sampler = sampling.iid(samples, batch, steps_per_epoch)
    if method == "centralized":
        op = comm.gossip(weights.averaging(n), path="shift")
        algorithm = algos.with_model(algos.centralized, task, op, 0.05)
    elif method == "dsgd":
        op = comm.gossip(workloads.mixing_matrix("ring", n))
        algorithm = algos.with_model(algos.dsgd, task, op, 0.05)
    else:
        raise ValueError(f"unknown method {method!r}; valid: dsgd, centralized.")
    params0 = workloads._stacked_init(model, n)  # Variables(params, state), one start
    return workloads._build(algorithm, sampler, n, n_devices, data, params0, op)


# (label, row, target, method, agents, norm, lowered, reference label)
def _cases(n: int, batch: int, quick: bool) -> list[tuple]:
    pooled, agents = f"centralized 1 model, batch {n * batch}", f"DSGD ring n={n}x{batch}"
    cases = [
        ("limit gn", f"{pooled}, GroupNorm", "", "centralized", 1, "group", None, None),
        ("dsgd gn", f"{agents}, GroupNorm (GPU target <= 1.3x)", "", "dsgd", n, "group", None,
         "limit gn"),
        ("limit bn", f"{pooled}, BatchNorm", "", "centralized", 1, "batch", None, None),
        ("dsgd bn", f"{agents}, BatchNorm (local statistics; GPU target <= 1.3x)", "", "dsgd", n,
         "batch", None, "limit bn"),
    ]  # fmt: skip
    if quick:  # Two compilations: the BatchNorm state and a ratio.
        return [case for case in cases if case[0] in ("limit bn", "dsgd bn")]
    return cases


def run(settings: report.Settings) -> report.Result:
    """Times every case (module docstring); ratios are paired per repetition."""
    s = _sizes(settings.quick)
    n, batch = s["n"], s["batch"]
    result = report.Result("resnet", TITLE)
    cases = _cases(n, batch, settings.quick)
    timers: dict[tuple, tuple] = {}
    for _, _, _, method, agents, norm, lowered, _ in cases:
        key = (method, agents, norm, lowered)
        if key not in timers:  # cases with the same key share their compiled chunks
            work = resnet_workload(
                method, agents, norm=norm, lowered=lowered, batch=batch * (n // agents),
                image=s["image"], blocks=s["blocks"], steps_per_epoch=s["steps"],
                n_devices=settings.devices,
            )  # fmt: skip
            first, one_chunk = timing.chunk_timer(work, s["epochs"])
            timers[key] = (first, one_chunk, s["epochs"] * work.steps_per_epoch, [])
    for _ in range(settings.reps):  # Interleaved: every case once per round.
        for _, one_chunk, steps, times in timers.values():
            times.append(one_chunk() / steps)
    by_label = {}
    for label, row, target, method, agents, norm, lowered, ref in cases:
        first, _, steps, times = timers[(method, agents, norm, lowered)]
        entry = {
            "case": label, "method": method, "n_agents": agents, "norm": norm,
            "lowered": lowered, "steps": steps, "step_s_all": list(times),
            "step_s": timing.median(times),
        }  # fmt: skip
        entry["compile_s"] = max(first - entry["step_s"] * steps, 0.0)
        by_label[label] = entry
        result.measurements.append(entry)
        if ref is None:
            result.rows.append(report.Row(row, entry["step_s"], None, "s/step", None, "", "limit"))
            continue
        base = by_label[ref]
        pairs = [t / b for t, b in zip(times, base["step_s_all"], strict=True)]
        entry["paired_ratio"] = timing.median(pairs)
        result.rows.append(
            report.Row(
                row, entry["step_s"], base["step_s"], "s/step", entry["paired_ratio"], target,
                f"vs {ref}",
            )
        )  # fmt: skip
    result.notes.append(
        f"ResNet-{6 * s['blocks'] + 2}, {s['image']}x{s['image']}x3 images, n={n} agents x "
        f"batch {batch}, {s['steps']} steps per timed chunk, {settings.reps} reps; ratio = "
        "case / reference (lower is better); timings on a shared machine."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Bar chart of the time per step of every case."""
    return equal_work.step_bars(result, out_dir, "resnet", "ResNet: decentralized vs centralized")
