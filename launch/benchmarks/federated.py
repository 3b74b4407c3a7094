"""Comparison 4: FedAvg rounds per second against pfl (PyTorch backend) and FedJAX.

Command (after ``bash launch/benchmarks/setup_peers.sh pfl fedjax``)::

  python -m decentjax.launch.benchmarks --only federated [--reps 5]

The same small CNN in all three (:func:`models.nets.cnn`: two 3x3 "SAME" convolutions with
16 and 32 channels, ReLU, 2x2 average pooling, a dense layer to 10 classes; 28x28x1
inputs), 16 clients with full participation, 5 local SGD steps (step 0.05) of batch 32
per client per round, the server model = the mean of the client models. decentjax runs
``algos.fedavg`` through ``core.loop.Runner`` (one epoch = one round, a chunk of rounds one
compiled program); pfl runs ``FederatedAveraging`` on its ``SimulatedBackend`` with a
PyTorch model (:mod:`launch.benchmarks.pfl_worker`); FedJAX runs
``algorithms.fed_avg.federated_averaging`` with a Haiku model
(:mod:`launch.benchmarks.fedjax_worker`). Each peer runs under its own venv's Python as a
subprocess printing JSON; pfl's PyTorch is run with 1 thread and with all cores and keeps
the faster. Ratio = peer time per round / decentjax time per round;
targets ≥ 5 against pfl and ≥ 10 against FedJAX.

A peer whose venv is absent or failed to install is reported with the reason
``setup_peers.sh`` recorded instead of a figure.
"""

from __future__ import annotations

from decentjax.launch.benchmarks import report, timing, workloads

TITLE = "FedAvg rounds/s on a small CNN vs pfl (PyTorch) and FedJAX"
PEERS = {"pfl": ("pfl_worker.py", ">= 5"), "fedjax": ("fedjax_worker.py", ">= 10")}


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(clients=4, local_steps=2, batch=4, image=(8, 8, 1), rounds=2)
    return dict(clients=16, local_steps=5, batch=32, image=(28, 28, 1), rounds=10)


def run(settings: report.Settings) -> report.Result:
    """Times FedAvg rounds in decentjax and in every installed peer."""
    s = _sizes(settings.quick)
    result = report.Result("federated", TITLE)
    work = workloads.cnn_fedavg_workload(
        s["clients"],
        local_steps=s["local_steps"],
        batch=s["batch"],
        image=s["image"],
        n_devices=settings.devices,
    )
    ours = timing.time_workload(work, num_epochs=s["rounds"], reps=settings.reps)
    round_s = ours["step_s"] * s["local_steps"]
    result.measurements.append(
        {"impl": "decentjax", "round_s": round_s, "rounds_per_s": 1.0 / round_s, **ours}
    )
    payload = dict(
        clients=s["clients"],
        local_steps=s["local_steps"],
        batch=s["batch"],
        image=list(s["image"]),
        lr=0.05,
        rounds=max(1, s["rounds"] // 2),
        reps=min(settings.reps, 3),
    )
    for name, (script, target) in PEERS.items():
        out, note, status = timing.run_round_peer(settings, name, script, payload)
        result.notes.append(f"{name} venv: {status}")
        peer = None if out is None else out["round_s"]
        if out is not None:
            result.measurements.append({"impl": name, "rounds_per_s": 1.0 / peer, **out})
        result.rows.append(
            report.Row(
                f"FedAvg vs {name}, {s['clients']} clients x {s['local_steps']} steps",
                round_s,
                peer,
                "s/round",
                None if peer is None else peer / round_s,
                target,
                note=note,
            )
        )
    result.notes.append(
        f"CNN on {s['image']} inputs, {s['clients']} clients, {s['local_steps']} local steps of "
        f"batch {s['batch']}, full participation, {settings.reps} reps; "
        "ratio = peer / decentjax time per round."
    )
    return result


def plot(result: report.Result, out_dir: str) -> list[str]:
    """Bars of rounds per second for every implementation that ran."""
    fig, (ax,) = report.figure(width=5.5)
    names = [e["impl"] for e in result.measurements]
    ax.bar(names, [e["rounds_per_s"] for e in result.measurements], color="tab:blue")
    ax.set_yscale("log")
    ax.set_ylabel("FedAvg rounds per second (median)")
    ax.set_title("FedAvg, small CNN")
    return [report.save(fig, out_dir, "federated")]
